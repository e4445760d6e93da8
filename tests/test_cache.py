"""The cached-run helper: two processes racing build once; a killed build leaves nothing that blocks the next."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from landscape.trajectory import build_once, cache_lock, cached_file, cached_json, lock_path, temp_paths

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="advisory locks are POSIX-only")

# A builder process: waits for the go file (so both racers start together), then builds a directory slowly,
# logging each call of build() to a shared file (O_APPEND: one line per call, from any process).
_RACER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from landscape.trajectory import build_once

    root, go, pause = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
    while not go.exists():
        time.sleep(0.005)

    def build(tmp):
        with open(root / "calls.log", "a") as log:
            log.write(f"{os.getpid()}\\n")
        tmp.mkdir()
        (tmp / "part1").write_text("a")
        time.sleep(pause)  # long enough for the other racer to reach the lock
        (tmp / "part2").write_text(str(os.getpid()))

    built = build_once(root / "run", build)
    print("built" if built else "read", (root / "run" / "part2").read_text())
    """
)


def _spawn(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.Popen(
        [sys.executable, "-c", _RACER, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def test_two_processes_racing_build_once(tmp_path):
    go = tmp_path / "go"
    procs = [_spawn(str(tmp_path), str(go), "0.5") for _ in range(2)]
    time.sleep(0.2)
    go.touch()
    outs = [p.communicate(timeout=900) for p in procs]  # generous: a loaded machine imports torch slowly
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    calls = (tmp_path / "calls.log").read_text().split()
    assert len(calls) == 1  # build() ran once, in one process
    words = sorted(o[0].split()[0] for o in outs)
    assert words == ["built", "read"]
    assert {o[0].split()[1] for o in outs} == {calls[0]}  # both read the one result
    assert sorted(q.name for q in (tmp_path / "run").iterdir()) == ["part1", "part2"]
    assert temp_paths(tmp_path / "run") == []


def test_a_killed_build_is_cleaned_and_rebuilt(tmp_path):
    go = tmp_path / "go"
    go.touch()
    victim = _spawn(str(tmp_path), str(go), "60")
    deadline = time.monotonic() + 900  # a guard against hanging, not a timing assertion
    while not any((t / "part1").exists() for t in temp_paths(tmp_path / "run")):
        assert time.monotonic() < deadline and victim.poll() is None, victim.communicate()
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)  # killed mid-build: a half-written temporary directory stays behind
    victim.wait(timeout=300)
    (stale,) = temp_paths(tmp_path / "run")
    assert not (stale / "part2").exists() and not (tmp_path / "run").exists()
    with cache_lock(lock_path(tmp_path / "run"), wait=False) as held:
        assert held  # the kernel released the dead process's lock
    built = build_once(tmp_path / "run", lambda tmp: (tmp.mkdir(), (tmp / "part2").write_text("fresh")))
    assert built is True
    assert (tmp_path / "run" / "part2").read_text() == "fresh"
    assert not (tmp_path / "run" / "part1").exists()  # nothing of the killed build was kept
    assert temp_paths(tmp_path / "run") == []  # the stale temporary directory is gone


def test_failed_build_leaves_nothing_and_wait_false_does_not_block(tmp_path):
    final = tmp_path / "x.json"

    def boom(tmp: Path) -> None:
        tmp.write_text("half")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        build_once(final, boom)
    assert not final.exists() and temp_paths(final) == []
    with pytest.raises(FileNotFoundError, match="did not create"):
        build_once(final, lambda tmp: None)
    with cache_lock(lock_path(final)):  # another holder (a second open file description) blocks the build
        assert build_once(final, lambda tmp: tmp.write_text("1"), wait=False) is None
    assert not final.exists()
    assert build_once(final, lambda tmp: tmp.write_text("1"), wait=False) is True


def test_cached_json_computes_once_and_reads_back(tmp_path):
    calls = []

    def compute() -> dict:
        calls.append(1)
        return {"a": [1.5, float("nan")], "b": "x"}

    first = cached_json(tmp_path / "r.json", compute)
    again = cached_json(tmp_path / "r.json", compute)
    assert len(calls) == 1
    assert json.dumps(first) == json.dumps(again) == json.dumps(compute())
    assert cached_json(None, compute)["b"] == "x" and len(calls) == 3


def test_cached_json_computes_a_damaged_file_again(tmp_path):
    calls = []

    def compute() -> dict:
        calls.append(1)
        return {"a": 2.5}

    path = tmp_path / "r.json"
    path.write_text('{"a": 2.')  # truncated: a finished file that is not JSON
    assert cached_json(path, compute) == {"a": 2.5} and len(calls) == 1
    assert json.loads(path.read_text()) == {"a": 2.5}  # rewritten
    assert cached_json(path, compute) == {"a": 2.5} and len(calls) == 1


def test_cached_file_rebuilds_what_its_reader_rejects_and_raises_if_the_rebuild_is_damaged_too(tmp_path):
    def load(p: Path) -> float:
        value = json.loads(p.read_text())["value"]  # KeyError on another format
        if not isinstance(value, float):
            raise TypeError(f"not a float: {value!r}")
        return value

    def dump(value: float, tmp: Path) -> None:
        tmp.write_text(json.dumps({"value": value}))

    path = tmp_path / "v.json"
    path.write_text(json.dumps({"other": 1.0}))  # valid JSON, wrong content
    assert cached_file(path, lambda: 0.1 + 0.2, dump, load) == 0.1 + 0.2
    assert cached_file(path, lambda: 1 / 0, dump, load) == 0.1 + 0.2  # read back, not computed
    path.unlink()
    with pytest.raises(TypeError, match="not a float"):  # a writer that writes what its reader rejects: an error
        cached_file(path, lambda: 3, dump, load)
    assert not temp_paths(path)
