"""Which operations the stacked executor vectorizes, and how (private tables of the tracer and handlers).

Operations are grouped by how a handler treats them (elementwise of one tensor, of several, with axis
arguments, pooling, convolution), whether they are spelled as ``torch``/``F`` functions, tensor methods or
``nn`` modules: so ``nn.ReLU()``, ``F.relu`` and ``x.relu()`` take the same path.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landscape.evaluate._kernels import tanh_, tanh_copy


def identity(x: Any, *a: Any, **k: Any) -> Any:
    return x


# Nondecreasing functions commute with max pooling: pool(f(x)) == f(pool(x)) (4x fewer evaluations of f).
MONOTONE_FN: set[Any] = {torch.relu, F.relu, torch.tanh, F.tanh, torch.sigmoid, F.sigmoid, F.relu6}
MONOTONE: set[Any] = MONOTONE_FN | {"relu", "tanh", "sigmoid"}
UNARY_FN: set[Any] = MONOTONE_FN | {
    F.gelu,
    F.silu,
    F.elu,
    F.leaky_relu,
    F.hardtanh,
    F.softplus,
    F.mish,
    F.hardswish,
    F.hardsigmoid,
    F.selu,
    F.celu,
    F.softsign,
    F.tanhshrink,
    F.logsigmoid,
    torch.exp,
    torch.neg,
    torch.abs,
    torch.square,
    torch.sqrt,
    torch.rsqrt,
    torch.log,
    torch.sin,
    torch.cos,
    torch.erf,
    torch.clamp,
    torch.clip,
    torch.pow,
    torch.reciprocal,
    torch.sign,
    operator.neg,
    operator.pos,
    operator.abs,
    torch.nan_to_num,
}
DROPOUT_FN = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout}
UNARY_METHOD = {
    "relu",
    "tanh",
    "sigmoid",
    "exp",
    "neg",
    "abs",
    "square",
    "sqrt",
    "rsqrt",
    "log",
    "sin",
    "cos",
    "erf",
    "clamp",
    "clip",
    "pow",
    "reciprocal",
    "sign",
    "float",
    "double",
    "half",
    "to",
    "contiguous",
    "clone",
    "detach",
    "type_as",
    "nan_to_num",
}
INPLACE_METHOD = {
    "relu_": "relu",
    "tanh_": "tanh",
    "sigmoid_": "sigmoid",
    "clamp_": "clamp",
    "exp_": "exp",
    "neg_": "neg",
    "abs_": "abs",
    "pow_": "pow",
    "sqrt_": "sqrt",
}
BINARY_FN = {
    operator.add,
    operator.sub,
    operator.mul,
    operator.truediv,
    operator.iadd,
    operator.isub,
    operator.imul,
    operator.itruediv,
    torch.add,
    torch.sub,
    torch.mul,
    torch.div,
    torch.maximum,
    torch.minimum,
    torch.where,
    torch.addcmul,
    torch.true_divide,
    torch.rsub,
}
BINARY_METHOD = {
    "add",
    "sub",
    "mul",
    "div",
    "true_divide",
    "maximum",
    "minimum",
    "add_",
    "sub_",
    "mul_",
    "div_",
    "addcmul",
    "rsub",
}
OWN_INPLACE: dict[Any, Callable[[Tensor], Tensor]] = {
    torch.relu: torch.relu_,
    F.relu: torch.relu_,
    torch.tanh: tanh_,
    F.tanh: tanh_,
    torch.sigmoid: torch.sigmoid_,
    F.sigmoid: torch.sigmoid_,
    "relu": torch.relu_,
    "tanh": tanh_,
    "sigmoid": torch.sigmoid_,
}
FAST_OUT: dict[Any, Callable[[Tensor], Tensor]] = {torch.tanh: tanh_copy, F.tanh: tanh_copy, "tanh": tanh_copy}
# Values take an instance of their key (not expressible per entry in a dict type, hence Any).
MODULE_UNARY: dict[type, Callable[[Any], tuple[Any, dict[str, Any], bool]]] = {
    nn.ReLU: lambda m: (F.relu, {}, True),
    nn.Tanh: lambda m: (torch.tanh, {}, True),
    nn.Sigmoid: lambda m: (torch.sigmoid, {}, True),
    nn.ReLU6: lambda m: (F.relu6, {}, True),
    nn.LeakyReLU: lambda m: (F.leaky_relu, {"negative_slope": m.negative_slope}, m.negative_slope >= 0),
    nn.ELU: lambda m: (F.elu, {"alpha": m.alpha}, m.alpha >= 0),
    nn.Hardtanh: lambda m: (F.hardtanh, {"min_val": m.min_val, "max_val": m.max_val}, m.min_val <= m.max_val),
    nn.GELU: lambda m: (F.gelu, {"approximate": m.approximate}, False),
    nn.SiLU: lambda m: (F.silu, {}, False),
    nn.Mish: lambda m: (F.mish, {}, False),
    nn.Softplus: lambda m: (F.softplus, {"beta": m.beta, "threshold": m.threshold}, m.beta > 0),
    nn.Hardswish: lambda m: (F.hardswish, {}, False),
    nn.Hardsigmoid: lambda m: (F.hardsigmoid, {}, True),
    nn.SELU: lambda m: (F.selu, {}, True),
    nn.CELU: lambda m: (F.celu, {"alpha": m.alpha}, m.alpha > 0),
    nn.Softsign: lambda m: (F.softsign, {}, True),
    nn.LogSigmoid: lambda m: (F.logsigmoid, {}, True),
    nn.Identity: lambda m: (identity, {}, True),
    nn.Dropout: lambda m: (identity, {}, True),
    nn.Dropout1d: lambda m: (identity, {}, True),
    nn.Dropout2d: lambda m: (identity, {}, True),
    nn.Dropout3d: lambda m: (identity, {}, True),
    nn.AlphaDropout: lambda m: (identity, {}, True),
}
CONV_FN = {torch.conv1d: 1, torch.conv2d: 2, torch.conv3d: 3, F.conv1d: 1, F.conv2d: 2, F.conv3d: 3}
CONV_MOD = {nn.Conv1d: F.conv1d, nn.Conv2d: F.conv2d, nn.Conv3d: F.conv3d}
POOL_FN = {
    F.avg_pool2d: 2,
    F.adaptive_avg_pool2d: 2,
    F.adaptive_max_pool2d: 2,
    F.max_pool1d: 1,
    F.avg_pool1d: 1,
    F.adaptive_avg_pool1d: 1,
    F.lp_pool2d: 2,
    F.max_pool3d: 3,
    F.avg_pool3d: 3,
    F.adaptive_avg_pool3d: 3,
    torch.max_pool2d: 2,
}
# Pooling modules (other than nn.MaxPool2d, which has its own handler) by spatial dimensions.
POOL_MOD: dict[type, int] = {
    nn.AvgPool1d: 1,
    nn.MaxPool1d: 1,
    nn.AdaptiveAvgPool1d: 1,
    nn.AvgPool2d: 2,
    nn.AdaptiveAvgPool2d: 2,
    nn.AdaptiveMaxPool2d: 2,
    nn.LPPool2d: 2,
    nn.AvgPool3d: 3,
    nn.MaxPool3d: 3,
    nn.AdaptiveAvgPool3d: 3,
}
REDUCE = {"mean", "sum", "amax", "amin", "prod", "logsumexp", "std", "var", "norm"}
SOFTMAX = {
    F.softmax: "softmax",
    F.log_softmax: "log_softmax",
    torch.softmax: "softmax",
    torch.log_softmax: "log_softmax",
}
