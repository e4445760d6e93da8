"""The file layer (landscape.trajectory.files): the one atomic write and the one advisory lock."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from landscape.trajectory import file_lock, write_atomic
from landscape.trajectory.files import acquire_lock

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("durable", [True, False])
def test_write_atomic_replaces_the_whole_file_and_leaves_no_temporary(tmp_path, durable):
    f = tmp_path / "a.bin"
    f.write_bytes(b"old content that is longer than the new one")
    write_atomic(f, b"new", durable=durable)
    assert f.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]
    big = os.urandom(3 * 2**20)  # more than one write(2) may take
    write_atomic(f, big, durable=durable)
    assert f.read_bytes() == big


def test_a_failed_write_leaves_the_old_file(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(b"old")
    with pytest.raises(TypeError):
        write_atomic(f, 12345)  # type: ignore[arg-type]  # not bytes: fails before the rename
    assert f.read_bytes() == b"old"


@pytest.mark.skipif(sys.platform == "win32", reason="flock")
@pytest.mark.parametrize("kind", ["directory", "file"])
def test_lock_excludes_another_process_and_dies_with_it(tmp_path, kind):
    target = tmp_path / "store" if kind == "directory" else tmp_path / "sub" / "run.lock"
    if kind == "directory":
        target.mkdir()
    holder = (
        "import sys, time; from landscape.trajectory import file_lock\n"
        f"with file_lock({str(target)!r}):\n"
        "    print('held', flush=True); sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", holder], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        assert acquire_lock(target) is None  # held elsewhere: no wait, no descriptor leaked
        with file_lock(target, wait=False) as got:
            assert got is False
    finally:
        proc.kill()  # SIGKILL: the kernel releases the lock, nothing to clean up
        proc.wait(timeout=60)
    with file_lock(target, wait=False) as got:
        assert got is True
        assert acquire_lock(target) is None  # flock is per open file: a second descriptor is excluded too
    fd = acquire_lock(target)
    assert fd is not None
    os.close(fd)
