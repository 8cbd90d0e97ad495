"""Atomic file writing: a reader never sees a half-written result.

Each writer writes to a temporary file in the destination folder and renames it
into place with ``os.replace`` (atomic on POSIX and Windows).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Callable, IO


_UMASK = os.umask(0)  # read the process umask once (os.umask can only read by setting)
os.umask(_UMASK)


@contextlib.contextmanager
def _atomic_target(path: str | os.PathLike, mode: str) -> "IO":
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp",
                               dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with _atomic_target(path, "w") as fh:
        fh.write(text)


def atomic_write_with(path: str | os.PathLike, writer: Callable[[IO[bytes]], None]) -> None:
    """Call ``writer(binary_file)`` and move the result to ``path`` atomically
    (e.g. ``np.savez_compressed`` or ``Figure.savefig``)."""
    with _atomic_target(path, "wb") as fh:
        writer(fh)


def atomic_write_path(path: str | os.PathLike, writer: Callable[[str], None]) -> None:
    """Call ``writer(temporary_path)`` and move that file to ``path`` atomically, for
    writers that need a file name rather than a stream (HDF5 reads back while it
    writes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp",
                               dir=path.parent)
    os.close(fd)
    try:
        writer(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of atomic writes into ``folder`` whose writer process
    is gone (killed before it could clean up): ``.<name>.<pid>.<random>.tmp`` with no
    live process ``pid`` on this machine. Returns the removed paths."""
    import re

    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for path in folder.glob(".*.tmp"):
        m = re.fullmatch(r"\..+\.(\d+)\.[^.]+\.tmp", path.name)
        if m is None or _alive(int(m.group(1))):
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
