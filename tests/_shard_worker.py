"""Worker for the data-sharding tests: run under ``torchrun --nproc_per_node 2`` (gloo), or alone for the reference.

Usage: ``python tests/_shard_worker.py OUT_DIR`` (one process: the reference) or under torchrun (each rank
holds only its share of the data). Writes ``OUT_DIR/rank{r}.npz`` (or ``single.npz``) with the results.
"""

from __future__ import annotations

import datetime
import os
import sys

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import landscape  # noqa: E402
from landscape import distributed  # noqa: E402

N = 96


class Counting(torch.utils.data.Dataset):
    """A map-style dataset that records which samples were read (to check each rank reads only its share)."""

    def __init__(self, X: torch.Tensor, y: torch.Tensor) -> None:
        self.X, self.y = X, y
        self.read: set[int] = set()

    def __len__(self) -> int:
        return len(self.X)

    def __getitem__(self, i: int):
        self.read.add(int(i))
        return self.X[i], self.y[i]


def setup():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(N, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (N,), generator=g)
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    return model, X, y


def compute(shard: str) -> dict[str, np.ndarray]:
    torch.set_num_threads(1)
    model, X, y = setup()
    ds = Counting(X, y)
    prob = landscape.Problem(model, ds, "cross_entropy", batch_size=10, shard=shard)
    out: dict[str, np.ndarray] = {}
    theta = prob.theta0
    g = torch.Generator().manual_seed(3)
    v = torch.randn(prob.numel, 2, generator=g, dtype=torch.float64)
    out["loss"] = prob.loss().numpy()
    out["grad"] = prob.grad().numpy()
    out["hvp"] = prob.hvp(v).numpy()
    pts = theta[None] + 0.1 * torch.randn(4, prob.numel, generator=g, dtype=torch.float64)
    ev = prob.evaluate(pts, ("loss", "accuracy", "outputs"), chunk_size=3)
    out.update({f"eval_{k}": v for k, v in ev.items()})
    out["total_samples"] = np.array(prob.total_samples)
    out["read"] = np.array(sorted(ds.read))
    # the analyzers on the sharded problem
    grid = np.linspace(-1.0, 1.0, 3)
    plane = landscape.random_plane(prob, xs=grid, ys=grid, seed=0)
    out.update({f"plane_{k}": np.asarray(v) for k, v in plane.metrics.items()})
    far = theta + 0.3 * torch.randn(prob.numel, generator=g, dtype=torch.float64)
    dist = landscape.functional_distance(prob, theta, far)
    out["distance_rms"], out["distance_disagreement"] = np.asarray(dist.rms), np.asarray(dist.disagreement)
    pairs = landscape.hessian_eigenpairs(prob, 3)
    out["eig_values"] = pairs.values.numpy()
    out["eig_vectors_abs"] = pairs.vectors.abs().numpy()  # signs are arbitrary but equal on every rank
    spec = landscape.hessian_spectrum(prob, n_probes=2, steps=12, top_k=2)
    out["slq_nodes"], out["slq_weights"] = np.asarray(spec.nodes), np.asarray(spec.weights)
    # tensors split by the problem
    prob2 = landscape.Problem(model, (X, y), "cross_entropy", batch_size=7, shard=shard)
    out["tensor_loss"] = prob2.loss().numpy()
    # a list of batches
    batches = [(X[i : i + 16], y[i : i + 16]) for i in range(0, N, 16)]
    out["list_grad"] = landscape.Problem(model, batches, "cross_entropy", shard=shard).grad().numpy()
    # a loader dropping its short last batch: the ranks share the samples one process reads (90 of 96)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=10, drop_last=True)
    prob4 = landscape.Problem(model, loader, "cross_entropy", shard=shard)
    out["drop_last_loss"], out["drop_last_samples"] = prob4.loss().numpy(), np.array(prob4.total_samples)
    # ignored labels in the first rank's share only: a weighted mean whose counts every rank must reduce
    yi = y.clone()
    yi[:10] = -100
    prob3 = landscape.Problem(model, (X, yi), torch.nn.functional.cross_entropy, batch_size=7, shard=shard)
    out["ignored_loss"] = prob3.loss().numpy()
    out["ignored_eval_loss"] = prob3.evaluate(pts, ("loss",))["loss"]
    out["ignored_eig_values"] = landscape.hessian_eigenpairs(prob3, 2).values.numpy()
    # 95 samples (not divisible by 2 ranks: shares of 48 and 47) under a weighted mean (class weights and ignored
    # labels) and under (sum, count) closures, one counting samples, one a unit of its own (labels other than 0)
    n = N - 1
    yw = y[:n].clone()
    yw[::7] = -100
    weights = torch.tensor([0.5, 2.0, 1.0], dtype=torch.float64)
    prob5 = landscape.Problem(model, (X[:n], yw), torch.nn.CrossEntropyLoss(weight=weights), batch_size=8, shard=shard)
    first_order(prob5, "uneven_weighted", out)
    out["uneven_weighted_eval_loss"] = prob5.evaluate(pts, ("loss",))["loss"]
    out["uneven_weighted_eig_values"] = landscape.hessian_eigenpairs(prob5, 2).values.numpy()
    first_order(landscape.Problem(model, (X[:n], y[:n]), sum_count, batch_size=8, shard=shard), "uneven_closure", out)
    prob6 = landscape.Problem(model, Counting(X[:n], y[:n]), nonzero_sum_count, batch_size=8, shard=shard)
    first_order(prob6, "uneven_tokens", out)
    out["uneven_tokens_eval_loss"] = prob6.evaluate(pts, ("loss",))["loss"]
    # a custom metric on the general path (data streamed: memory_budget=0) sees global sample indices
    streamed = landscape.Problem(model, Counting(X, y), "cross_entropy", batch_size=10, shard=shard, memory_budget=0)
    out["streamed_index_mean"] = landscape.evaluate_points(streamed, pts[:2], metrics=("loss", index_sum))["index_sum"]
    # the pure objective: the mean loss, or (sharded) a refusal naming the reduced alternatives
    try:
        out["objective"] = np.array(float(prob.objective()(theta)))
    except ValueError as e:
        out["objective"] = np.array(f"refused: {e}")
    # what each rank holds: its share of the samples (this rank's count, and the count over all ranks)
    held = [prob, prob2, prob4, prob5, prob6]
    out["held"] = np.array([[p.n_samples, p.total_samples] for p in held])
    return out


class OwnBatches(torch.utils.data.BatchSampler):
    """A batch sampler of a kind of its own (not a plain ``BatchSampler``): ``shard="split"`` strides its batches."""


def sum_count(model, batch):
    """A ``(sum, count)`` closure: the summed cross-entropy over the batch's samples, and their number."""
    x, t = batch
    return torch.nn.functional.cross_entropy(model(x), t, reduction="sum"), float(len(t))


def nonzero_sum_count(model, batch):
    """A ``(sum, count)`` closure over a unit other than samples: the cross-entropy of the labels other than 0."""
    x, t = batch
    keep = t != 0
    terms = torch.nn.functional.cross_entropy(model(x), t, reduction="none")
    return (terms * keep).sum(), float(keep.sum())


def index_sum(outputs: torch.Tensor, targets: torch.Tensor, start: int) -> torch.Tensor:
    """A custom metric: per point ``(P,)`` the sum of the batch's global sample indices (their mean: (N - 1) / 2)."""
    b = outputs.shape[1]
    return torch.full((outputs.shape[0],), float(sum(range(start, start + b))), dtype=torch.float64)


def first_order(prob: landscape.Problem, prefix: str, out: dict[str, np.ndarray]) -> None:
    """Loss, gradient and two HVPs of ``prob`` into ``out`` under ``prefix``."""
    v = torch.randn(prob.numel, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    out[f"{prefix}_loss"] = prob.loss().numpy()
    out[f"{prefix}_grad"] = prob.grad().numpy()
    out[f"{prefix}_hvp"] = prob.hvp(v).numpy()


def compute_empty(shard: str) -> dict[str, np.ndarray]:
    """Data with fewer samples (or batches) than ranks: under 2 ranks rank 1's share is empty."""
    from torch.utils.data import DataLoader, SequentialSampler, TensorDataset

    torch.set_num_threads(1)
    model, X, y = setup()
    out: dict[str, np.ndarray] = {}
    one = landscape.Problem(model, (X[:1], y[:1]), "cross_entropy", shard=shard)  # one sample
    first_order(one, "one", out)
    g = torch.Generator().manual_seed(4)
    pts = one.theta0[None] + 0.1 * torch.randn(3, one.numel, generator=g, dtype=torch.float64)
    ev = one.evaluate(pts, ("loss", "accuracy", "outputs"), chunk_size=2)
    out.update({f"one_eval_{k}": v for k, v in ev.items()})
    grid = np.linspace(-1.0, 1.0, 3)
    plane = landscape.random_plane(one, xs=grid, ys=grid, seed=0)  # the evaluation engine
    out["one_plane_loss"] = np.asarray(plane.metrics["loss"])
    out["one_eig_values"] = landscape.hessian_eigenpairs(one, 2).values.numpy()
    out["one_total_samples"] = np.array(one.total_samples)
    # shard="given": rank 0 given the one sample, rank 1 an empty tensor pair
    rank = distributed.rank_world()[0]
    given = (X[:1], y[:1]) if rank == 0 else (X[:0], y[:0])
    first_order(
        landscape.Problem(model, given, "cross_entropy", shard="given" if shard == "split" else shard), "given", out
    )
    # a batch sampler of its own dropping its short last batch leaves one batch of 3 (batch i to rank i % 2)
    ds = TensorDataset(X[:5], y[:5])
    loader = DataLoader(ds, batch_sampler=OwnBatches(SequentialSampler(ds), 3, drop_last=True))
    first_order(landscape.Problem(model, loader, "cross_entropy", shard=shard), "dropped", out)
    # a list of one batch, a (sum, count) closure
    first_order(landscape.Problem(model, [(X[:4], y[:4])], sum_count, shard=shard), "closure", out)
    # a weighted mean (class weights, an ignored label) over one batch of three
    yw = y[:3].clone()
    yw[0] = -100
    weighted = torch.nn.CrossEntropyLoss(weight=torch.tensor([0.5, 2.0, 1.0], dtype=torch.float64))
    wprob = landscape.Problem(model, [(X[:3], yw)], weighted, shard=shard)
    first_order(wprob, "weighted", out)
    out["weighted_eval_loss"] = wprob.evaluate(pts, ("loss",))["loss"]
    out["weighted_eig_values"] = landscape.hessian_eigenpairs(wprob, 2).values.numpy()
    # every rank empty: a loader of 3 samples in batches of 4 dropping its short batch reads nothing
    empty = DataLoader(TensorDataset(X[:3], y[:3]), batch_size=4, drop_last=True)
    try:
        landscape.Problem(model, empty, "cross_entropy", shard=shard).loss()
        out["all_empty"] = np.array("no error")
    except landscape.validation.InputError as e:
        out["all_empty"] = np.array(f"InputError: {e}")
    return out


def compute_shuffled(shard: str) -> dict[str, np.ndarray]:
    """Shuffling DataLoaders, unseeded, each rank drawing its own permutations (a seed of its own)."""
    from torch.utils.data import DataLoader, SubsetRandomSampler

    torch.set_num_threads(1)
    model, X, y = setup()
    torch.manual_seed(100 + distributed.rank_world()[0])  # unseeded loaders: every rank shuffles its own way
    n = N - 1  # not divisible by the world size
    out: dict[str, np.ndarray] = {}
    ds = Counting(X[:n], y[:n])
    loader = DataLoader(ds, batch_size=10, shuffle=True)
    prob = landscape.Problem(model, loader, "cross_entropy", shard=shard, memory_budget=0)  # re-read: reshuffled
    first_order(prob, "shuffled", out)
    out["shuffled_read"] = np.array(sorted(ds.read))
    out["shuffled_total_samples"] = np.array(prob.total_samples)
    # a subset of the samples in random order: the sum over that subset
    sub = DataLoader(TensorDatasetOf(X, y), batch_size=7, sampler=SubsetRandomSampler(range(3, N, 2)))
    first_order(landscape.Problem(model, sub, "cross_entropy", shard=shard), "subset", out)
    # a weighted mean (class weights, ignored labels in the first rank's share only) read shuffled
    yw = y[:n].clone()
    yw[:9] = -100
    weighted = torch.nn.CrossEntropyLoss(weight=torch.tensor([0.5, 2.0, 1.0], dtype=torch.float64))
    wl = DataLoader(TensorDatasetOf(X[:n], yw), batch_size=8, shuffle=True)
    first_order(landscape.Problem(model, wl, weighted, shard=shard), "weighted", out)
    return out


def compute_batchnorm(shard: str) -> dict[str, np.ndarray]:
    """A model with BatchNorm on each batch's statistics (``bn_mode="train"``): the batches must be one process's."""
    from torch.utils.data import DataLoader

    torch.set_num_threads(1)
    _, X, y = setup()
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Linear(5, 3)).double()
    out: dict[str, np.ndarray] = {}
    first_order(landscape.Problem(model, (X, y), bn_mode="train", batch_size=10, shard=shard), "pair", out)
    loader = DataLoader(TensorDatasetOf(X[:94], y[:94]), batch_size=8)  # 12 batches: 11 of 8, one of 6
    first_order(landscape.Problem(model, loader, bn_mode="train", shard=shard), "loader", out)
    return out


def TensorDatasetOf(*tensors: torch.Tensor) -> torch.utils.data.TensorDataset:
    return torch.utils.data.TensorDataset(*tensors)


MODES = {"": compute, "empty": compute_empty, "shuffled": compute_shuffled, "batchnorm": compute_batchnorm}


def main() -> None:
    folder = sys.argv[1]
    mode = sys.argv[2] if len(sys.argv) > 2 else ""
    if mode == "fsdp":
        fsdp_main(folder)
    elif "RANK" in os.environ:
        # a short timeout: a rank that fails before a collective must not leave the other waiting half an hour
        torch.distributed.init_process_group("gloo", timeout=datetime.timedelta(seconds=120))
        try:
            res = MODES[mode]("split")
            rank = distributed.rank_world()[0]
            np.savez(os.path.join(folder, f"{mode}rank{rank}.npz"), **res)
            torch.distributed.barrier()  # leave together (a rank tearing gloo down early can abort the other)
        finally:
            torch.distributed.destroy_process_group()
    else:
        np.savez(os.path.join(folder, f"{mode}single.npz"), **MODES[mode]("none"))


def fsdp_main(folder: str) -> None:
    """An FSDP2-wrapped model evaluated along a line equals the plain model (each rank gathers the weights once)."""
    from torch.distributed.fsdp import fully_shard

    torch.distributed.init_process_group("gloo")
    try:
        torch.set_num_threads(1)
        model, X, y = setup()
        ref = landscape.Problem(model, (X, y), "cross_entropy")
        line = torch.linspace(-0.5, 1.5, 7, dtype=torch.float64)[:, None]
        d = torch.randn(ref.numel, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
        pts = ref.theta0[None] + line * d[None]
        want = ref.evaluate(pts, ("loss",))["loss"]
        plain = setup()[0]
        for layer in (model[0], model[2]):
            fully_shard(layer)
        fully_shard(model)
        try:
            landscape.Problem(model, (X, y), "cross_entropy")
            refused = ""
        except landscape.validation.InputError as e:
            refused = str(e)
        # the documented recipe: a plain copy with the full state dict, data still sharded
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        plain.load_state_dict(get_model_state_dict(model, options=StateDictOptions(full_state_dict=True)))
        prob = landscape.Problem(plain, (X, y), "cross_entropy", shard="split")
        got = prob.evaluate(pts, ("loss",))["loss"]
        rank = distributed.rank_world()[0]
        np.savez(os.path.join(folder, f"fsdp{rank}.npz"), want=want, got=got, refused=np.array(refused))
        torch.distributed.barrier()
    finally:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
