"""Helpers shared by several test modules: tiny models of the evaluation engine, plane points, brute-force loops.

Test modules import these from here, never from each other (issue 20). The registry of tiny models that every
analyzer's brute-force test runs over is :mod:`tests.registry`; the models here exercise the evaluation
engine's specific paths (a shared module in the chain, max-pooling, a custom forward, two BatchNorm kinds).
"""

import copy
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from landscape.evaluate import AffinePoints
from landscape.params import ParamLayout, model_at, parameters_to_vector
from tests.registry import make_case

__all__ = [
    "Residual",
    "assert_untouched",
    "batches",
    "brute",
    "build_toy_gallery",
    "check_figure_result",
    "chromium_dom",
    "chromium_executable",
    "dense_hessian",
    "feed",
    "loss_at",
    "make",
    "mlp_family",
    "plane_points",
    "small_bn_cnn",
    "small_cnn",
    "snapshot",
    "tiny_im_setup",
    "vec",
]


class Residual(nn.Module):
    """Not a chain: exercises the generic path and the first-layer detection through a custom forward."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.out = nn.Linear(5, 8), nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc1(x))
        return self.out(h + torch.tanh(self.fc2(h)))


def small_cnn(act: type[nn.Module], side: int) -> nn.Sequential:
    """conv 3x3 (padding 1) - act - max-pool 2 - conv 3x3 - act - linear, on ``(B, 1, side, side)``, 3 classes."""
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        act(),
        nn.MaxPool2d(2),
        nn.Conv2d(3, 4, 3),
        act(),
        nn.Flatten(),
        nn.Linear(4 * (side // 2 - 2) ** 2, 3),
    )


def small_bn_cnn(act: type[nn.Module], pool: nn.Module, flat: int, hidden: int) -> nn.Sequential:
    """conv 3x3 - BatchNorm - act - ``pool`` - linear (``flat`` inputs) - BatchNorm - tanh - linear, 3 classes."""
    return nn.Sequential(
        nn.Conv2d(1, 3, 3),
        nn.BatchNorm2d(3),
        act(),
        pool,
        nn.Flatten(),
        nn.Linear(flat, hidden),
        nn.BatchNorm1d(hidden),
        nn.Tanh(),
        nn.Linear(hidden, 3),
    )


def make(kind: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed({"mlp": 0, "cnn": 1, "bn": 2, "res": 3, "tied": 4}[kind])
    if kind == "tied":  # one Linear applied twice: shared weights, repeated module in the chain
        lin = nn.Linear(5, 5)
        m = nn.Sequential(lin, nn.Tanh(), lin, nn.ReLU(), nn.Linear(5, 3))
        X = torch.randn(20, 5)
    elif kind == "mlp":
        m = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
        X = torch.randn(20, 5)
    elif kind == "res":
        m = Residual()
        X = torch.randn(20, 5)
    elif kind == "cnn":
        m = small_cnn(nn.ReLU, 8)
        X = torch.randn(20, 1, 8, 8)
    else:
        m = small_bn_cnn(nn.ReLU, nn.MaxPool2d(2), 27, 6)
        X = torch.randn(20, 1, 8, 8)
        with torch.no_grad():  # non-trivial running statistics
            m.train()
            for _ in range(3):
                m(X * 2 + 1)
    m = m.double().eval()
    return m, X.double(), torch.randint(0, 3, (20,))


def reparametrized_net() -> nn.Module:
    """An MLP whose first weight is ``scale * v``, set by a forward pre-hook (``torch.nn.utils.weight_norm``'s way)."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    first = m[0]
    v = first.weight.detach().clone()
    del first.weight
    first.weight_v = nn.Parameter(v)
    first.weight_s = nn.Parameter(torch.tensor(1.5, dtype=torch.float64))

    def pre(mod, _inputs):
        mod.weight = mod.weight_s * mod.weight_v

    first.register_forward_pre_hook(pre)
    with torch.no_grad():  # a leaf tensor, so the model deep-copies
        pre(first, ())
    return m


def dense_hessian(model: nn.Module, loss_fn, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``torch.func.hessian`` of the eval-mode mean loss over all samples, float64, shape ``(n, n)``."""
    m = copy.deepcopy(model).double().eval()
    layout = ParamLayout.from_model(m)
    bufs = dict(m.named_buffers())

    def loss(theta: torch.Tensor) -> torch.Tensor:
        return loss_fn(functional_call(m, {**layout.unflatten(theta), **bufs}, (X.double(),)), y)

    return torch.func.hessian(loss)(parameters_to_vector(m).double())


def batches(X, y, sizes=(7, 7, 6)):
    out, s = [], 0
    for n in sizes:
        out.append((X[s : s + n], y[s : s + n]))
        s += n
    return out


def plane_points(m, nx=3, ny=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = parameters_to_vector(m)
    basis = torch.stack(
        [
            c,
            0.5 * torch.randn(c.numel(), generator=g, dtype=c.dtype),
            0.5 * torch.randn(c.numel(), generator=g, dtype=c.dtype),
        ]
    )
    xs, ys = np.linspace(-1, 1, nx), np.linspace(-0.5, 1, ny)
    X, Y = (a.reshape(-1) for a in np.meshgrid(xs, ys))
    return AffinePoints(basis, np.stack([np.ones_like(X), X, Y], 1))


def brute(m, vecs, data, train_bn=False, bufs=None):
    """Explicit float64 loop: one point, one batch, one nn.Module call at a time."""
    loss, acc = [], []
    for i, v in enumerate(vecs):
        net = model_at(m, v, None if bufs is None else bufs[i])
        net.eval()
        if train_bn:
            for mod in net.modules():
                if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                    mod.train()
        tot_l = tot_a = n = 0.0
        with torch.no_grad():
            for x, y in data:
                out = net(x)
                tot_l += F.cross_entropy(out, y).item() * len(y)
                tot_a += (out.argmax(1) == y).sum().item()
                n += len(y)
        loss.append(tot_l / n)
        acc.append(tot_a / n)
    return np.array(loss), np.array(acc)


def snapshot(m):
    return (
        {k: v.detach().clone() for k, v in m.state_dict(keep_vars=True).items()},
        {k: v.requires_grad for k, v in m.named_parameters()},
        {k: mod.training for k, mod in m.named_modules()},
    )


def assert_untouched(m, snap):
    sd, rg, tr = snap
    now = m.state_dict(keep_vars=True)
    assert sd.keys() == now.keys()
    for k, v in sd.items():
        assert torch.equal(v, now[k].detach()) and v.dtype == now[k].dtype, k
    assert rg == {k: v.requires_grad for k, v in m.named_parameters()}
    assert tr == {k: mod.training for k, mod in m.named_modules()}


def mlp_family(n_models=4, dtype=torch.float64):
    """The registry's ``mlp_tanh`` case in ``dtype``, ``n_models - 1`` perturbed copies and its 24 samples.

    Returns:
        ``(m, others, (X (24, 4), y (24,)))``.
    """
    case = make_case("mlp_tanh")
    m = case.model.to(dtype)
    torch.manual_seed(0)
    others = []
    for _ in range(n_models - 1):
        o = copy.deepcopy(m)
        with torch.no_grad():
            for p in o.parameters():
                p.add_(torch.randn_like(p))
        others.append(o)
    return m, others, (case.inputs[0].to(dtype), case.targets)


def loss_at(m, vec, data):
    X, y = data
    with torch.no_grad():
        return F.cross_entropy(model_at(m, torch.as_tensor(vec, dtype=torch.float64))(X), y).item()


def vec(m):
    return parameters_to_vector(m).double()


def check_figure_result(res, source: str, keys=None, n_claims=None) -> list:
    """The figure contract's invariants on a :class:`figures.contract.FigureResult`; returns its claims.

    Panels exist (with ``keys``: exactly those, each a plotly figure with traces and a matplotlib figure with
    axes); every claim cites ``source``, has one of the four verdicts, ``held`` in True/False/None and a numeric
    ``measured`` (a number or a list of numbers, never prose or a bool); a held claim has every premise met,
    and a claim with a premise not met is not tested.
    """
    import matplotlib.figure
    import plotly.graph_objects as go

    from figures.contract import Claim, FigureResult
    from figures.verdict import Verdict

    assert isinstance(res, FigureResult) and res.panels and res.claims
    if keys is not None:
        assert [p.key for p in res.panels] == list(keys)
        for p in res.panels:
            assert isinstance(p.plotly, go.Figure) and len(p.plotly.data) > 0
            assert isinstance(p.mpl, matplotlib.figure.Figure) and p.mpl.axes
    if n_claims is not None:
        assert len(res.claims) == n_claims
    for c in res.claims:
        assert isinstance(c, Claim) and c.source.startswith(source), c.source
        assert c.verdict in set(Verdict) and c.held in (True, False, None), c
        vals = c.measured if isinstance(c.measured, list) else [c.measured]
        assert vals and all(isinstance(v, float | int) and not isinstance(v, bool) for v in vals), c.measured
        if c.verdict is Verdict.HELD:
            assert all(p.met for p in c.premises), f"held on a failed premise: {c.statement}"
        if not all(p.met for p in c.premises):
            assert c.verdict is Verdict.NOT_TESTED, c
    return list(res.claims)


def tiny_im_setup():
    """Im et al.'s settings at a size that trains in seconds (the Im and 'Beyond the papers' figure tests).

    Two epochs fit nothing at this size: claims that need a trained network rest on a failed premise.
    """
    from figures.im._setup import ImSetup

    return ImSetup(
        name="test",
        train_size=96,
        vgg_cfg=(4, "M"),
        vgg_hidden=8,
        epochs=2,
        lr_stages=2,
        repetitions=2,
        repetitions_nobn=2,
        repetitions_fig9=2,
        repetitions_switch=2,
        repetitions_nin=2,
        surface_size=48,
        grid=3,
        nin_width=4,
    )


def build_toy_gallery(out: Path) -> Path:
    """The gallery of the toy demo alone, built into ``out`` (quietly); returns ``out``."""
    from figures.make_all import main

    assert main(["--only", "toy_demo", "--out", str(out), "--quiet"]) == 0
    return out


def chromium_executable() -> str | None:
    """Headless Chromium for the browser tests (``LANDSCAPE_CHROMIUM`` or on the path), ``None`` if absent.

    ``LANDSCAPE_SKIP_BROWSER=1`` skips the calling test instead.
    """
    if os.environ.get("LANDSCAPE_SKIP_BROWSER") == "1":
        pytest.skip("LANDSCAPE_SKIP_BROWSER=1")
    return os.environ.get("LANDSCAPE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def chromium_dom(exe: str, page: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess:
    """Open ``page`` in headless Chromium (a fresh ``profile`` directory, ``extra`` flags) and dump its DOM.

    Returns the finished process: the DOM after the page's scripts ran is its ``stdout``.
    """
    cmd = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--enable-unsafe-swiftshader",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=15000",
        *extra,
        "--dump-dom",
        page.as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"chromium failed ({proc.returncode}): {proc.stderr[-2000:]}"
    return proc


Parser = TypeVar("Parser", bound=HTMLParser)


def feed(parser: Parser, html: str) -> Parser:
    """``parser`` after reading ``html`` (an :class:`~html.parser.HTMLParser` that collects what a test checks)."""
    parser.feed(html)
    return parser
