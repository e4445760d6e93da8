"""Readers of data the user supplies in a directory.

CIFAR-10 python batches (a restricted unpickler that builds only plain arrays, lists and dicts) and MNIST IDX
files, returned as :class:`~landscape.data.Splits`.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import pickle
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from landscape.data.batches import Pair
from landscape.data.splits import Normalize, Splits, assemble_splits, split

__all__ = ["load_cifar10", "load_cifar_batch", "load_mnist_idx", "read_idx"]


# =========================================================================== CIFAR-10 (restricted unpickler)
_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_FILES = (*_CIFAR_TRAIN, "test_batch")


def _plain_dtype(*args: Any) -> np.dtype:
    """``numpy.dtype`` for the unpickler, refusing object dtypes (they would unpickle arbitrary objects)."""
    dt = np.dtype(*args)
    if dt.hasobject:
        raise pickle.UnpicklingError("object arrays are not allowed in a CIFAR batch")
    return dt


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` for the unpickler, limited to what Python 3 uses to pickle ``bytes`` at protocol 2."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("only latin-1 encoded byte strings are allowed in a CIFAR batch")
    return text.encode("latin-1")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    multiarray = getattr(np, "_core", None) or np.core  # numpy 2 renamed numpy.core to numpy._core
    reconstruct = multiarray.multiarray._reconstruct
    return {
        ("numpy.core.multiarray", "_reconstruct"): reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): _plain_dtype,
        ("_codecs", "encode"): _latin1_bytes,
    }


class _RestrictedUnpickler(pickle._Unpickler):  # the Python implementation: its opcode table can be narrowed
    """Unpickler for CIFAR batches that admits exactly the globals plain data needs.

    Allowed: the numpy array reconstructor, ``numpy.ndarray``, a dtype factory that refuses object
    dtypes, and a latin-1-only ``_codecs.encode`` (how Python 3 writes ``bytes`` at protocol 2; the
    original Python 2 batches need none). Everything else, every builtin included, is refused. Dicts,
    lists, tuples, strings, bytes and numbers need no globals, so a CIFAR batch loads while a payload
    naming any function (``os.system``, ``eval``, ...) fails before anything runs.

    ``BUILD`` (set an object's state) is accepted only for the numpy arrays and dtypes that arrays are
    made of: on anything else, e.g. the allowed callables themselves, it would set attributes of the
    package's own objects (``_latin1_bytes.__defaults__``...) for the rest of the process.
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def load_build(self: Any) -> None:  # noqa: D102  (Any: typeshed's Unpickler does not declare ``stack``)
        target = self.stack[-2] if len(self.stack) >= 2 else None
        if not (type(target) is np.ndarray or isinstance(target, np.dtype)):
            raise pickle.UnpicklingError(
                f"setting the state of a {type(target).__name__} is not allowed in a CIFAR batch (only of arrays)"
            )
        super().load_build()  # type: ignore[misc]

    dispatch[pickle.BUILD[0]] = load_build

    def load(self) -> Any:  # noqa: D102
        try:
            return super().load()
        except (KeyError, struct.error) as e:  # the C unpickler's UnpicklingError for bad opcodes / arguments
            raise pickle.UnpicklingError(f"not a valid pickle ({type(e).__name__}: {e})") from e

    def find_class(self, module: str, name: str) -> Any:  # noqa: D102
        allowed = _allowed_globals()
        if (module, name) in allowed:
            return allowed[(module, name)]
        raise pickle.UnpicklingError(f"forbidden global {module}.{name}: a CIFAR batch holds only arrays and lists")

    def persistent_load(self, pid: Any) -> Any:  # noqa: D102
        raise pickle.UnpicklingError("persistent ids are not allowed in a CIFAR batch")


def _check_plain(obj: Any, depth: int = 0) -> None:
    """Raise unless ``obj`` is built only from dicts, lists, tuples, str, bytes, numbers and numeric arrays."""
    if depth > 20:
        raise pickle.UnpicklingError("nesting too deep for a CIFAR batch")
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_plain(k, depth + 1)
            _check_plain(v, depth + 1)
    elif isinstance(obj, list | tuple):
        for v in obj:
            _check_plain(v, depth + 1)
    elif isinstance(obj, np.ndarray):
        if obj.dtype.hasobject or type(obj) is not np.ndarray:
            raise pickle.UnpicklingError("only plain numeric arrays are allowed in a CIFAR batch")
    elif obj is not None and not isinstance(obj, str | bytes | bool | int | float):
        raise pickle.UnpicklingError(f"unexpected {type(obj).__name__} in a CIFAR batch")


def load_cifar_batch(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 python batch file with a restricted unpickler.

    The file is a pickled dict with ``b"data"`` (uint8, ``(N, 3072)``, channel-major 32x32 images),
    ``b"labels"`` (list of N ints), ``b"batch_label"`` and ``b"filenames"``. Unpickling admits only the
    numpy array reconstructor, ``numpy.ndarray``, a dtype factory that refuses object dtypes and a
    latin-1-only string encoder (see :class:`_RestrictedUnpickler`); the result is then checked to hold
    nothing but dicts, lists, strings, bytes, numbers and numeric arrays.

    Args:
        path: The batch file.

    Returns:
        ``(images, labels)``: uint8 array of shape ``(N, 3, 32, 32)`` and int64 array of shape ``(N,)``.

    Raises:
        ValueError: If the file is not a valid CIFAR-10 batch (names the file and the problem); a
            pickle that tries to load any other global (a code-execution payload) is refused this way.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            obj = _RestrictedUnpickler(io.BytesIO(fh.read()), encoding="bytes").load()
        _check_plain(obj)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise ValueError(f"{path} is not a valid CIFAR-10 python batch: {e}") from e
    if not isinstance(obj, dict):
        raise ValueError(f"{path} is not a valid CIFAR-10 python batch: expected a dict, got {type(obj).__name__}")
    # latin-1 decodes any bytes: a damaged key is then reported among the keys, not as a UnicodeDecodeError
    d = {(k.decode("latin-1") if isinstance(k, bytes) else k): v for k, v in obj.items()}
    if "data" not in d or "labels" not in d:
        raise ValueError(f"{path} is not a valid CIFAR-10 python batch: keys {sorted(map(str, d))} lack data/labels")
    data = d["data"]
    try:
        labels = np.asarray(d["labels"])
    except (ValueError, TypeError) as e:  # e.g. nested lists of unequal lengths
        raise ValueError(f"{path}: 'labels' must be a list of integers ({e})") from e
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        raise ValueError(f"{path}: 'data' must be a uint8 array of shape (N, 3072), got {type(data).__name__} {shape}")
    if labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{path}: 'labels' must be {data.shape[0]} integers, got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{path}: labels must lie in 0-9, found {labels.min()}-{labels.max()}")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _find_cifar_dir(data_dir: Path) -> Path:
    candidates = [data_dir / "cifar-10-batches-py", data_dir]
    for c in candidates:
        if all((c / f).is_file() for f in _CIFAR_FILES):
            return c
    where = next((c for c in candidates if c.is_dir() and any((c / f).exists() for f in _CIFAR_FILES)), None)
    missing = [f for f in _CIFAR_FILES if where is None or not (where / f).is_file()]
    raise FileNotFoundError(
        f"CIFAR-10 not found under {data_dir}: put the python-version batches {', '.join(_CIFAR_FILES)} in "
        f"{data_dir / 'cifar-10-batches-py'}/ (or directly in {data_dir}/). They come from "
        "cifar-10-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html); extract it with "
        f"`tar xzf cifar-10-python.tar.gz -C {data_dir}`. Missing: {', '.join(missing)}. Nothing is downloaded."
    )


def load_cifar10(
    data_dir: str | os.PathLike[str],
    *,
    val_size: int = 5000,
    seed: int = 0,
    train_size: int | None = None,
    normalize: Normalize | str = Normalize.UNIT,
    dtype: torch.dtype = torch.float32,
) -> Splits:
    """CIFAR-10 from its python batches, with the papers' split of the test set.

    Training uses ``data_batch_1..5`` (50,000 images); the 10,000 ``test_batch`` images are split at
    random (seeded) into ``val_size`` validation and the rest test images: 5,000 / 5,000 as in
    Persistent Neurons §4.

    Args:
        data_dir: Directory holding ``cifar-10-batches-py/`` or the batch files themselves.
        val_size: Validation images taken from the test batch.
        seed: Seed of the validation/test split (and of the training subset).
        train_size: Keep only this many training images (a seeded random subset); ``None`` keeps all.
        normalize: Pixel scaling.
        dtype: Floating dtype of the images.

    Returns:
        The splits with images ``(N, 3, 32, 32)`` and int64 labels.

    Raises:
        FileNotFoundError: If the directory or a batch is missing; the message says which files go where.
        ValueError: If a batch is not a valid CIFAR-10 batch.
    """
    root = _find_cifar_dir(Path(data_dir))
    xs, ys = zip(*(load_cifar_batch(root / f) for f in _CIFAR_TRAIN))
    Xtr, ytr = torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))
    Xte, yte = (torch.from_numpy(a) for a in load_cifar_batch(root / "test_batch"))
    if train_size is not None:
        ((Xtr, ytr),) = split(Xtr, ytr, [int(train_size)], seed=seed)
    (Xva, yva), (Xte, yte) = split(Xte, yte, [int(val_size), None], seed=seed)
    parts: dict[str, Pair | None] = {"train": (Xtr, ytr), "val": (Xva, yva) if val_size else None, "test": (Xte, yte)}
    how_split = f"val/test split of test_batch, seed {seed}"
    return assemble_splits(parts, normalize, 255.0, dtype, (3, 32, 32), f"CIFAR-10 from {root}", how_split)


# =========================================================================== MNIST (IDX files)
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzip-compressed or not.

    Format: two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32,
    0x0E float64), the number of dimensions, then each dimension as a big-endian uint32, then the data
    big-endian in C order.

    Args:
        path: The file (``.gz`` or gzip magic bytes mean compressed).

    Returns:
        Array of the stored shape in native byte order.

    Raises:
        ValueError: If the header is invalid or the data length disagrees with it (names the file).
    """
    path = Path(path)
    with open(path, "rb") as fh:
        raw = fh.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:  # zlib.error: a damaged deflate stream (not an OSError)
            raise ValueError(f"{path}: corrupt gzip stream ({e}); download or extract the file again") from e
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} bytes for {ndim} dimensions)")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = math.prod(dims) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{path}: IDX header says shape {dims} ({expected} data bytes) but the file has {len(raw) - header}; "
            "is it truncated or corrupted?"
        )
    arr = np.frombuffer(raw, dtype=dtype, count=math.prod(dims), offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))


def _find_mnist_files(data_dir: Path) -> dict[str, Path]:
    dirs = [data_dir, data_dir / "MNIST" / "raw", data_dir / "raw"]
    found: dict[str, Path] = {}
    for key, base in _MNIST_FILES.items():
        variants = [base, base.replace("-idx", ".idx")]  # some mirrors use "train-images.idx3-ubyte"
        for d in dirs:
            hit = next((d / (v + s) for v in variants for s in ("", ".gz") if (d / (v + s)).is_file()), None)
            if hit is not None:
                found[key] = hit
                break
    missing = [b for k, b in _MNIST_FILES.items() if k not in found]
    if missing:
        raise FileNotFoundError(
            f"MNIST not found under {data_dir}: put the four IDX files {', '.join(_MNIST_FILES.values())} "
            f"(each optionally gzipped, .gz) directly in {data_dir}/ (or in {data_dir / 'MNIST' / 'raw'}/). "
            f"Missing: {', '.join(missing)}. Nothing is downloaded."
        )
    return found


def load_mnist_idx(
    data_dir: str | os.PathLike[str],
    *,
    val_size: int = 5000,
    seed: int = 0,
    normalize: Normalize | str = Normalize.UNIT,
    dtype: torch.dtype = torch.float32,
) -> Splits:
    """Full MNIST from its four IDX files: 60,000 training and 10,000 test images.

    Args:
        data_dir: Directory holding the IDX files (or ``MNIST/raw/`` inside it).
        val_size: Validation images split off the training set at random (seeded); 0 for none.
        seed: Seed of the split.
        normalize: Pixel scaling.
        dtype: Floating dtype of the images.

    Returns:
        The splits with images ``(N, 1, 28, 28)`` and int64 labels.

    Raises:
        FileNotFoundError: If a file is missing; the message says which files go where.
        ValueError: If a file is not valid IDX, images and labels disagree, or training and test images differ
            in size.
    """
    files = _find_mnist_files(Path(data_dir))
    arrays = {k: read_idx(p) for k, p in files.items()}
    for part in ("train", "test"):
        xi, yi = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if xi.ndim != 3 or yi.ndim != 1 or xi.shape[0] != yi.shape[0]:
            raise ValueError(
                f"{files[f'{part}_images']} and {files[f'{part}_labels']}: images {xi.shape} and labels "
                f"{yi.shape} do not match (expected (N, H, W) and (N,))"
            )
        # A flipped byte keeps the length right; CIFAR's batches are held to labels 0-9 the same way.
        if not np.issubdtype(yi.dtype, np.integer) or (yi.size and (yi.min() < 0 or yi.max() > 9)):
            found = f"{yi.min()}-{yi.max()}" if yi.size else "none"
            raise ValueError(
                f"{files[f'{part}_labels']}: MNIST labels must be integers 0-9, found {yi.dtype} values {found}; "
                "is the file corrupted, or another file under this name?"
            )
    if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:  # else Splits.input_shape fits one part
        raise ValueError(
            f"{files['train_images']} holds {arrays['train_images'].shape[1:]} images but {files['test_images']} "
            f"{arrays['test_images'].shape[1:]} ones; are the files of two different data sets?"
        )
    Xtr = torch.from_numpy(arrays["train_images"].astype(np.float64))[:, None]
    ytr = torch.from_numpy(arrays["train_labels"].astype(np.int64))
    Xte = torch.from_numpy(arrays["test_images"].astype(np.float64))[:, None]
    yte = torch.from_numpy(arrays["test_labels"].astype(np.int64))
    (Xtr, ytr), (Xva, yva) = split(Xtr, ytr, [None, int(val_size)], seed=seed)
    parts: dict[str, Pair | None] = {"train": (Xtr, ytr), "val": (Xva, yva) if val_size else None, "test": (Xte, yte)}
    name = f"MNIST (IDX) from {Path(data_dir)}"
    return assemble_splits(parts, normalize, 255.0, dtype, tuple(Xte.shape[1:]), name, f"val from train, seed {seed}")
