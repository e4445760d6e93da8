"""Worker for the two-process gloo test of the evaluation engine (spawned by tests/test_evaluate.py)."""

import numpy as np
import torch

from landscape.evaluate import evaluate_points


def compute() -> dict[str, np.ndarray]:
    """Evaluate a few cases; under an initialized process group the engine shards and gathers."""
    from tests.helpers import batches, make, plane_points

    torch.set_num_threads(1)
    out = {}
    m, X, y = make("mlp")
    r = evaluate_points(m, plane_points(m, 5, 3), batches(X, y), strategy="stacked", chunk_size=2)
    out.update(mlp_stacked_loss=r["loss"], mlp_stacked_accuracy=r["accuracy"])
    m, X, y = make("bn")
    pts = plane_points(m, 3, 3)
    r = evaluate_points(m, pts, (X, y), strategy="functional", metrics=("loss", "outputs"))
    out.update(bn_functional_loss=r["loss"], bn_functional_outputs=r["outputs"])
    gen = (v for v in pts.materialize(torch.arange(len(pts))))  # a lazy iterable of unknown length
    out["bn_iterable_loss"] = evaluate_points(m, gen, (X, y), strategy="loop", metrics=("loss",))["loss"]
    return out


def run(rank: int, world: int, port: int, folder: str) -> None:
    """Join a gloo group on loopback, compute, and save this rank's (gathered) results."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        res = compute()
        np.savez(f"{folder}/rank{rank}.npz", **res)
    finally:
        dist.destroy_process_group()
