"""Reprs and reports say a count of one in the singular: '1 segment', '1 step (1 epoch)', '1 tensor', '1 snapshot'."""

import re

import torch
from torch import nn

from landscape import Recorder, Trajectory
from landscape.analyze import line
from landscape.params import ParamLayout
from landscape.train import Trainer


def _no_singular_plural(text: str) -> None:
    """No '1 <noun>s' (a one followed by a plural noun) anywhere in ``text``."""
    bad = re.findall(r"(?<![\d.])1 (?:snapshots|segments|steps|epochs|tensors|parameters|batches|samples)\b", text)
    assert not bad, (bad, text)


def test_reprs_of_one_segment_one_step_one_tensor():
    torch.manual_seed(0)
    X, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    traj = Trajectory()
    trainer = Trainer(nn.Linear(3, 2, bias=False), (X, y), steps=1, trajectory=traj).fit()
    assert len(traj) == 2 and len(traj.segments) == 1 and trainer.step == 1
    assert repr(traj).endswith("2 snapshots, 1 segment)")
    assert repr(trainer).endswith("trained 1 step (1 epoch))")
    assert repr(ParamLayout.from_model(nn.Linear(3, 2, bias=False))) == "ParamLayout(1 tensor, 6 parameters)"
    res = line(nn.Linear(3, 2, bias=False), traj[0].vector, traj[-1].vector, (X, y), [0.0, 1.0])
    assert "layout: 1 tensor, 6 parameters" in repr(res)
    for text in (repr(traj), repr(trainer), repr(res)):
        _no_singular_plural(text)


def test_check_report_and_recorder_of_one_snapshot(tmp_path):
    net = nn.Linear(3, 2)
    rec = Recorder(tmp_path / "one", model=net, every_steps=10)
    assert repr(rec).endswith("1 snapshot)")
    rec.close(None)
    report = str(Trajectory.check(tmp_path / "one"))
    assert "1 snapshot, 1 intact" in report
    _no_singular_plural(report)
