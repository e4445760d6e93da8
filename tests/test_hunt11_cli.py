"""Bug hunt 11: the command line and saved trajectories, as a new user meets them (each test failed before its fix)."""

import os

import pytest
import torch
from torch import nn

from landscape.cli import main
from landscape.params import ParamLayout
from landscape.trajectory import Trajectory

LAYOUT = ParamLayout.from_model(nn.Linear(3, 2))


def _store(path, n):
    """A store of ``n`` snapshots of ``LAYOUT`` whose vectors are ``i + arange``."""
    with Trajectory.create(path, LAYOUT) as t:
        for i in range(n):
            t.append(torch.arange(LAYOUT.numel, dtype=torch.float32) + i, step=i)
    return path


def test_repair_of_an_empty_store_without_index_leaves_a_store_that_checks_ok(tmp_path, capsys):
    # A create() that died after its manifest leaves no index.jsonl: check calls that damage and --repair
    # said REPAIRED (exit 0) without writing one, so every later check still said DAMAGED (exit 1).
    p = _store(tmp_path / "t", 0)
    (p / "index.jsonl").unlink()
    assert main(["check", str(p)]) == 1
    assert main(["check", str(p), "--repair"]) == 0
    assert (p / "index.jsonl").read_bytes() == b""
    assert Trajectory.check(p).ok
    assert main(["check", str(p)]) == 0
    assert "OK" in capsys.readouterr().out.splitlines()[-1]


def test_check_migrate_of_a_damaged_current_store_exits_1(tmp_path, capsys):
    # --migrate on a version-2 store migrates nothing; a damaged one must still exit 1, as without --migrate
    # (main's contract: 1 for a damaged store). It exited 0 while printing DAMAGED.
    p = _store(tmp_path / "t", 3)
    lines = (p / "index.jsonl").read_bytes().split(b"\n")
    (p / "index.jsonl").write_bytes(b"\n".join(lines[:1]) + b"\n")  # snapshots 1, 2 lose their index lines
    assert main(["check", str(p)]) == 1
    assert main(["check", str(p), "--migrate"]) == 1
    assert capsys.readouterr().out.splitlines()[-1] == "DAMAGED"


def _subparsers():
    import argparse

    from landscape.cli import build_parser

    p = build_parser()
    return next(a for a in p._actions if isinstance(a, argparse._SubParsersAction)).choices


def test_help_of_every_subcommand_states_every_default_and_describes_its_arguments():
    # ``--help`` is where a new user learns what happens without an option: every option with a default
    # (other than an off switch) says it, and every positional argument says what it is.
    import argparse

    missing = []
    for name, sub in _subparsers().items():
        for a in sub._actions:
            if isinstance(a, argparse._HelpAction | argparse._StoreTrueAction):
                continue
            if not a.option_strings and not a.help:
                missing.append(f"{name} {a.metavar or a.dest}: no help")
            elif a.option_strings and a.default is not None and a.default != [] and "default" not in a.help:
                missing.append(f"{name} {a.option_strings[0]}: default {a.default!r} not stated")
    assert not missing, missing


def _mlp_store(path, n=2):
    """A store of ``n`` snapshots of the zoo's ``mlp`` (hidden=[8]) for 8x8 digits, recording its model."""
    from landscape.models import build_model

    with Trajectory.create(path, meta={"model": "mlp", "model_kw": {"hidden": [8]}}) as t:
        for seed in range(n):
            t.append_model(build_model("mlp", (1, 8, 8), 10, hidden=[8], seed=seed), step=seed)
    return path


def _line(traj, out, *more):
    return ["line", "--data", "digits", "--limit", "20", "--from", f"{traj}:0", "--to", str(traj), "--alphas", "0,1"]


def test_a_name_with_a_directory_is_refused_before_the_work(tmp_path, capsys, monkeypatch):
    # --name is a file stem inside --out; "sub/x" failed with a FileNotFoundError traceback after all the work.
    import landscape.cli.slices as slices

    def no_work(*a, **k):
        raise AssertionError("the data were loaded before the options were checked")

    monkeypatch.setattr(slices, "load_data", no_work)
    traj = _mlp_store(tmp_path / "run")
    for name in ("sub/x", "..", "."):
        argv = [*_line(traj, tmp_path), "--out", str(tmp_path / "out"), "--name", name, "--quiet"]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"landscape: error: --name {name}") and "--out" in err, err


def test_an_output_file_taken_by_a_directory_is_a_named_error_not_a_traceback(tmp_path, capsys):
    traj = _mlp_store(tmp_path / "run")
    out = tmp_path / "out"
    (out / "line.npz").mkdir(parents=True)  # where the result goes
    argv = [*_line(traj, tmp_path), "--out", str(out), "--quiet", "--no-html", "--no-png"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"landscape: error: cannot write {out / 'line.npz'}") and "--name" in err, err


def test_check_of_a_store_a_live_writer_appends_to_is_not_damage(tmp_path, monkeypatch, capsys):
    # check reads the index, then the packs; a training run appending in between (pack bytes first, index
    # line right after) made a healthy store look DAMAGED ("recoverable ... check --repair", exit 1), and
    # --repair is refused while the writer runs. Here the writer appends exactly in that gap, every time.
    # The report may cover the store as it was indexed before or after that append; either is intact.
    import landscape.trajectory.check as check

    p = tmp_path / "live"
    t = Trajectory.create(p, LAYOUT)
    for i in range(3):
        t.append(torch.full((LAYOUT.numel,), float(i)), step=i)
    real = check.pack_names

    def appending_pack_names(snapdir):
        t.append(torch.full((LAYOUT.numel,), float(len(t))), step=len(t))  # durable: on disk when it returns
        return real(snapdir)

    monkeypatch.setattr(check, "pack_names", appending_pack_names)
    rep = Trajectory.check(p)
    assert rep.ok and rep.recoverable == [] and rep.intact in ([0, 1, 2], [0, 1, 2, 3]), str(rep)
    assert main(["check", str(p)]) == 0 and capsys.readouterr().out.splitlines()[-1] == "OK"
    t.close()
    monkeypatch.setattr(check, "pack_names", real)
    assert Trajectory.check(p).intact == list(range(5))  # what the writer wrote is all there


def test_check_of_a_store_whose_live_writer_starts_a_segment_is_not_damage(tmp_path, monkeypatch):
    # The manifest was read once, before the packs: a segment the writer started in between (the network
    # grew; manifest first, then the pack) made its first snapshot "name a segment which the manifest lacks".
    import landscape.trajectory.check as check

    grown = ParamLayout.from_model(nn.Linear(3, 4))
    p = tmp_path / "live"
    t = Trajectory.create(p, LAYOUT)
    t.append(torch.zeros(LAYOUT.numel))
    real = check.pack_names

    def growing_pack_names(snapdir):
        if len(t) == 1:
            t.append(torch.ones(grown.numel), layout=grown)
        return real(snapdir)

    monkeypatch.setattr(check, "pack_names", growing_pack_names)
    rep = Trajectory.check(p)
    assert rep.ok and rep.problems == [] and rep.intact in ([0], [0, 1]), str(rep)
    t.close()
    assert [s.layout for s in Trajectory.open(p).segments] == [LAYOUT, grown]


def test_check_of_a_store_being_created_is_not_damage(tmp_path):
    # create() writes the manifest, then the index (a few milliseconds later, after a directory fsync): a
    # check in between said "index.jsonl: is missing", DAMAGED. With the writer's lock held, that is a store
    # being created; without it (a create that died there), it stays a problem that --repair mends.
    from landscape.trajectory.files import acquire_lock

    p = _store(tmp_path / "t", 0)
    (p / "index.jsonl").unlink()
    lock = acquire_lock(p)  # the creating writer
    try:
        rep = Trajectory.check(p)
        assert rep.ok and rep.problems == [], str(rep)
    finally:
        os.close(lock)
    assert Trajectory.check(p).problems == [("index.jsonl", "is missing")]


def test_an_unreadable_memory_budget_is_refused_before_the_work_naming_the_option(tmp_path, capsys, monkeypatch):
    # It was read by the evaluation engine, after the data and the model were loaded, and the message did
    # not say which option it came from.
    import landscape.cli.slices as slices

    def no_work(*a, **k):
        raise AssertionError("the data were loaded before the options were checked")

    monkeypatch.setattr(slices, "load_data", no_work)
    traj = _mlp_store(tmp_path / "run")
    argv = [*_line(traj, tmp_path), "--out", str(tmp_path / "out"), "--memory-budget", "lots", "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("landscape: error: --memory-budget: cannot read memory size 'lots'") and "512MB" in err


@pytest.mark.parametrize("spelled", [".", "./", "../old/."])
def test_migrate_from_inside_the_store(tmp_path, monkeypatch, spelled):
    # A user inside the old store runs "landscape check . --migrate": the backup name was taken from
    # Path(".").name, which is empty ("PosixPath('.') has an empty name"), or from "..".
    import shutil
    import warnings

    from test_store_v1 import FIXTURE, assert_fixture

    p = tmp_path / "old"
    shutil.copytree(FIXTURE, p)
    before = {q.relative_to(p): q.read_bytes() for q in sorted(p.rglob("*")) if q.is_file()}
    monkeypatch.chdir(p)
    assert main(["check", spelled, "--migrate"]) == 0
    backup = tmp_path / "old.v1-backup"
    assert {q.relative_to(backup): q.read_bytes() for q in sorted(backup.rglob("*")) if q.is_file()} == before
    assert sorted(q.name for q in tmp_path.iterdir()) == ["old", "old.v1-backup"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a version-1 store would warn
        assert_fixture(Trajectory.open(p))


def test_refresh_picks_up_metadata_a_live_writer_updated(tmp_path):
    # A reader following a training run saw new snapshots after refresh(), but the run's metadata only
    # when a new segment happened to start (the manifest was re-read for that alone): update_meta calls
    # (Trainer(factory=...) records the model factory this way) stayed invisible, or not, by accident.
    p = tmp_path / "run"
    w = Trajectory.create(p, LAYOUT, meta={"a": 1})
    w.append(torch.zeros(LAYOUT.numel))
    r = Trajectory.open(p)
    w.update_meta({"b": 2})
    w.append(torch.ones(LAYOUT.numel))
    assert r.refresh() == 1
    assert r.meta == Trajectory.open(p).meta == {"a": 1, "b": 2}
    w.update_meta({"a": 3})  # no new snapshot at all
    r.refresh()
    assert r.meta == {"a": 3, "b": 2}
    w.close()


def test_a_failed_atomic_write_leaves_no_temporary_file(tmp_path):
    # write_atomic writes <path>.tmp and renames it; when the write or the rename failed (disk full, the
    # target a directory: a CLI output name taken), <path>.tmp stayed behind in the user's folder.
    from landscape.trajectory import write_atomic

    target = tmp_path / "line.npz"
    target.mkdir()
    with pytest.raises(IsADirectoryError):
        write_atomic(target, b"data")
    assert sorted(q.name for q in tmp_path.iterdir()) == ["line.npz"]


def test_repair_refused_under_a_live_writer_says_what_to_do(tmp_path, capsys):
    # The refusal told a command-line user to "open it with mode='r' to read" (the Python fix for opening a
    # store, not for repairing one).
    p = _store(tmp_path / "t", 2)
    with Trajectory.open(p, "a"):
        assert main(["check", str(p), "--repair"]) == 2
        err = capsys.readouterr().err
        assert "mode='r'" not in err and "without --repair" in err and "closed" in err, err
        assert main(["check", str(p)]) == 0  # what it suggests works
