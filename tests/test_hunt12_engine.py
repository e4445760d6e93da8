"""Bug hunt 12 in the evaluation engine: each test holds one model the engine got wrong (or refused) before.

Every answer is compared with a plain float64 loop of :func:`torch.func.functional_call` over the caller's
batches (:func:`_reference`), never with the engine's own output.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape.evaluate import AffinePoints, evaluate_points
from landscape.params import ParamLayout
from tests.helpers import plane_points, reparametrized_net


def _reference(model: nn.Module, vecs: torch.Tensor, data: list, loss_fn=F.cross_entropy) -> np.ndarray:
    """Loss at each point ``vecs (P, D)``: one point, one caller's batch at a time, batch means weighted by size."""
    model = model.eval()
    layout = ParamLayout.from_model(model)
    bufs = dict(model.named_buffers())
    out = []
    with torch.no_grad():
        for v in vecs:
            tot = 0.0
            for x, y in data:
                o = torch.func.functional_call(model, {**layout.unflatten(v), **bufs}, (x,), strict=False)
                tot += float(loss_fn(o, y)) * len(y)
            out.append(tot / sum(len(y) for _, y in data))
    return np.array(out)


def _data(shape: tuple[int, ...], n: int = 13, cut: int = 5, seed: int = 0) -> list:
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, *shape, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (n,), generator=g)
    return [(X[i : i + cut], y[i : i + cut]) for i in range(0, n, cut)]


def _check(model: nn.Module, data: list, strategies=("auto", "functional", "stacked"), **kw) -> None:
    pts = plane_points(model, nx=3, ny=2)
    vecs = pts.materialize(torch.arange(len(pts)))
    want = _reference(model, vecs, data)
    for s in strategies:
        for points in (pts, vecs):  # affine (first-layer maps) and a plain matrix
            got = evaluate_points(model, points, data, strategy=s, metrics=("loss",), **kw)["loss"]
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12, err_msg=s)


# ----------------------------------------------------------------------------- fx's immutable containers
class _CatGroupNorm(nn.Module):
    """``torch.cat`` of a list, ``F.group_norm``'s weight by keyword, a slice bound from a shape, ``F.log_softmax``.

    fx hands lists and keyword dicts over as ``immutable_list``/``immutable_dict``, which the program's ``resolve``
    did not look into: every such argument reached its operation as an unresolved slot reference, so the stacked
    executor refused (``strategy="stacked"`` raised, ``"auto"`` fell back to the slow path) any model with them.
    """

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(1, 4, 3)
        self.gn = nn.GroupNorm(2, 4)
        self.a, self.b = nn.Linear(16, 3), nn.Linear(16, 3)
        self.out = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.group_norm(self.c(x), 2, self.gn.weight, self.gn.bias)  # (B, 4, 4, 4)
        h = h[:, : h.size(1) // 2].flatten(1)  # (B, 32) -> first two channels: (B, 32)
        h = h[:, :16]
        s = F.log_softmax(x.flatten(1)[:, :2], dim=1)  # point-independent
        return self.out(torch.cat([self.a(h), self.b(h), s], dim=1))


def test_lists_and_keyword_tensors_reach_the_stacked_operations():
    torch.manual_seed(0)
    _check(_CatGroupNorm().double(), _data((1, 6, 6)), batch_size=4)


# ----------------------------------------------------------------------------- in-place methods
class _CopyInto(nn.Module):
    """Point-dependent values written in place into a point-independent tensor (``copy_``), and ``masked_fill_``.

    The tensor ``x.new_zeros(...)`` depends on no point, so the stacked executor computes it once per batch; the
    in-place method then ran once per point on that one tensor and every point read the chunk's last point's
    values. The probe (one point) could not see it: ``"auto"`` returned wrong losses at every point but the last.
    """

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.out = nn.Linear(4, 3), nn.Linear(3, 3)
        self.scale = nn.Parameter(torch.ones(3))  # keeps `out` off the first-layer path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.new_zeros(x.size(0), 3)
        h.copy_(self.fc(x))
        g = torch.tanh(self.fc(x))
        g.masked_fill_(x[:, 1:] > 0.5, 0.0)  # in place on a point-dependent tensor
        return self.out((h + g) * self.scale)


def test_in_place_methods_into_a_point_independent_tensor():
    torch.manual_seed(1)
    _check(_CopyInto().double(), _data((4,)), chunk_size=3)


# ----------------------------------------------------------------------------- batch statistics in eval mode
class _BatchStats(nn.Module):
    """Normalized by each batch's statistics in eval mode: BatchNorm without running statistics, and
    ``F.batch_norm(..., training=True)`` written in ``forward``.

    The fast strategies re-cut the caller's batches into micro-batches (here the 13 samples in one), which
    changes every sample's normalization: the losses were off by percents under ``"auto"`` and ``"functional"``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 5)
        self.bn = nn.BatchNorm1d(5, track_running_stats=False)
        self.conv = nn.Conv2d(1, 2, 3)
        self.out = nn.Linear(5 + 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.bn(self.fc(x.flatten(1)[:, :4])))
        c = F.batch_norm(self.conv(x), None, None, training=True).mean((2, 3))
        return self.out(torch.cat([a, c], 1))


def test_batch_statistics_keep_the_callers_batches():
    torch.manual_seed(2)
    _check(_BatchStats().double(), _data((1, 5, 5)))


# ----------------------------------------------------------------------------- weighted losses in the shorthand
@pytest.mark.parametrize(
    "loss",
    [
        nn.CrossEntropyLoss(weight=torch.tensor([0.2, 1.0, 3.0], dtype=torch.float64)),
        nn.CrossEntropyLoss(),  # ignore_index=-100 occurs in the targets
        nn.CrossEntropyLoss(weight=torch.tensor([0.2, 1.0, 3.0], dtype=torch.float64), label_smoothing=0.1),
    ],
)
def test_weighted_losses_are_the_loss_of_the_whole_data(loss):
    """Class weights and ignored targets make a batch's mean divide by its summed weights, not by its size.

    A :class:`~landscape.problem.Problem` defines its loss as the whole data's in one call, however the data are
    cut; the ``evaluate_points(model, points, data, loss_fn=...)`` shorthand weighted batch means by size instead,
    so the fast strategies (which re-cut the data) were off by ~10% from ``"loop"`` and from the whole data's loss,
    and ignored targets (-100) were refused ("Remap the labels") although the loss skips them.
    """
    torch.manual_seed(3)
    m = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    (data,) = _data((4,), cut=13)
    X, y = data
    y = y.clone()
    y[[1, 4, 7]] = -100 if loss.weight is None else y[[1, 4, 7]]
    pts = plane_points(m)
    vecs = pts.materialize(torch.arange(len(pts)))
    want = _reference(m, vecs, [(X, y)], loss)  # one call over the whole data: torch's own weighted mean
    batched = [(X[i : i + 5], y[i : i + 5]) for i in range(0, 13, 5)]
    for s in ("loop", "functional", "stacked", "auto"):
        for points in (pts, vecs):
            for bs in (None, 2):
                got = evaluate_points(m, points, batched, loss_fn=loss, strategy=s, batch_size=bs)
                np.testing.assert_allclose(got["loss"], want, rtol=1e-10, atol=1e-12, err_msg=f"{s} {bs}")


# ----------------------------------------------------------------------------- strategy="stacked" says why not
def test_stacked_refusal_names_its_reason():
    """The refusal listed every possible cause (control flow, weight_norm hooks, tuple outputs) whatever the model.

    It now says which: fx's own error for an untraceable model, a probe-point difference for a traced one.
    """

    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.fc(x)
            return -h if bool(h.sum() > 0) else h  # data-dependent branch

    (data,) = _data((4,), cut=13)  # reparametrized_net: weight_norm's pre-hook sets the weight the trace took as is
    cases = (
        (Branchy().double(), r"torch.fx cannot trace it \(TraceError"),
        (reparametrized_net(), "its traced program differs from torch.func.functional_call"),
    )
    for m, reason in cases:
        with pytest.raises(ValueError, match=f"{type(m).__name__} is not one: {reason}"):
            evaluate_points(m, plane_points(m), data, strategy="stacked")
        got = evaluate_points(m, plane_points(m), data, metrics=("loss",))["loss"]  # "auto" takes the exact path
        pts = plane_points(m)
        np.testing.assert_allclose(got, _reference(m, pts.materialize(torch.arange(len(pts))), [data]), rtol=1e-10)


def test_tuple_outputs_are_read_by_the_output_rule_in_the_shorthand_as_in_the_problem():
    """A model returning a tuple: the Problem evaluates its first element, and the shorthand (which refused it,
    pointing to the Problem, until session 16) builds the same problem."""
    from landscape import Problem

    class Pair(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.fc(x), x

    torch.manual_seed(4)
    m = Pair().double()
    (data,) = _data((4,), cut=13)
    pts = plane_points(m)
    got = evaluate_points(Problem(m, data), pts, metrics=("loss",))["loss"]
    want = _reference(m, pts.materialize(torch.arange(len(pts))), [data], lambda o, y: F.cross_entropy(o[0], y))
    np.testing.assert_allclose(got, want, rtol=1e-10)
    np.testing.assert_array_equal(evaluate_points(m, pts, data, metrics=("loss",))["loss"], got)


# ----------------------------------------------------------------------------- one value under two names
class _Aliases(nn.Module):
    """A value read under two names: through a Dropout (which returns its input), and after a user's in-place op.

    The stacked executor overwrites a value in place when its node has one reader; an alias node (Dropout, an
    in-place op's result) counted only its own readers, so ``relu`` overwrote ``h`` for its other reader too.
    The probe saw the difference and the model was refused (``"auto"`` fell back to the slow path).
    """

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.drop, self.out = nn.Linear(4, 5), nn.Dropout(0.5), nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        a = torch.relu(self.drop(h)) + h  # Dropout returns h itself
        r = F.leaky_relu(a, 0.1, inplace=True)  # r and a: one tensor
        return self.out(torch.tanh(r) + a)


def test_aliased_values_are_not_overwritten_in_place():
    torch.manual_seed(5)
    _check(_Aliases().double(), _data((4,)))


class _Axis(nn.Module):
    """``axis=``, NumPy's spelling of ``dim=`` that torch accepts: the stacked handlers read ``dim`` only."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.out = nn.Linear(4, 6), nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        h = h - h.mean(axis=1, keepdim=True)
        h = torch.stack([h, torch.tanh(h)], axis=-1).sum(-1)
        return self.out(torch.cat([h, 2 * h], axis=1))


def test_axis_keyword_of_reductions_and_concatenations():
    torch.manual_seed(6)
    _check(_Axis().double(), _data((4,)))


def test_a_loss_without_reduction_is_refused_by_name():
    """``reduction="none"`` gave a reshape error from inside the engine; a Problem names the contract, so does it."""
    torch.manual_seed(7)
    m = nn.Linear(4, 2).double()
    (data,) = _data((4,), cut=13)
    pair = (data[0], torch.randn(13, 2, dtype=torch.float64))
    for s in ("loop", "auto"):
        with pytest.raises(ValueError, match=r"returned Tensor of shape \(13, 2\); it must return a scalar tensor"):
            evaluate_points(m, plane_points(m), pair, loss_fn=nn.MSELoss(reduction="none"), strategy=s)


# ----------------------------------------------------------------------------- a basis less precise than the model
def test_a_float32_basis_for_a_float64_model_gives_its_rounded_points():
    """A point of :class:`AffinePoints` is its combination rounded to the basis dtype; the first-layer maps
    combined the basis in the model's float64 without that rounding (~1e-9 relative off ``"loop"``).
    """
    torch.manual_seed(8)
    m32 = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    c = torch.nn.utils.parameters_to_vector(m32.parameters()).detach()
    g = torch.Generator().manual_seed(0)
    basis = torch.stack([c, torch.randn(c.shape, generator=g), torch.randn(c.shape, generator=g)])  # float32
    pts = AffinePoints(basis, np.array([[1, 0.3, -0.7], [1, 0.1234567, 0.7654321], [0.5, 0.5, 0.0]]))
    m = m32.double()
    (data,) = _data((4,), n=50, cut=50)
    want = _reference(m, pts.materialize(torch.arange(len(pts))).double(), [data])
    for s in ("loop", "functional", "stacked", "auto"):
        got = evaluate_points(m, pts, data, strategy=s, metrics=("loss",))["loss"]
        np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=s)
