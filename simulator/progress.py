"""Progress for long work: one self-overwriting line on stderr with rate and ETA.

Silent for work that finishes within ``delay`` seconds, so short runs and tests
print nothing.
"""

from __future__ import annotations

import sys
import time


class Progress:
    """``Progress(total, label)``; call ``update(done)`` often, ``close()`` at the end."""

    def __init__(self, total: int, label: str = "", *, enabled: bool = True,
                 delay: float = 2.0, interval: float = 0.5, stream=None):
        self.total, self.label, self.enabled = max(int(total), 1), label, enabled
        self.delay, self.interval = delay, interval
        self.stream = stream if stream is not None else sys.stderr
        self.start = time.perf_counter()
        self._last = self.start
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
        self.stream.write(f"\r{self.label} {done}/{self.total} "
                          f"({100.0 * done / self.total:5.1f}%) "
                          f"elapsed {elapsed:6.1f}s  ETA {eta:6.1f}s ")
        self.stream.flush()

    def close(self) -> None:
        if self._shown:
            elapsed = time.perf_counter() - self.start
            self.stream.write(f"\r{self.label} {self.total}/{self.total} (100.0%) "
                              f"done in {elapsed:.1f}s{' ' * 20}\n")
            self.stream.flush()
