"""Bug hunt 11: the command line and saved trajectories, as a new user meets them (each test failed before its fix)."""

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
