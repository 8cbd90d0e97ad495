"""Run directories: written as a whole, checked when read.

A run directory holds the files of one run (``config.json``, ``history.npz``, figures,
a report) and ``manifest.json``, written last, which lists every file with its size
and SHA-256 and the digest of the run's config (:func:`config_digest`).

Guarantees
----------
* **Written as a whole.** :func:`write_run_dir` writes every file into a fresh
  temporary directory beside the target (``.<name>.tmp-<pid>-<token>-<host>``),
  then the manifest, fsyncs them and swaps the directory in: on Linux with one atomic
  ``renameat2(RENAME_EXCHANGE)``; elsewhere (or on a file system without it) by
  renaming the old directory aside and the new one in. A reader sees the old run or
  the new one, never a mix, and no file of the old run that the new one does not
  write (an old ``report.md``) survives.
* **Nothing half-written stays.** On an exception (``KeyboardInterrupt`` included)
  the temporary directory is removed and the old run is left as it was. A writer
  killed outright (``SIGKILL``, power loss) leaves its temporary directory; the next
  write into the same parent folder removes every temporary whose writer process is
  gone, and a run caught between the two renames of the fallback swap is restored
  (to the new run if it was complete, else to the old one) by the next write or read.
* **Added to as a whole.** :func:`add_to_run_dir` adds or replaces files of an
  existing run (the report and figures, written after the run): the new directory is
  built from hard links to the old files, the new files and a new manifest, and
  swapped in the same way.
* **Checked on read.** :func:`read_manifest`, :func:`verify_run_dir` and
  :func:`read_run_dir` raise :class:`RunDirError` (a ``ValueError``) with one line
  naming the file: a missing manifest (:class:`MissingManifestError`) or file, an
  empty, truncated, longer or altered (SHA-256) file, a malformed manifest, a file
  that is not what its name says (``.npz``, ``.png``, ``.json``). :func:`read_run_dir`
  checks the bytes it returns against the manifest it read from the same directory,
  so they belong to one run even while another process replaces it.
* **One owner.** A write replaces the whole directory; it refuses a directory that is
  not a run directory (not empty, with neither ``manifest.json`` nor ``config.json``).
  Writers in one parent folder are serialized around the swap (``flock`` where the
  platform has it); the last swap wins.

Files are plain names inside the directory (no sub-folders). Temporaries are
recognized by their writer's pid and host; those of another host are removed once a
day old.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import BinaryIO, Union

MANIFEST = "manifest.json"
FORMAT = "signgd-transformer-sim run directory"
VERSION = 1
STALE_OTHER_HOST = 24 * 3600.0
"""Seconds after which a temporary of another host's writer counts as abandoned."""

FileSource = Union[bytes, bytearray, memoryview, str, Callable[[BinaryIO], None]]
"""What a file is written from: its bytes, its text (UTF-8), or ``writer(binary_file)``
(e.g. ``lambda fh: np.savez_compressed(fh, **arrays)``)."""

_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
_SIBLING = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)-(?P<token>[0-9a-f]+)"
                      r"-(?P<host>[0-9a-f]{8})$")
_CHUNK = 1 << 20
_MAGIC = {".npz": ((b"PK\x03\x04", b"PK\x05\x06"), "an .npz (zip) file"),
          ".png": ((b"\x89PNG\r\n\x1a\n",), "a PNG file")}


class RunDirError(ValueError):
    """A run directory that cannot be read as one run (one line naming the file)."""


class MissingManifestError(RunDirError):
    """A directory without ``manifest.json``: not written by :func:`write_run_dir`
    (an older version's run, or a write that never finished)."""


@dataclasses.dataclass(frozen=True)
class FileEntry:
    """Size and SHA-256 of one file of a run directory."""

    size: int
    sha256: str


@dataclasses.dataclass(frozen=True)
class Manifest:
    """What ``manifest.json`` says: every file and the digest of the run's config."""

    files: dict[str, FileEntry]
    config_digest: str | None

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "version": VERSION, "config_digest": self.config_digest,
                           "files": {name: {"bytes": e.size, "sha256": e.sha256}
                                     for name, e in sorted(self.files.items())}},
                          indent=2, sort_keys=True) + "\n"


def config_digest(config) -> str:
    """SHA-256 of a config's canonical JSON (sorted keys, no spaces): the same for a
    :class:`~simulator.config.SimulationConfig` and for the dict its ``config.json``
    holds."""
    data = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------

def write_run_dir(path: str | os.PathLike, files: Mapping[str, FileSource], *,
                  config=None) -> Manifest:
    """Write a run directory as a whole, replacing whatever run ``path`` held.

    Parameters
    ----------
    path : path of the run directory (created with its parents if missing).
    files : file name -> :data:`FileSource`, written in this order.
    config : SimulationConfig or dict, optional
        Whose :func:`config_digest` the manifest records; default: the content of
        ``files["config.json"]``, if it is a JSON object.

    Returns the :class:`Manifest` written. Raises :class:`RunDirError` if ``path`` is a
    file or a directory that is not a run directory; on any exception nothing of the
    new run remains and the old run is untouched.
    """
    path = _target(path)
    for name in files:
        _check_name(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    _cleanup(path.parent)
    _check_replaceable(path)
    token = secrets.token_hex(4)
    tmp = _sibling(path, "tmp", token)
    os.mkdir(tmp)
    try:
        entries = _write_files(tmp, files)
        digest = config_digest(config) if config is not None else _digest_of_file(tmp / "config.json")
        manifest = Manifest(entries, digest)
        _write_manifest(tmp, manifest)
        with _locked(path.parent):
            _check_replaceable(path)
            _swap_in(tmp, path, token)
    except BaseException:
        _remove(tmp)
        raise
    return manifest


def add_to_run_dir(path: str | os.PathLike, files: Mapping[str, FileSource], *,
                   expect_config_digest: str | None = None) -> Manifest:
    """Add files to (or replace files of) the run in ``path``, as a whole.

    The other files of the run are kept (hard links, or copies where the file system
    has none); files the manifest does not list are dropped. With
    ``expect_config_digest``, refuses (:class:`RunDirError`) when the directory now
    holds another run than the caller's. Returns the new :class:`Manifest`.
    """
    path = _target(path)
    for name in files:
        _check_name(name)
    _cleanup(path.parent)
    read_manifest(path)                                   # fail early: not a run
    token = secrets.token_hex(4)
    tmp = _sibling(path, "tmp", token)
    os.mkdir(tmp)
    try:
        entries = _write_files(tmp, files)
        with _locked(path.parent):
            current = _manifest_at(path, recover=False)
            if expect_config_digest is not None and current.config_digest != expect_config_digest:
                raise RunDirError(f"{path} now holds another run (config digest "
                                  f"{str(current.config_digest)[:12]}, expected {expect_config_digest[:12]})")
            for name, entry in current.files.items():
                if name in entries:
                    continue
                _link_or_copy(path / name, tmp / name)
                entries[name] = entry
            _write_manifest(tmp, Manifest(entries, current.config_digest))
            _swap_in(tmp, path, token)
    except BaseException:
        _remove(tmp)
        raise
    return Manifest(entries, current.config_digest)


def _target(path) -> Path:
    path = Path(os.path.abspath(path))
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    if not path.name:
        raise ValueError(f"run directory path {str(path)!r} has no name")
    return path


def _check_name(name) -> None:
    ok = (isinstance(name, str) and name not in ("", ".", "..", MANIFEST)
          and not name.startswith(".") and not any(c in name for c in "/\\\0") and len(name) <= 200)
    if not ok:
        raise ValueError(f"a run directory file must have a plain file name, got {name!r}")


def _check_replaceable(path: Path) -> None:
    if not os.path.lexists(path):
        return
    if not path.is_dir():
        raise RunDirError(f"{path} exists and is not a directory")
    names = os.listdir(path)
    if names and MANIFEST not in names and "config.json" not in names:
        raise RunDirError(f"{path} is not a run directory (no {MANIFEST} or config.json); "
                          "refusing to replace it")


def _sibling(path: Path, kind: str, token: str) -> Path:
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}-{token}-{_HOST}")


def _write_files(folder: Path, files: Mapping[str, FileSource]) -> dict[str, FileEntry]:
    entries = {}
    for name, source in files.items():
        target = folder / name
        with open(target, "xb") as fh:
            if callable(source):
                source(fh)
            else:
                fh.write(source.encode("utf-8") if isinstance(source, str) else bytes(source))
            fh.flush()
            os.fsync(fh.fileno())
        entries[name] = _entry_of(target)                  # read back: writers may seek
    return entries


def _entry_of(path: Path) -> FileEntry:
    sha, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            sha.update(chunk)
            size += len(chunk)
    return FileEntry(size, sha.hexdigest())


def _digest_of_file(path: Path) -> str | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return config_digest(data) if isinstance(data, dict) else None


def _write_manifest(folder: Path, manifest: Manifest) -> None:
    with open(folder / MANIFEST, "x", encoding="utf-8") as fh:
        fh.write(manifest.to_json())
        fh.flush()
        os.fsync(fh.fileno())
    _fsync_dir(folder)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except FileNotFoundError:
        raise RunDirError(f"{src} is missing (listed in {MANIFEST})") from None
    except OSError:                                       # no hard links here
        shutil.copyfile(src, dst)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:                                       # Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --- the swap ---

def _find_renameat2():
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError, TypeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_renameat2 = _find_renameat2()
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def _exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two directories; ``False`` where the platform cannot."""
    if _renameat2 is None:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
        return False
    raise OSError(err, f"cannot swap {a} and {b}: {os.strerror(err)}")


def _swap_in(tmp: Path, path: Path, token: str) -> None:
    """Put the complete directory ``tmp`` at ``path``; the old run is removed."""
    if not os.path.lexists(path):
        os.rename(tmp, path)
    elif _exchange(tmp, path):                            # tmp now holds the old run
        _fsync_dir(path.parent)
        _remove(tmp)
        return
    else:
        old = _sibling(path, "old", token)
        os.rename(path, old)
        try:
            os.rename(tmp, path)
        except BaseException:
            os.rename(old, path)
            raise
        _fsync_dir(path.parent)
        _remove(old)
        return
    _fsync_dir(path.parent)


def _remove(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def _locked(folder: Path):
    """Hold an exclusive ``flock`` on ``folder`` (a no-op where there is none)."""
    try:
        import fcntl  # noqa: PLC0415 (POSIX only)
    except ImportError:
        yield
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# --- temporaries of killed writers ---

def _process_start(pid: int) -> float | None:
    """Start time (epoch seconds) of process ``pid`` where ``/proc`` tells it."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat", encoding="ascii") as fh:
            boot = next(int(line.split()[1]) for line in fh if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _writer_gone(match: re.Match, mtime: float) -> bool:
    """Whether the process that made a temporary (last changed at ``mtime``) no
    longer runs."""
    if match["host"] != _HOST:
        return time.time() - mtime > STALE_OTHER_HOST
    pid = int(match["pid"])
    if pid != os.getpid():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except (PermissionError, OSError):
            pass
    started = _process_start(pid)                         # a reused pid started later
    return started is not None and started > mtime + 1.0


def _stale_siblings(parent: Path) -> list[tuple[Path, re.Match]]:
    out = []
    try:
        names = os.listdir(parent)
    except OSError:
        return out
    for name in names:
        match = _SIBLING.match(name)
        if match is None:
            continue
        p = parent / name
        try:
            st = p.lstat()
        except OSError:
            continue
        if _writer_gone(match, max(st.st_mtime, st.st_ctime)):   # ctime: renamed
            out.append((p, match))
    return out


def _complete(folder: Path) -> bool:
    """Whether a directory holds a manifest and every file it lists, at its size."""
    try:
        manifest = _parse_manifest(folder, (folder / MANIFEST).read_bytes())
        return all((folder / n).stat().st_size == e.size for n, e in manifest.files.items())
    except (OSError, RunDirError):
        return False


def _cleanup(parent: Path) -> None:
    """Remove the temporaries of writers that are gone; first restore a run left
    between the two renames of a fallback swap (its ``old`` temporary)."""
    stale = _stale_siblings(parent)
    if not stale:
        return
    with _locked(parent):
        for p, m in stale:
            if m["kind"] != "old" or not p.exists():
                continue
            target = parent / m["name"]
            if not os.path.lexists(target):
                new = target.with_name(f".{m['name']}.tmp-{m['pid']}-{m['token']}-{m['host']}")
                with contextlib.suppress(OSError):
                    os.rename(new if _complete(new) else p, target)
                    _fsync_dir(parent)
        for p, _ in stale:
            if os.path.lexists(p):
                _remove(p)


def _swapping(path: Path) -> bool:
    """Whether a writer has moved the run at ``path`` aside and not yet put the new one in."""
    prefix = f".{path.name}.old-"
    try:
        return any(n.startswith(prefix) and _SIBLING.match(n) for n in os.listdir(path.parent))
    except OSError:
        return False


def _recover(path: Path) -> None:
    """A reader's part of :func:`_cleanup`: restore ``path`` if a killed swap left it
    missing."""
    if not os.path.lexists(path) and any(
            m["name"] == path.name and m["kind"] == "old" for _, m in _stale_siblings(path.parent)):
        _cleanup(path.parent)


# ---------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------

def _parse_manifest(where: Path, raw: bytes) -> Manifest:
    label = f"{where}/{MANIFEST}"
    if not raw:
        raise RunDirError(f"{label} is empty")
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise RunDirError(f"{label} is not UTF-8 text") from None
    except (ValueError, RecursionError) as exc:
        raise RunDirError(f"{label} is not valid JSON: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise RunDirError(f"{label} is not a run manifest (no \"format\": \"{FORMAT}\")")
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise RunDirError(f"{label} is malformed: version must be a positive integer")
    if version > VERSION:
        raise RunDirError(f"{label} has version {version}; this simulator reads version {VERSION}")
    digest, listed = data.get("config_digest"), data.get("files")
    if digest is not None and not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
        raise RunDirError(f"{label} is malformed: config_digest must be 64 hex digits or null")
    if not isinstance(listed, dict):
        raise RunDirError(f"{label} is malformed: files must be an object of name: entry")
    files = {}
    for name, entry in listed.items():
        try:
            _check_name(name)
        except ValueError:
            raise RunDirError(f"{label} is malformed: {name!r} is not a plain file name") from None
        size = entry.get("bytes") if isinstance(entry, dict) else None
        sha = entry.get("sha256") if isinstance(entry, dict) else None
        if (not isinstance(size, int) or isinstance(size, bool) or size < 0
                or not (isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha))):
            raise RunDirError(f"{label} is malformed: the entry of {name} needs bytes (an integer "
                              ">= 0) and sha256 (64 hex digits)")
        files[name] = FileEntry(size, sha)
    return Manifest(files, digest)


class _Dir:
    """A directory opened once: every file is read from the same directory, even if
    ``path`` is swapped meanwhile (where the platform has ``dir_fd``)."""

    def __init__(self, path: Path):
        self.path = path
        self.fd = None
        if os.open in os.supports_dir_fd:
            try:
                self.fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            except NotADirectoryError:
                raise RunDirError(f"{path} is not a run directory: it is not a directory") from None
        elif not os.path.isdir(path):
            raise FileNotFoundError(path)

    def open(self, name: str) -> BinaryIO:
        if self.fd is None:
            return open(self.path / name, "rb")
        return open(name, "rb", opener=lambda n, flags: os.open(n, flags, dir_fd=self.fd))

    def replaced(self) -> bool:
        """Whether ``path`` is no longer the directory opened."""
        if self.fd is None:
            return False
        try:
            now, then = os.stat(self.path), os.fstat(self.fd)
        except OSError:
            return True
        return (now.st_ino, now.st_dev) != (then.st_ino, then.st_dev)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)


def _open_dir(path: str | os.PathLike, recover: bool = True) -> _Dir:
    path = Path(os.path.abspath(path))
    if recover:
        _recover(path)
    for _ in range(400):
        try:
            if not os.path.isdir(path) and os.path.lexists(path):
                raise RunDirError(f"{path} is not a run directory: it is not a directory")
            return _Dir(path)
        except FileNotFoundError:
            if not (recover and _swapping(path)):      # a live writer between its renames: wait
                break
            time.sleep(0.005)
    raise RunDirError(f"{path} is not a run directory: it does not exist")


def _manifest_of(d: _Dir) -> Manifest:
    try:
        with d.open(MANIFEST) as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise MissingManifestError(f"{d.path} is not a complete run directory: {MANIFEST} is missing "
                                   "(written by an older version, or the write never finished)") from None
    except OSError as exc:
        raise RunDirError(f"cannot read {d.path}/{MANIFEST}: {exc.strerror}") from None
    return _parse_manifest(d.path, raw)


def _check_file(d: _Dir, name: str, entry: FileEntry, keep: bool) -> bytes | None:
    """Read one listed file and check it against its entry (one-line errors)."""
    label = f"{d.path}/{name}"
    try:
        fh = d.open(name)
    except FileNotFoundError:
        raise RunDirError(f"{label} is missing (listed in {MANIFEST})") from None
    except IsADirectoryError:
        raise RunDirError(f"{label} is not a file") from None
    except OSError as exc:
        raise RunDirError(f"cannot read {label}: {exc.strerror}") from None
    with fh:
        size = os.fstat(fh.fileno()).st_size
        if size != entry.size:
            if size == 0:
                raise RunDirError(f"{label} is empty ({MANIFEST} lists {entry.size} bytes)")
            if size < entry.size:
                raise RunDirError(f"{label} is truncated: {size} of {entry.size} bytes")
            raise RunDirError(f"{label} has {size} bytes; {MANIFEST} lists {entry.size}")
        sha, parts, first = hashlib.sha256(), [], True
        while chunk := fh.read(_CHUNK):
            if first:
                _check_format(label, name, chunk, entry.size)
                first = False
            sha.update(chunk)
            if keep:
                parts.append(chunk)
        if first:
            _check_format(label, name, b"", entry.size)
    if sha.hexdigest() != entry.sha256:
        raise RunDirError(f"{label} is corrupt: its SHA-256 differs from {MANIFEST}")
    return b"".join(parts) if keep else None


def _check_format(label: str, name: str, head: bytes, size: int) -> None:
    ext = os.path.splitext(name)[1].lower()
    if ext in _MAGIC:
        magics, what = _MAGIC[ext]
        if not head.startswith(magics):
            raise RunDirError(f"{label} is not {what} (it starts with {head[:8]!r})")
    elif ext == ".json" and size <= _CHUNK:
        try:
            json.loads(head.decode("utf-8"))
        except (ValueError, RecursionError):
            raise RunDirError(f"{label} is not a JSON file") from None


def read_manifest(path: str | os.PathLike) -> Manifest:
    """The manifest of the run in ``path`` (its files are not read)."""
    return _manifest_at(path, recover=True)


def _manifest_at(path, recover: bool) -> Manifest:
    d = _open_dir(path, recover)
    try:
        return _manifest_of(d)
    finally:
        d.close()


def verify_run_dir(path: str | os.PathLike, names=None) -> Manifest:
    """Check every file the manifest lists (or only ``names``) against it: present,
    of its size, of its format, of its SHA-256. Returns the manifest; raises
    :class:`RunDirError` (one line naming the file) on the first problem."""
    return _read(path, names, keep=False)[0]


def read_run_dir(path: str | os.PathLike, names=None) -> tuple[Manifest, dict[str, bytes]]:
    """The manifest and the checked bytes of every listed file (or only ``names``),
    all of one run: if ``path`` is swapped while being read, it is read again."""
    return _read(path, names, keep=True)


def _read(path, names, keep: bool):
    attempts = 5
    for attempt in range(attempts):
        d = _open_dir(path)
        try:
            manifest = _manifest_of(d)
            wanted = list(manifest.files) if names is None else list(names)
            for name in wanted:
                if name not in manifest.files:
                    raise RunDirError(f"{d.path}: {name} is not in {MANIFEST}")
            out = {name: _check_file(d, name, manifest.files[name], keep) for name in wanted}
            return manifest, (out if keep else {})
        except RunDirError:
            if attempt < attempts - 1 and d.replaced():      # swapped while read: again
                continue
            raise
        finally:
            d.close()
    raise AssertionError("unreachable")  # pragma: no cover
