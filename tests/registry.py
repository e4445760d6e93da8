"""A registry of tiny float64 models, their data and losses, shared by the brute-force tests (issue 20).

In the manner of curvlinops' test cases: each entry of :data:`CASES` is a factory that builds, from a
fixed seed, one :class:`Case`: the model, the data as a :class:`landscape.Problem` takes it, the loss,
and the *raw pieces* a test needs to write its own reference without the package (all samples as one
batch of positional / keyword inputs, the targets, and the batch-mean loss as a plain function of the
outputs). The cases cover the layer kinds the analyzers must handle:

==================  =====================================================================================
``mlp_tanh``        Linear-Tanh-Linear, cross-entropy, data read in batches of 10 (batching must not matter)
``token_mlp``       a Linear on token inputs ``(N, T, F)``, Flatten, Linear (channels last, then flattened)
``cnn_bn``          Conv-BatchNorm-ReLU-AvgPool-Linear, BatchNorm in eval mode with non-trivial running stats
``resnet_block``    Conv stem and one residual block (two Conv-BatchNorm, an identity add), train-mode flags
``attention``       ``nn.MultiheadAttention`` with a residual, mean-pooled: the math-SDPA path of second order
``lstm``            ``nn.LSTM`` classifier reading the last hidden state
``frozen_closure``  an MLP with one frozen tensor, mapping batches, a closure loss returning ``(sum, count)``
==================  =====================================================================================

Every case is tiny (under 400 parameters, 24 samples) so dense Hessians are cheap references.

Adding a case: write a factory returning a :class:`Case` and add it to :data:`CASES`; every test of
``tests/test_registry.py`` (through the ``registry_case`` fixture of ``conftest.py``) picks it up. Set
``perm_error`` to the module name the permutation spec must refuse when the model has no derivable spec.

Example:
    >>> case = make_case("mlp_tanh")
    >>> case.problem().numel == sum(p.numel() for p in case.model.parameters())
    True
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from landscape import Problem

__all__ = ["Case", "CASES", "make_case", "reference_outputs", "reference_loss", "model_state", "assert_same_state"]

N = 24  # samples per case


@dataclasses.dataclass
class Case:
    """One registry entry.

    Attributes:
        name: Case id.
        model: The float64 network (the tests check it is never modified).
        data: The data in the form given to :class:`~landscape.Problem`.
        loss: The loss given to :class:`~landscape.Problem` (a name, ``(outputs, targets)`` or a closure).
        inputs: All samples as one batch of positional model inputs (reference computations).
        kwargs: All samples as one batch of keyword model inputs.
        targets: All targets ``(N,)``.
        ref_loss: Batch-mean loss ``(outputs (N, C), targets (N,)) -> scalar`` equal to the case's loss.
        problem_kwargs: Extra keywords of the :class:`~landscape.Problem` (batch size, BatchNorm mode).
        perm_error: ``None`` if a permutation spec must be derivable, else a name the
            :class:`~landscape.PermutationSpecError` message must contain (the unsupported module).
        has_bn: Whether the model has BatchNorm (permutations are checked in train and eval mode).
        closure: Whether the loss is a closure (analyzers needing ``(outputs, targets)`` refuse it).
    """

    name: str
    model: nn.Module
    data: Any
    loss: Any
    inputs: tuple[Tensor, ...]
    kwargs: dict[str, Tensor]
    targets: Tensor
    ref_loss: Callable[[Tensor, Tensor], Tensor]
    problem_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    perm_error: str | None = None
    has_bn: bool = False
    closure: bool = False

    def problem(self, **kw: Any) -> Problem:
        """A fresh :class:`~landscape.Problem` of this case (``kw`` overrides the case's options)."""
        return Problem(self.model, self.data, self.loss, **{**self.problem_kwargs, **kw})

    def param_names(self) -> list[str]:
        """Names of the floating parameters in registration order (the flat vector's order)."""
        return [k for k, p in self.model.named_parameters() if p.is_floating_point()]

    def unflatten(self, theta: Tensor) -> dict[str, Tensor]:
        """A flat ``(D,)`` vector as a parameter dict, written here (not the package's layout)."""
        out, i = {}, 0
        for k, p in self.model.named_parameters():
            out[k] = theta[i : i + p.numel()].view_as(p)
            i += p.numel()
        assert i == theta.numel(), f"vector of {theta.numel()} entries for {i} parameters"
        return out

    def theta0(self) -> Tensor:
        """The model's flat parameter vector ``(D,)`` (a copy)."""
        return torch.cat([p.detach().reshape(-1) for p in self.model.parameters()]).clone()


def reference_outputs(case: Case, theta: Tensor, *, bn_train: bool = False) -> Tensor:
    """Outputs ``(N, C)`` of all samples at ``theta``, by ``torch.func.functional_call`` on a private copy.

    BatchNorm uses running statistics (``bn_train=False``) or the whole data's batch statistics.
    """
    net = copy.deepcopy(case.model).train(bn_train)
    state = {**{k: v.detach().clone() for k, v in net.named_buffers()}, **case.unflatten(theta)}
    with sdpa_kernel(SDPBackend.MATH):  # the one attention kernel with forward- and double-backward
        return torch.func.functional_call(net, state, case.inputs, case.kwargs)


def reference_loss(case: Case, theta: Tensor) -> Tensor:
    """Mean loss over all samples at ``theta`` (one batch; BatchNorm in eval mode)."""
    return case.ref_loss(reference_outputs(case, theta), case.targets)


# --------------------------------------------------------------------------- models
class _ResBlockNet(nn.Module):
    def __init__(self, c: int = 4, classes: int = 3) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, c, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(c)
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(c)
        self.head = nn.Linear(c, classes)

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.bn0(self.stem(x)))
        r = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(h)))))
        h = F.relu(h + r)  # the residual add: stem and block share one permutation
        return self.head(h.mean(dim=(2, 3)))


class _AttentionNet(nn.Module):
    def __init__(self, d_in: int = 3, d: int = 8, heads: int = 2, classes: int = 3) -> None:
        super().__init__()
        self.embed = nn.Linear(d_in, d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.head = nn.Linear(d, classes)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.tanh(self.embed(x))
        a, _ = self.attn(h, h, h, need_weights=False)
        return self.head((h + a).mean(dim=1))


class _LSTMNet(nn.Module):
    def __init__(self, d_in: int = 3, hidden: int = 5, classes: int = 3) -> None:
        super().__init__()
        self.lstm = nn.LSTM(d_in, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: Tensor) -> Tensor:
        _, (h, _) = self.lstm(x)
        return self.head(h[-1])


class _FrozenMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 6)
        self.fc2 = nn.Linear(6, 3)
        self.fc1.bias.requires_grad_(False)  # frozen: still in the flat vector (layout covers all tensors)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(torch.tanh(self.fc1(x)))


def _randomize_bn(model: nn.Module, gen: torch.Generator) -> None:
    """Non-trivial affine parameters and running statistics, so eval and train mode differ and writes show."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(1 + 0.3 * torch.randn(m.weight.shape, generator=gen, dtype=m.weight.dtype))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=gen, dtype=m.bias.dtype))
                m.running_mean.copy_(0.3 * torch.randn(m.running_mean.shape, generator=gen, dtype=torch.float64))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen, dtype=torch.float64))
                m.num_batches_tracked.fill_(5)


def _labels(gen: torch.Generator, classes: int = 3) -> Tensor:
    return torch.randint(0, classes, (N,), generator=gen)


# --------------------------------------------------------------------------- the cases
def _mlp_tanh() -> Case:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(100)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    x, y = torch.randn(N, 4, generator=gen, dtype=torch.float64), _labels(gen)
    return Case(
        "mlp_tanh", model, (x, y), "cross_entropy", (x,), {}, y, F.cross_entropy, problem_kwargs={"batch_size": 10}
    )


def _token_mlp() -> Case:
    torch.manual_seed(6)
    gen = torch.Generator().manual_seed(106)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Flatten(), nn.Linear(20, 3)).double()
    x, y = torch.randn(N, 5, 3, generator=gen, dtype=torch.float64), _labels(gen)
    return Case("token_mlp", model, (x, y), "cross_entropy", (x,), {}, y, F.cross_entropy, perm_error="Flatten")


def _cnn_bn() -> Case:
    torch.manual_seed(1)
    gen = torch.Generator().manual_seed(101)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(27, 3)
    ).double()
    _randomize_bn(model, gen)
    model.eval()
    x, y = torch.randn(N, 1, 6, 6, generator=gen, dtype=torch.float64), _labels(gen)
    return Case("cnn_bn", model, (x, y), "cross_entropy", (x,), {}, y, F.cross_entropy, has_bn=True)


def _resnet_block() -> Case:
    torch.manual_seed(2)
    gen = torch.Generator().manual_seed(102)
    model = _ResBlockNet().double()
    _randomize_bn(model, gen)
    model.train()  # flags the analyzers must restore; the Problem still evaluates in its bn_mode ("eval")
    x, y = torch.randn(N, 1, 4, 4, generator=gen, dtype=torch.float64), _labels(gen)
    return Case(
        "resnet_block",
        model,
        (x, y),
        "cross_entropy",
        (x,),
        {},
        y,
        F.cross_entropy,
        problem_kwargs={"batch_size": 12},
        has_bn=True,
    )


def _attention() -> Case:
    torch.manual_seed(3)
    gen = torch.Generator().manual_seed(103)
    model = _AttentionNet().double().eval()
    x, y = torch.randn(N, 5, 3, generator=gen, dtype=torch.float64), _labels(gen)
    return Case("attention", model, (x, y), "cross_entropy", (x,), {}, y, F.cross_entropy, perm_error="attn")


def _lstm() -> Case:
    torch.manual_seed(4)
    gen = torch.Generator().manual_seed(104)
    model = _LSTMNet().double().eval()
    x, y = torch.randn(N, 4, 3, generator=gen, dtype=torch.float64), _labels(gen)
    return Case("lstm", model, (x, y), "cross_entropy", (x,), {}, y, F.cross_entropy)


def _closure_loss(model: Any, batch: dict[str, Tensor]) -> tuple[Tensor, int]:
    """Sum of the cross-entropy over the batch and its sample count (the ``(sum, count)`` closure form)."""
    out = model(x=batch["x"])
    return F.cross_entropy(out, batch["labels"], reduction="sum"), int(batch["labels"].shape[0])


def _frozen_closure() -> Case:
    torch.manual_seed(5)
    gen = torch.Generator().manual_seed(105)
    model = _FrozenMLP().double()
    x, y = torch.randn(N, 4, generator=gen, dtype=torch.float64), _labels(gen)
    batches = [{"x": x[i : i + 8], "labels": y[i : i + 8]} for i in range(0, N, 8)]
    return Case("frozen_closure", model, batches, _closure_loss, (), {"x": x}, y, F.cross_entropy, closure=True)


CASES: dict[str, Callable[[], Case]] = {
    "mlp_tanh": _mlp_tanh,
    "token_mlp": _token_mlp,
    "cnn_bn": _cnn_bn,
    "resnet_block": _resnet_block,
    "attention": _attention,
    "lstm": _lstm,
    "frozen_closure": _frozen_closure,
}


def make_case(name: str) -> Case:
    """A freshly built case (same seed, so the same weights and data every time)."""
    if name not in CASES:
        raise KeyError(f"unknown case {name!r}; valid: {sorted(CASES)}")
    return CASES[name]()


# --------------------------------------------------------------------------- no mutation
def _noop_hook(*_: Any) -> None:
    return None


def add_hooks(model: nn.Module) -> None:
    """A forward and a forward-pre hook on the model (hook dicts that an analyzer must leave alone)."""
    model.register_forward_hook(_noop_hook)
    model.register_forward_pre_hook(_noop_hook)


def model_state(model: nn.Module) -> dict[str, Any]:
    """Everything an analyzer must not change: tensors (cloned), flags, gradients, hooks, identities."""
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()},
        "ids": {k: id(v) for k, v in model.state_dict(keep_vars=True).items()},
        "requires_grad": {k: p.requires_grad for k, p in model.named_parameters()},
        "grad": {k: None if p.grad is None else p.grad.clone() for k, p in model.named_parameters()},
        "training": {k: m.training for k, m in model.named_modules()},
        "hooks": {
            k: (tuple(m._forward_hooks), tuple(m._forward_pre_hooks), tuple(m._backward_hooks))
            for k, m in model.named_modules()
        },
    }


def assert_same_state(model: nn.Module, before: dict[str, Any]) -> None:
    """Bitwise the same parameters and buffers, same flags, gradients, hooks and tensor identities."""
    after = model_state(model)
    for key in ("ids", "requires_grad", "training", "hooks"):
        assert after[key] == before[key], f"model {key} changed"
    assert after["state"].keys() == before["state"].keys()
    for k, v in before["state"].items():
        w = after["state"][k]
        assert v.dtype == w.dtype and torch.equal(v, w), f"tensor {k!r} changed"
    for k, g in before["grad"].items():
        h = after["grad"][k]
        assert (g is None) == (h is None) and (g is None or torch.equal(g, h)), f"gradient of {k!r} changed"
