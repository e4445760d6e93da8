"""Worker for the data-sharding tests: run under ``torchrun --nproc_per_node 2`` (gloo), or alone for the reference.

Usage: ``python tests/_shard_worker.py OUT_DIR`` (one process: the reference) or under torchrun (each rank
holds only its share of the data). Writes ``OUT_DIR/rank{r}.npz`` (or ``single.npz``) with the results.
"""

from __future__ import annotations

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
    return out


def main() -> None:
    folder = sys.argv[1]
    if len(sys.argv) > 2 and sys.argv[2] == "fsdp":
        fsdp_main(folder)
    elif "RANK" in os.environ:
        torch.distributed.init_process_group("gloo")
        try:
            res = compute("split")
            rank = distributed.rank_world()[0]
            np.savez(os.path.join(folder, f"rank{rank}.npz"), **res)
            torch.distributed.barrier()  # leave together (a rank tearing gloo down early can abort the other)
        finally:
            torch.distributed.destroy_process_group()
    else:
        np.savez(os.path.join(folder, "single.npz"), **compute("none"))


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
