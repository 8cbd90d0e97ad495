"""Progress for long work on stderr, with rate and ETA.

On a terminal: one self-overwriting line (``\\r`` updates), redrawn at most every
``interval`` seconds. Elsewhere (a log file, a pipe, a CI log): no ``\\r`` at all, but
a plain line at most every ``log_interval`` seconds and one when the work is done.

Silent for work that finishes within ``delay`` seconds, so short runs and tests
print nothing.
"""

from __future__ import annotations

import sys
import time


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):   # no isatty, or a closed stream
        return False


class Progress:
    """``Progress(total, label)``; call ``update(done)`` often, ``close()`` at the end.

    ``terminal`` (default: ``stream.isatty()``) chooses between the redrawn line and
    plain lines every ``log_interval`` seconds.
    """

    def __init__(self, total: int, label: str = "", *, enabled: bool = True,
                 delay: float = 2.0, interval: float = 0.5, log_interval: float = 30.0,
                 stream=None, terminal: bool | None = None):
        self.total, self.label, self.enabled = max(int(total), 1), label, enabled
        self.delay = delay
        self.stream = stream if stream is not None else sys.stderr
        self.terminal = _is_terminal(self.stream) if terminal is None else terminal
        self.interval = interval if self.terminal else log_interval
        self.start = time.perf_counter()
        self._last = -float("inf")
        self._shown = False

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self.start < self.delay or now - self._last < self.interval:
            return
        self._last = now
        self._shown = True
        elapsed = now - self.start
        eta = elapsed * (self.total - done) / done if done else float("nan")
        text = (f"{self.label} {done}/{self.total} ({100.0 * done / self.total:5.1f}%) "
                f"elapsed {elapsed:6.1f}s  ETA {eta:6.1f}s")
        self.stream.write(f"\r{text} " if self.terminal else f"{text}\n")
        self.stream.flush()

    def close(self) -> None:
        if self._shown:
            elapsed = time.perf_counter() - self.start
            text = f"{self.label} {self.total}/{self.total} (100.0%) done in {elapsed:.1f}s"
            self.stream.write(f"\r{text}{' ' * 20}\n" if self.terminal else f"{text}\n")
            self.stream.flush()
