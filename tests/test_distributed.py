"""Data sharding under ``torchrun --nproc_per_node 2`` (gloo): every sum all-reduced equals one process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from landscape.distributed import all_gather_rows, all_reduce_sum, loader_shard_bounds, shard_bounds

ROOT = Path(__file__).resolve().parents[1]
N_SHARD = 96  # samples of _shard_worker.py's data


def _torchrun(args: list[str]) -> subprocess.CompletedProcess:
    """``torchrun --standalone`` (it picks a free rendezvous port itself: no race with other processes' ports).

    Run once more on failure: a loaded machine can abort a gloo worker during start-up or teardown
    (seen: SIGABRT "terminate called without an active exception"); a real failure fails twice.
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        first = r
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            r.stderr = f"first attempt:\n{first.stdout[-1500:]}{first.stderr[-1500:]}\nsecond attempt:\n{r.stderr}"
    return r


def _run(script: str, folder: Path, nproc: int, mode: str = "") -> None:
    args = [str(ROOT / "tests" / script), str(folder), *([mode] if mode else [])]
    if nproc > 1:
        r = _torchrun(args)
    else:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        r = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


@pytest.fixture(scope="module")
def shard_results(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shard")
    _run("_shard_worker.py", folder, 1)
    _run("_shard_worker.py", folder, 2)
    load = lambda name: dict(np.load(folder / name))  # noqa: E731
    return load("single.npz"), [load(f"rank{r}.npz") for r in range(2)]


def test_shard_bounds_partition():
    for n in range(0, 23):
        for world in range(1, 5):
            parts = [shard_bounds(n, r, world) for r in range(world)]
            assert parts[0][0] == 0 and parts[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
            sizes = [hi - lo for lo, hi in parts]
            assert max(sizes) - min(sizes) <= 1


def test_collectives_are_identity_without_a_group():
    import torch

    t = [torch.arange(3.0), torch.tensor(2, dtype=torch.int64)]
    assert all(a is b for a, b in zip(all_reduce_sum(t), t))
    assert all_gather_rows(t[0]) is t[0]


KEYS = [
    "loss",
    "grad",
    "hvp",
    "eval_loss",
    "eval_accuracy",
    "eval_outputs",
    "tensor_loss",
    "list_grad",
    "drop_last_loss",
    "drop_last_samples",
    "plane_loss",
    "plane_accuracy",
    "distance_rms",
    "distance_disagreement",
    "eig_values",
    "eig_vectors_abs",
    "slq_nodes",
    "slq_weights",
    "ignored_loss",
    "ignored_eval_loss",
    "ignored_eig_values",
    *(f"uneven_{kind}_{q}" for kind in ("weighted", "closure", "tokens") for q in ("loss", "grad", "hvp")),
    "uneven_weighted_eval_loss",
    "uneven_weighted_eig_values",
    "uneven_tokens_eval_loss",
    "streamed_index_mean",
]


@pytest.mark.slow
@pytest.mark.parametrize("key", KEYS)
def test_sharded_sums_equal_one_process(shard_results, key):
    single, ranks = shard_results
    for r in ranks:
        np.testing.assert_allclose(r[key], single[key], rtol=1e-6, atol=1e-12)
        np.testing.assert_array_equal(r[key], ranks[0][key])  # every rank holds the same answer


@pytest.mark.slow
def test_custom_metrics_see_global_sample_indices_on_the_general_path(shard_results):
    # The engine's general path (streamed data here) passed each rank's own sample indices (23.5 = (48 - 1) / 2)
    single, ranks = shard_results
    np.testing.assert_allclose(single["streamed_index_mean"], (N_SHARD - 1) / 2)
    for r in ranks:
        np.testing.assert_allclose(r["streamed_index_mean"], (N_SHARD - 1) / 2)


@pytest.mark.slow
def test_the_pure_objective_is_refused_on_sharded_data(shard_results):
    # Problem.objective() summed this rank's batches over the count of all ranks: each rank's share of the mean
    # (about half of it), silently. It cannot all-reduce inside torch.func transforms, so it refuses.
    single, ranks = shard_results
    np.testing.assert_allclose(float(single["objective"]), float(single["loss"]), rtol=1e-12)
    for r in ranks:
        assert str(r["objective"]).startswith("refused") and "grad" in str(r["objective"])


@pytest.mark.slow
def test_each_rank_reads_only_its_share(shard_results):
    single, ranks = shard_results
    n = len(single["read"])
    assert int(ranks[0]["total_samples"]) == n == int(single["total_samples"])
    reads = [set(r["read"].tolist()) for r in ranks]
    assert all(len(s) <= 0.55 * n for s in reads)
    assert reads[0].isdisjoint(reads[1]) and len(reads[0] | reads[1]) == n
    # what each rank holds (dataset, tensors, a loader dropping its short batch, 95 samples twice): about half
    for r in ranks:
        local, total = r["held"].T
        assert all(local <= 0.55 * total)
    np.testing.assert_array_equal(ranks[0]["held"][:, 0] + ranks[1]["held"][:, 0], single["held"][:, 0])


@pytest.mark.slow
def test_fsdp2_model_is_refused_and_the_documented_recipe_matches(tmp_path):
    r = _torchrun([str(ROOT / "tests" / "_shard_worker.py"), str(tmp_path), "fsdp"])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for rank in range(2):
        res = np.load(tmp_path / f"fsdp{rank}.npz")
        assert "FSDP2" in str(res["refused"]) and "full_state_dict" in str(res["refused"])
        np.testing.assert_allclose(res["got"], res["want"], rtol=1e-6, atol=1e-12)


def _mode_results(tmp_path_factory, mode: str):
    """``(one process's results, [each rank's])`` of ``_shard_worker.py``'s ``mode``."""
    folder = tmp_path_factory.mktemp(mode)
    _run("_shard_worker.py", folder, 1, mode)
    _run("_shard_worker.py", folder, 2, mode)
    load = lambda name: dict(np.load(folder / name))  # noqa: E731
    return load(f"{mode}single.npz"), [load(f"{mode}rank{r}.npz") for r in range(2)]


def _assert_equal_to_one_process(single: dict, ranks: list[dict], skip: tuple[str, ...] = ()) -> None:
    assert all(set(r) == set(single) for r in ranks)
    for key, want in single.items():
        for r in ranks:
            if key not in skip:
                np.testing.assert_allclose(r[key], want, rtol=1e-6, atol=1e-12, err_msg=key)
                np.testing.assert_array_equal(r[key], ranks[0][key], err_msg=key)  # the same on every rank


@pytest.mark.slow
def test_a_rank_with_an_empty_share_takes_part(tmp_path_factory):
    # Data with fewer samples (one sample; one batch after a batch sampler's drop_last; a list of one batch) than
    # ranks left rank 1 nothing, and its first pass raised "data holds no batch" while rank 0 waited in a
    # collective. An empty share contributes zero sums and counts: loss, gradient, HVPs, points (with outputs),
    # a plane, eigenvalues, a (sum, count) closure and a weighted mean equal one process's. Data empty on every
    # rank raises one process's InputError on every rank.
    single, ranks = _mode_results(tmp_path_factory, "empty")
    assert str(single["all_empty"]).startswith("InputError")
    _assert_equal_to_one_process(single, ranks, skip=("all_empty",))
    for r in ranks:
        assert str(r["all_empty"]).startswith("InputError") and "no sample on any of the 2 ranks" in str(r["all_empty"])
    assert int(ranks[1]["one_total_samples"]) == 1


@pytest.mark.slow
def test_a_shuffling_loader_is_split_by_its_dataset_order(tmp_path_factory):
    # A shuffling DataLoader was split by batches (batch i to rank i % world) of each rank's own shuffle: with
    # unseeded loaders the ranks drew different permutations, read overlapping samples and missed others (and
    # each read the whole dataset). Now the dataset's indices are split, each rank shuffling only its share:
    # loss, gradient and HVPs equal one process's (whose order does not matter to a sum), and each rank reads
    # about half the samples (95 samples: 48 and 47), once per pass.
    single, ranks = _mode_results(tmp_path_factory, "shuffled")
    skip = ("shuffled_read", "shuffled_total_samples")
    _assert_equal_to_one_process(single, ranks, skip=skip)
    n = len(single["shuffled_read"])
    reads = [set(r["shuffled_read"].tolist()) for r in ranks]
    assert n == 95 and all(int(r["shuffled_total_samples"]) == n for r in ranks)
    assert all(len(s) <= 0.55 * n for s in reads)
    assert reads[0].isdisjoint(reads[1]) and len(reads[0] | reads[1]) == n


@pytest.mark.slow
def test_a_batchnorm_model_on_batch_statistics_keeps_one_process_batches(tmp_path_factory):
    # shard="split" divided the samples evenly, so each rank cut its share into other batches than one process
    # (96 rows in batches of 10: 48 per rank, 10+10+10+10+8, not ten of 10 and one of 6): under bn_mode="train"
    # the loss, gradient and HVPs silently differed from one process's. Now a BatchNorm model's data is shared
    # by whole batches (test_hunt13_problem.py checks the shares in one process).
    single, ranks = _mode_results(tmp_path_factory, "batchnorm")
    _assert_equal_to_one_process(single, ranks)


def _loaders():
    """DataLoaders read in order, one process's reading of each the reference (n, batch size, drop_last vary)."""
    import torch
    from torch.utils.data import BatchSampler, DataLoader, SequentialSampler, TensorDataset

    for n in (1, 5, 10, 11, 23):
        ds = TensorDataset(torch.arange(n, dtype=torch.float64)[:, None], torch.arange(n))
        for b in (1, 3, 4, 7):
            for drop in (False, True):
                yield f"n={n} batch={b} drop_last={drop}", DataLoader(ds, batch_size=b, drop_last=drop)
        bs = BatchSampler(SequentialSampler(ds), 3, drop_last=True)  # its own batch sampler (no batch_size)
        yield f"n={n} batch_sampler", DataLoader(ds, batch_sampler=bs)


@pytest.mark.parametrize("world", [2, 3, 4])
def test_split_loader_shares_are_what_one_process_reads(monkeypatch, world):
    # A DataLoader with drop_last=True was split by samples, each rank dropping the tail of its own share: the
    # ranks together read other samples than one process (n=10, batch 4, 2 ranks: 0-3 and 5-8, not 0-7). One
    # with a batch sampler of its own was re-read unbatched (a collate error).
    import landscape.distributed
    from landscape._batch import _source, _split_source

    for name, loader in _loaders():
        want = [i for b in loader for i in b[1].tolist()]  # the targets are the sample indices
        got = []
        for rank in range(world):
            monkeypatch.setattr(landscape.distributed, "rank_world", lambda rank=rank: (rank, world))
            source, _ = _source(loader, None)
            got += [i for b in _split_source(source, None) for i in b[1].tolist()]
        assert sorted(got) == sorted(want), name  # the same samples, each read by one rank once


@pytest.mark.parametrize("world", [2, 3])
def test_shuffling_loaders_split_the_samples_one_process_reads(monkeypatch, world):
    # Each rank's loader drew its own permutation (an unseeded shuffle, seeded differently per rank here), and
    # batch i went to rank i % world: samples read twice or never. Now the ranks split the dataset's indices.
    import torch
    from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SubsetRandomSampler, TensorDataset

    import landscape.distributed
    from landscape._batch import _source, _split_source

    for n in (1, 5, 11, 23):
        ds = TensorDataset(torch.arange(n, dtype=torch.float64)[:, None], torch.arange(n))
        cases = [
            (dict(batch_size=3, shuffle=True), list(range(n))),
            (dict(batch_size=4, shuffle=True, drop_last=True), None),  # one process: a random n - n % 4
            (dict(batch_size=2, sampler=RandomSampler(ds)), list(range(n))),
            (dict(batch_size=2, sampler=SubsetRandomSampler(range(0, n, 2))), list(range(0, n, 2))),
            (dict(batch_sampler=BatchSampler(RandomSampler(ds), 3, drop_last=False)), list(range(n))),
        ]
        for kw, want in cases:
            got = []
            for rank in range(world):
                monkeypatch.setattr(landscape.distributed, "rank_world", lambda rank=rank: (rank, world))
                torch.manual_seed(rank)  # every rank shuffles its own way
                share = _split_source(_source(DataLoader(ds, **kw), None)[0], None)
                got += [i for _ in range(2) for b in share for i in b[1].tolist()]  # two passes
            if want is None:  # drop_last: the ranks drop the same number as one process
                assert len(got) == 2 * (n - n % 4) and len(set(got)) == n - n % 4, (n, kw)
            else:
                assert sorted(got) == sorted(2 * want), (n, kw)  # each sample read once per pass


def test_samplers_no_split_reproduces_are_refused(monkeypatch):
    import torch
    from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, TensorDataset, WeightedRandomSampler

    import landscape.distributed
    from landscape._batch import _source, _split_source
    from landscape.validation import InputError

    monkeypatch.setattr(landscape.distributed, "rank_world", lambda: (0, 2))
    ds = TensorDataset(torch.arange(10.0)[:, None], torch.arange(10))
    samplers = [  # (what the message says, the sampler)
        ("with replacement", RandomSampler(ds, replacement=True)),
        ("not all", RandomSampler(ds, num_samples=6)),
        ("with replacement", WeightedRandomSampler(torch.ones(10), 10)),
        ("pass the loader without it", DistributedSampler(ds, num_replicas=2, rank=0)),
    ]
    for fix, sampler in samplers:
        with pytest.raises(InputError, match=fix):
            _split_source(_source(DataLoader(ds, batch_size=3, sampler=sampler), None)[0], None)


_IN_WORKER = [False]  # set by _init_worker in a DataLoader worker (a forked copy of this module)


def _init_worker(worker_id: int) -> None:
    _IN_WORKER[0] = True


def _collate_flagged(samples):
    from torch.utils.data import default_collate

    x, y = default_collate(samples)
    return x, y, _IN_WORKER[0]  # True only in a worker whose worker_init_fn ran


@pytest.mark.parametrize("shuffle", [False, True])
def test_a_rebuilt_split_loader_keeps_the_loaders_settings(monkeypatch, shuffle):
    # A DataLoader split by samples was rebuilt with its batch_size, collate_fn and num_workers only: its
    # pin_memory, worker_init_fn, generator, timeout, prefetch_factor, persistent_workers, ... were dropped.
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    import landscape.distributed
    from landscape._batch import _source, _split_source

    monkeypatch.setattr(landscape.distributed, "rank_world", lambda: (1, 2))
    ds = TensorDataset(torch.arange(10.0)[:, None], torch.arange(10))
    gen = torch.Generator().manual_seed(0)
    settings = dict(
        num_workers=1,
        collate_fn=_collate_flagged,
        pin_memory=True,
        timeout=30.0,
        worker_init_fn=_init_worker,
        multiprocessing_context="fork",
        generator=gen,
        prefetch_factor=3,
        persistent_workers=True,
    )
    loader = DataLoader(ds, batch_size=3, shuffle=shuffle, **settings)
    share = _split_source(_source(loader, None)[0], None)
    for k in settings:
        assert getattr(share, k) is getattr(loader, k) or getattr(share, k) == getattr(loader, k), k
    if shuffle:  # the share's shuffle draws from the loader's generator
        assert share.sampler.generator is gen
    # read: in a worker (worker_init_fn ran, collate_fn flags it), rank 1's half, each sample once
    settings.update(pin_memory=False, persistent_workers=False)  # no accelerator to pin for here
    share = _split_source(_source(DataLoader(ds, batch_size=3, shuffle=shuffle, **settings), None)[0], None)
    batches = list(share)
    assert all(flag is True for *_, flag in batches)
    assert sorted(i for _, y, _ in batches for i in y.tolist()) == [5, 6, 7, 8, 9]


def test_loader_shard_bounds_partition_what_one_process_reads():
    for n in range(0, 23):
        for b in range(1, 6):
            for drop in (False, True):
                kept = n - n % b if drop else n  # one process: every batch, or the full ones
                for world in range(1, 5):
                    parts = [loader_shard_bounds(n, b, drop, r, world) for r in range(world)]
                    assert [i for lo, hi in parts for i in range(lo, hi)] == list(range(kept))
                    sizes = [hi - lo for lo, hi in parts]
                    assert max(sizes) - min(sizes) <= 1


def test_the_fsdp_check_costs_no_import_and_still_finds_a_wrapped_module():
    # Building a Problem and evaluating a line must not import FSDP (about a second per process); once FSDP's
    # package is imported, a module of its FSDPModule class is found (fully_shard swaps the class likewise; it needs a
    # process group, so the swap stands in for it).
    code = (
        "import sys, torch\n"
        "from torch import nn\n"
        "import landscape\n"
        "from landscape.distributed import check_not_fsdp\n"
        "from landscape.validation import InputError\n"
        "m = nn.Sequential(nn.Linear(3, 2))\n"
        "x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))\n"
        "landscape.line(m, m, m, (x, y), alphas=[0.0, 0.5, 1.0])\n"
        "assert 'torch.distributed.fsdp' not in sys.modules\n"
        "from torch.distributed.fsdp import FSDPModule\n"
        "inner = nn.Linear(3, 2)\n"
        "inner.__class__ = type('FSDPLinear', (FSDPModule, nn.Linear), {})  # what fully_shard does\n"
        "try:\n"
        "    check_not_fsdp(nn.Sequential(inner))\n"
        "except InputError as e:\n"
        "    assert 'FSDP2' in str(e)\n"
        "else:\n"
        "    raise SystemExit('not refused')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
