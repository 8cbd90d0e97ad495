"""Fault injection (issue 12): writers killed at every step and at random moments,
corrupted run directories, and absurd values for every config field.

A run directory must read as the old run or the new one, never a mix; every bad
file or value must give one line naming it (``RunDirError``, ``ConfigError``, exit 2).
"""

import io
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulator import rundir
from simulator.config import (COORDINATES, ENGINES, NOISE_KINDS, OPTIMIZERS, REDUCED_INITS,
                              SIGNAL_POSITIONS, ConfigError, SimulationConfig)
from simulator.memory import check_memory, estimated_bytes
from simulator.progress import Progress
from simulator.rundir import (MissingManifestError, RunDirError, add_to_run_dir, read_manifest,
                              read_run_dir, verify_run_dir, write_run_dir)

ROOT = Path(__file__).resolve().parents[1]
needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

# ---------------------------------------------------------------------------
# runs of known content: version k of a run directory
# ---------------------------------------------------------------------------

_HOOK = [None]     # called between the chunks a file writer writes (set in a forked child)


def _npz_bytes(k: int) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, step=np.arange(50), x=np.full((40, 40), float(k)))
    return buf.getvalue()


def _chunked(data: bytes):
    def write(fh):
        for i in range(0, len(data), 4096):
            if _HOOK[0] is not None:
                _HOOK[0]()
            fh.write(data[i:i + 4096])
    return write


def version_files(k: int) -> dict[str, bytes]:
    """Version ``k`` of a run: odd versions have a report, even ones do not."""
    files = {"config.json": json.dumps({"version": k}).encode(), "history.npz": _npz_bytes(k)}
    if k % 2:
        files["report.md"] = f"# report of version {k}\n".encode() * 50
    return files


def written(k: int) -> dict:
    return {name: _chunked(data) for name, data in version_files(k).items()}


def run_version(path: Path, *, listing: bool = True) -> int:
    """The version a run directory holds, checking that every file belongs to it
    and (``listing``, when no writer runs) that no other file is there."""
    manifest, data = read_run_dir(path)
    k = json.loads(data["config.json"])["version"]
    assert data == version_files(k), f"files of two runs mixed in {path}"
    if listing:
        assert sorted(os.listdir(path)) == sorted([*version_files(k), rundir.MANIFEST])
    return k


def temporaries(parent: Path) -> list[str]:
    return sorted(n for n in os.listdir(parent) if n.startswith("."))


# ---------------------------------------------------------------------------
# written as a whole
# ---------------------------------------------------------------------------

def test_rewrite_leaves_no_file_of_the_earlier_run(tmp_path):
    target = tmp_path / "run"
    write_run_dir(target, written(1))
    assert run_version(target) == 1 and (target / "report.md").exists()
    write_run_dir(target, written(2))
    assert run_version(target) == 2 and not (target / "report.md").exists()
    assert temporaries(tmp_path) == []


def test_rewrite_of_a_run_from_before_manifests(tmp_path):
    target = tmp_path / "run"
    target.mkdir()
    for name in ("config.json", "history.npz", "report.md", "stages.png"):
        (target / name).write_bytes(b"old")
    write_run_dir(target, written(2))
    assert run_version(target) == 2


def test_manifest_records_sizes_hashes_and_the_config_digest(tmp_path):
    cfg = SimulationConfig(n=3)
    manifest = write_run_dir(tmp_path / "run", {"config.json": cfg.to_json()}, config=None)
    assert manifest.config_digest == rundir.config_digest(cfg) == rundir.config_digest(cfg.to_dict())
    assert read_manifest(tmp_path / "run") == manifest
    assert manifest.files["config.json"].size == len(cfg.to_json().encode())


def test_add_to_run_dir_keeps_the_run_and_replaces_what_it_writes(tmp_path):
    target = tmp_path / "run"
    first = write_run_dir(target, {**written(2), "report.md": b"old report"})
    added = add_to_run_dir(target, {"report.md": b"new report", "training.png": b"\x89PNG\r\n\x1a\n.."},
                           expect_config_digest=first.config_digest)
    _, data = read_run_dir(target)
    assert data["report.md"] == b"new report" and data["history.npz"] == version_files(2)["history.npz"]
    assert set(added.files) == {"config.json", "history.npz", "report.md", "training.png"}
    assert added.config_digest == first.config_digest
    assert temporaries(tmp_path) == []


def test_add_to_run_dir_refuses_another_run(tmp_path):
    target = tmp_path / "run"
    write_run_dir(target, written(2))
    with pytest.raises(RunDirError, match=r"run now holds another run \(config digest [0-9a-f]{12}, "
                                          r"expected 000000000000\)$"):
        add_to_run_dir(target, {"report.md": b"x"}, expect_config_digest="0" * 64)
    assert run_version(target) == 2 and temporaries(tmp_path) == []


def test_add_to_a_directory_without_manifest(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(MissingManifestError, match=r"run is not a complete run directory: "
                                                   r"manifest\.json is missing"):
        add_to_run_dir(tmp_path / "run", {"report.md": b"x"})


def test_refuses_to_replace_what_is_not_a_run(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "thesis.tex").write_text("precious")
    with pytest.raises(RunDirError, match=r"notes is not a run directory \(no manifest\.json or "
                                          r"config\.json\); refusing to replace it$"):
        write_run_dir(tmp_path / "notes", written(1))
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunDirError, match=r"file exists and is not a directory$"):
        write_run_dir(tmp_path / "file", written(1))
    assert (tmp_path / "notes" / "thesis.tex").read_text() == "precious"
    assert temporaries(tmp_path) == []


@pytest.mark.parametrize("name", ["", ".hidden", "a/b", "..", "manifest.json", 3])
def test_file_names_must_be_plain(tmp_path, name):
    with pytest.raises(ValueError, match=r"^a run directory file must have a plain file name"):
        write_run_dir(tmp_path / "run", {name: b"x"})
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "rename-aside"])
def test_a_failing_writer_leaves_the_old_run(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(rundir, "_renameat2", None)
    target = tmp_path / "run"
    write_run_dir(target, written(1))

    def broken(fh):
        fh.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_run_dir(target, {**written(2), "history.npz": broken})
    assert run_version(target) == 1 and temporaries(tmp_path) == []


@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "rename-aside"])
@pytest.mark.parametrize("op", ["write", "add"])
def test_failure_at_every_step_leaves_old_or_new(tmp_path, monkeypatch, exchange, op):
    """An exception at the k-th file-system call of a write, for every k."""
    if not exchange:
        monkeypatch.setattr(rundir, "_renameat2", None)
    target = tmp_path / "run"
    calls = {"n": 0, "fail_at": None}
    names = ("mkdir", "rename", "fsync", "link", "unlink", "rmdir")
    originals = {name: getattr(os, name) for name in names}

    def counting(original):
        def call(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == calls["fail_at"]:
                raise OSError(5, "injected failure")
            return original(*args, **kwargs)
        return call

    def attempt(fail_at):
        write_run_dir(target, written(1))
        calls.update(n=0, fail_at=fail_at)
        for name in names:
            monkeypatch.setattr(os, name, counting(originals[name]))
        try:
            if op == "write":
                write_run_dir(target, written(2))
            else:
                add_to_run_dir(target, {"report.md": version_files(1)["report.md"] * 2})
            return True
        except OSError:
            return False
        finally:
            for name in names:
                monkeypatch.setattr(os, name, originals[name])

    attempt(None)
    steps = calls["n"]
    assert steps > 5
    outcomes = set()
    for k in range(1, steps + 1):
        ok = attempt(k)
        if op == "write":
            outcomes.add(run_version(target))
        else:
            _, data = read_run_dir(target)
            outcomes.add(len(data["report.md"]) // len(version_files(1)["report.md"]))
            assert data["history.npz"] == version_files(1)["history.npz"]
        if not ok:
            assert temporaries(tmp_path) == [], f"step {k} left temporaries"
    assert outcomes == {1, 2}              # failures early keep the old run, late ones the new


# --- killed outright: a forked child exits at the k-th step, without cleaning up ---

def _killed_child(step: int, op, fallback: bool, count_file: Path | None = None) -> int:
    pid = os.fork()
    if pid == 0:                                          # the child: never returns
        code = 0
        try:
            if fallback:
                rundir._renameat2 = None
            n = [0]

            def hook():
                n[0] += 1
                if n[0] == step:
                    os._exit(137)                         # as if SIGKILLed: no cleanup

            for name in ("mkdir", "rename", "fsync", "link", "unlink", "rmdir"):
                original = getattr(os, name)
                setattr(os, name, lambda *a, _o=original, **k: (hook(), _o(*a, **k))[1])
            exchange = rundir._exchange
            rundir._exchange = lambda a, b: (hook(), exchange(a, b))[1]
            _HOOK[0] = hook
            op()
            if count_file is not None:
                count_file.write_text(str(n[0]))
        except BaseException:  # noqa: BLE001
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@needs_fork
@pytest.mark.parametrize("fallback", [False, True], ids=["exchange", "rename-aside"])
def test_killed_at_every_step_reads_old_or_new(tmp_path, fallback):
    target = tmp_path / "run"

    def op():
        write_run_dir(target, written(2))

    write_run_dir(target, written(1))
    count = tmp_path / "count.txt"
    assert _killed_child(10**9, op, fallback, count) == 0
    steps = int(count.read_text())
    count.unlink()
    seen = []
    for k in range(1, steps + 2):
        write_run_dir(target, written(1))                 # and removes the last child's leftovers
        assert temporaries(tmp_path) == []
        code = _killed_child(k, op, fallback)
        assert code == (137 if k <= steps else 0)
        seen.append(run_version(target))                  # recovers a half-done swap too
    assert seen[0] == 1 and seen[-1] == 2 and set(seen) == {1, 2}
    write_run_dir(target, written(3))
    assert temporaries(tmp_path) == []


@needs_fork
@pytest.mark.parametrize("fallback", [False, True], ids=["exchange", "rename-aside"])
def test_add_killed_at_every_step_keeps_the_run(tmp_path, fallback):
    target = tmp_path / "run"
    new_report = b"the new report\n" * 100

    def op():
        add_to_run_dir(target, {"report.md": _chunked(new_report)})

    write_run_dir(target, written(1))
    count = tmp_path / "count.txt"
    assert _killed_child(10**9, op, fallback, count) == 0
    steps = int(count.read_text())
    count.unlink()
    for k in range(1, steps + 1):
        write_run_dir(target, written(1))
        assert _killed_child(k, op, fallback) == 137
        _, data = read_run_dir(target)
        assert data["report.md"] in (version_files(1)["report.md"], new_report)
        assert data["history.npz"] == version_files(1)["history.npz"]
    write_run_dir(target, written(1))
    assert temporaries(tmp_path) == []


_CHILD = r"""
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("rundir", sys.argv[1])
rundir = sys.modules["rundir"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rundir)   # alone: no numpy, so the child starts in milliseconds
files = {k: json.loads(v) for k, v in json.loads(sys.stdin.read()).items()}
print("ready", flush=True)
k = 0
while True:
    version = sorted(files)[k % len(files)]
    rundir.write_run_dir(sys.argv[2], {n: bytes.fromhex(h) for n, h in files[version].items()})
    k += 1
"""


def test_sigkill_at_random_moments_reads_old_or_new(tmp_path):
    """A real process, rewriting a run in a loop, killed with SIGKILL at random."""
    target = tmp_path / "run"
    versions = {str(k): json.dumps({n: d.hex() for n, d in version_files(k).items()}) for k in (2, 3)}
    payload = json.dumps(versions)
    write_run_dir(target, version_files(1))
    rng = random.Random(12)
    seen = set()
    for _ in range(6):
        child = subprocess.Popen([sys.executable, "-c", _CHILD, rundir.__file__, str(target)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        child.stdin.write(payload)
        child.stdin.close()
        assert child.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.25))
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        seen.add(run_version(target))
    write_run_dir(target, version_files(1))              # a later writer clears the leftovers
    assert temporaries(tmp_path) == []
    assert seen <= {1, 2, 3}


@pytest.mark.parametrize("fallback", [False, True], ids=["exchange", "rename-aside"])
def test_readers_during_rewrites_see_one_run(tmp_path, monkeypatch, fallback):
    import threading

    if fallback:
        monkeypatch.setattr(rundir, "_renameat2", None)

    target = tmp_path / "run"
    write_run_dir(target, version_files(1))
    stop, errors, seen = threading.Event(), [], set()

    def reader():
        while not stop.is_set():
            try:
                seen.add(run_version(target, listing=False))
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)
                return

    thread = threading.Thread(target=reader)
    thread.start()
    for k in range(2, 30):
        write_run_dir(target, version_files(k))
    stop.set()
    thread.join()
    assert errors == [] and len(seen) > 1


# ---------------------------------------------------------------------------
# corrupted files: one line naming the file
# ---------------------------------------------------------------------------

def _flip_bit(p: Path):
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x10
    p.write_bytes(bytes(data))


def _same_size(text: bytes):
    def mutate(p: Path):
        size = p.stat().st_size
        p.write_bytes((text * size)[:size])
    return mutate


def _edit_manifest(change):
    def mutate(run: Path):
        data = json.loads((run / "manifest.json").read_text())
        change(data)
        (run / "manifest.json").write_text(json.dumps(data))
    return mutate


def _file(name, mutate):
    return lambda run: mutate(run / name)


CORRUPTIONS = [
    ("truncated", _file("history.npz", lambda p: os.truncate(p, 10)),
     r"/history\.npz is truncated: 10 of \d+ bytes$", RunDirError),
    ("empty", _file("history.npz", lambda p: os.truncate(p, 0)),
     r"/history\.npz is empty \(manifest\.json lists \d+ bytes\)$", RunDirError),
    ("longer", _file("history.npz", lambda p: p.write_bytes(p.read_bytes() + b"x")),
     r"/history\.npz has \d+ bytes; manifest\.json lists \d+$", RunDirError),
    ("bit flipped", _file("history.npz", _flip_bit),
     r"/history\.npz is corrupt: its SHA-256 differs from manifest\.json$", RunDirError),
    ("wrong format", _file("history.npz", _same_size(b"not an npz ")),
     r"/history\.npz is not an \.npz \(zip\) file \(it starts with b'not an n'\)$", RunDirError),
    ("config wrong format", _file("config.json", _same_size(b"{{{")),
     r"/config\.json is not a JSON file$", RunDirError),
    ("png wrong format", _file("training.png", _same_size(b"GIF89a")),
     r"/training\.png is not a PNG file \(it starts with b'GIF89aGI'\)$", RunDirError),
    ("config edited", _file("config.json", lambda p: p.write_text(p.read_text().replace("2", "4"))),
     r"/config\.json is corrupt: its SHA-256 differs from manifest\.json$", RunDirError),
    ("missing", _file("history.npz", os.unlink),
     r"/history\.npz is missing \(listed in manifest\.json\)$", RunDirError),
    ("a directory", _file("history.npz", lambda p: (os.unlink(p), os.mkdir(p))),
     r"/history\.npz is not a file$", RunDirError),
    ("no manifest", _file("manifest.json", os.unlink),
     r"/run is not a complete run directory: manifest\.json is missing \(written by an older "
     r"version, or the write never finished\)$", MissingManifestError),
    ("manifest empty", _file("manifest.json", lambda p: os.truncate(p, 0)),
     r"/manifest\.json is empty$", RunDirError),
    ("manifest not JSON", _file("manifest.json", lambda p: p.write_text("PK\x03\x04 garbage")),
     r"/manifest\.json is not valid JSON: Expecting value: line 1 column 1 \(char 0\)$", RunDirError),
    ("manifest not UTF-8", _file("manifest.json", lambda p: p.write_bytes(b"\xff\xfe")),
     r"/manifest\.json is not UTF-8 text$", RunDirError),
    ("manifest of something else", _file("manifest.json", lambda p: p.write_text('{"files": {}}')),
     r"/manifest\.json is not a run manifest \(no \"format\": \"signgd-transformer-sim run directory\"\)$",
     RunDirError),
    ("manifest from the future", _edit_manifest(lambda m: m.update(version=2)),
     r"/manifest\.json has version 2; this simulator reads version 1$", RunDirError),
    ("manifest entry", _edit_manifest(lambda m: m["files"]["history.npz"].update(bytes=-1)),
     r"/manifest\.json is malformed: the entry of history\.npz needs bytes \(an integer >= 0\) and "
     r"sha256 \(64 hex digits\)$", RunDirError),
    ("manifest path", _edit_manifest(lambda m: m["files"].update({"../x": m["files"]["config.json"]})),
     r"/manifest\.json is malformed: '\.\./x' is not a plain file name$", RunDirError),
    ("manifest digest", _edit_manifest(lambda m: m.update(config_digest=5)),
     r"/manifest\.json is malformed: config_digest must be 64 hex digits or null$", RunDirError),
    ("gone", lambda run: [os.unlink(run / n) for n in os.listdir(run)] and os.rmdir(run),
     r"/run is not a run directory: it does not exist$", RunDirError),
    ("a file", lambda run: ([os.unlink(run / n) for n in os.listdir(run)], os.rmdir(run),
                            run.write_text("x")),
     r"/run is not a run directory: it is not a directory$", RunDirError),
]


@pytest.mark.parametrize("mutate, match, kind", [c[1:] for c in CORRUPTIONS],
                         ids=[c[0] for c in CORRUPTIONS])
@pytest.mark.parametrize("reader", [verify_run_dir, lambda p: read_run_dir(p)],
                         ids=["verify", "read"])
def test_corrupted_run_gives_one_line(tmp_path, mutate, match, kind, reader):
    run = tmp_path / "run"
    write_run_dir(run, {**version_files(2), "training.png": b"\x89PNG\r\n\x1a\n" + bytes(100)})
    verify_run_dir(run)
    mutate(run)
    with pytest.raises(kind, match=match) as info:
        reader(run)
    assert "\n" not in str(info.value) and isinstance(info.value, ValueError)


def test_read_only_the_files_asked_for(tmp_path):
    run = tmp_path / "run"
    write_run_dir(run, version_files(1))
    os.truncate(run / "report.md", 3)
    _, data = read_run_dir(run, ["config.json", "history.npz"])
    assert set(data) == {"config.json", "history.npz"}
    with pytest.raises(RunDirError, match=r"/run: stages\.png is not in manifest\.json$"):
        read_run_dir(run, ["stages.png"])


# ---------------------------------------------------------------------------
# progress in logs
# ---------------------------------------------------------------------------

class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.mark.parametrize("terminal", [False, True])
def test_progress_in_a_log_has_no_carriage_returns(monkeypatch, terminal):
    import simulator.progress

    clock = _Clock()
    monkeypatch.setattr(simulator.progress.time, "perf_counter", clock)
    stream = io.StringIO()                                # not a terminal
    bar = Progress(1000, "signgd x1", stream=stream, terminal=None if not terminal else True)
    for done in range(1, 1001):
        clock.now = done * 0.1                            # 100 s in all
        bar.update(done)
    bar.close()
    out = stream.getvalue()
    if terminal:
        assert "\r" in out and out.count("\n") == 1
    else:
        lines = out.splitlines()
        assert "\r" not in out
        # after the 2 s delay, then every 30 s: at 2.0, 32.0, 62.0, 92.0 s, and the end
        assert [line.split()[2] for line in lines] == ["20/1000", "320/1000", "620/1000",
                                                       "920/1000", "1000/1000"]
        assert lines[-1] == "signgd x1 1000/1000 (100.0%) done in 100.0s"


def test_progress_is_silent_for_short_work():
    stream = io.StringIO()
    bar = Progress(10, "x", stream=stream)
    for done in range(10):
        bar.update(done)
    bar.close()
    assert stream.getvalue() == ""


# ---------------------------------------------------------------------------
# every config field, absurd values
# ---------------------------------------------------------------------------

CHOICES = {"optimizer": OPTIMIZERS, "noise": NOISE_KINDS, "signal_position": SIGNAL_POSITIONS,
           "engine": ENGINES, "coordinates": COORDINATES, "reduced_init": REDUCED_INITS}
BOUNDARY_INTS = [0, 1, -1, 2, 2**31 - 1, 2**31, 2**53, 2**53 + 1, 2**62, 2**63 - 1, 2**63, 2**64,
                 10**30, -10**30, 10**5000]
absurd = st.one_of(
    st.sampled_from(BOUNDARY_INTS),
    st.integers(min_value=-2**70, max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e15, 1e308, -0.0, 0.5, 2.5, 5e-324]),
    st.booleans(), st.none(), st.text(max_size=12),
    st.sampled_from([c for options in CHOICES.values() for c in options]),
    st.recursive(st.integers(), lambda inner: st.lists(inner, max_size=3), max_leaves=6),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.sampled_from([np.int64(7), np.float32(2.5), np.float64(np.nan), np.array([1, 2]), 1 + 2j]),
)
BASE = dict(s=1)        # so that d alone decides its validity (s <= d - 1)
OPTIONAL = ("beta1", "beta2", "eps", "batch_size")


def _check_field(name: str, value) -> None:
    try:
        cfg = SimulationConfig(**{**BASE, name: value})
    except ConfigError as exc:
        msg = str(exc)
        assert "\n" not in msg and len(msg) < 300, msg
        assert re.search(rf"\b{name}\b", msg), f"{name}={value!r}: {msg}"
        return
    stored = getattr(cfg, name)
    # an optional field (the optimizers' hyper-parameters) may hold None: "the optimizer's default"
    assert type(stored) in (int, float, str) or (stored is None and name in OPTIONAL), \
        (name, value, type(stored))
    assert SimulationConfig.from_json(cfg.to_json()) == cfg
    assert estimated_bytes(cfg) > 0
    try:
        check_memory(cfg)
    except ConfigError as exc:                           # refused by memory: still one line
        assert "\n" not in str(exc) and " needs about " in str(exc)


@pytest.mark.parametrize("name", [f.name for f in fields(SimulationConfig)])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=absurd)
def test_every_field_builds_or_names_itself(name, value):
    _check_field(name, value)


@pytest.mark.parametrize("name", [f.name for f in fields(SimulationConfig)])
@settings(max_examples=25, deadline=None)
@given(value=st.one_of(st.integers(min_value=-2**70, max_value=2**70), st.floats(),
                       st.text(max_size=8), st.booleans(), st.none(),
                       st.lists(st.integers(), max_size=2)))
def test_every_field_from_json_builds_or_names_itself(name, value):
    text = json.dumps({**BASE, name: value})
    try:
        cfg = SimulationConfig.from_json(text)
    except ConfigError as exc:
        assert "\n" not in str(exc) and re.search(rf"\b{name}\b", str(exc)), str(exc)
    else:
        stored = getattr(cfg, name)
        assert stored == value or stored == float(value)      # an int given for a float field


# ---------------------------------------------------------------------------
# the command line: exit 2 with one line
# ---------------------------------------------------------------------------

INT_TEXTS = ["0", "-1", "2147483648", "9223372036854775808", "10**30", "1e15", "9" * 5000,
             "nan", "", "1.5"]
FLOAT_TEXTS = ["nan", "inf", "-inf", "1e999", "-1", "abc", "9" * 5000]
CHOICE_TEXTS = ["", "x" * 300, "SIGNGD"]
TINY = ["--steps", "2", "--d", "50", "--n", "2", "--s", "2", "--m-k", "1", "--m-v", "1",
        "--n-test", "4", "--no-report", "--quiet"]


def _cli_cases():
    defaults = SimulationConfig()
    for f in fields(SimulationConfig):
        kind = type(getattr(defaults, f.name))
        texts = CHOICE_TEXTS if f.name in CHOICES else INT_TEXTS if kind is int else FLOAT_TEXTS
        for text in texts:
            yield f.name, text


@pytest.mark.parametrize("name, text", list(_cli_cases()),
                         ids=[f"{n}={t[:12]}" for n, t in _cli_cases()])
def test_cli_absurd_value_exits_2_with_one_line(tmp_path, monkeypatch, capsys, name, text):
    import simulator.plotting
    from workflows.run import main

    monkeypatch.setattr(simulator.plotting, "training_figure_png", lambda h: b"\x89PNG\r\n\x1a\n")
    option = f"--{name.replace('_', '-')}"
    code = main(["run", *TINY, option, text, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and re.match(r"python -m simulator( run)?: error: ", lines[0]), err
        assert option in lines[0] or re.search(rf"\b{name}\b", lines[0]), lines[0]
        assert len(lines[0]) < 400
    else:   # a value that is valid after all runs the tiny job
        assert code in (0, 1), (code, err)


def _subprocess(args, cwd):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "simulator", "run", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, match", [
    (["--d", "1" + "0" * 30], r"d must be an integer between 2 and 9223372036854775807, "
                              r"got 1000000000000000000000000000000"),
    (["--n-test", "100000000"], r"n_test=100000000 needs about [\d.]+ [kMGTPEZ]?B of memory "
                                r"\(limit [\d.]+ [kMGTPEZ]?B\); lower n_test"),
    (["--noise", "dense", "--d", "100000000"], r"d=100000000 needs about .*; lower d"),
    (["--config", "deep.json"], r"config is not valid JSON: the value of d is nested too deeply"),
    (["--config", "long.json"], r"n_seeds must be an integer between 1 and 2147483647, "
                                r"got an integer of 5000 digits"),
], ids=["d=1e30", "n_test=1e8", "dense d=1e8", "deep.json", "long.json"])
def test_cli_subprocess_exits_2_with_one_line(tmp_path, args, match):
    """A handful through a real process: the exit status and all of stderr."""
    (tmp_path / "deep.json").write_text('{"d": ' + "[" * 50_000 + "]" * 50_000 + "}")
    (tmp_path / "long.json").write_text('{"n_seeds": ' + "7" * 5000 + "}")
    proc = _subprocess([*args, "--quiet"], tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert re.fullmatch(rf"python -m simulator: error: {match}\n", proc.stderr), proc.stderr
    assert not (tmp_path / "runs").exists()
