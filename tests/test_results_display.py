"""Results people can look at: a short repr, notebook HTML, and a labeled xarray / pandas export.

Every registered result type is built from a tiny real computation (one shared fixture), then:
``to_xarray`` round-trips every array and coordinate (and ``from_xarray`` rebuilds the result exactly),
the repr stays short whatever the array sizes, and the HTML parses as XML.
"""

import base64
import dataclasses
import json
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape import results as R
from landscape.analyze import (
    PlaneResult,
    SaturationHistory,
    TrajectoryPCA,
    barycentric,
    bilinear,
    distance_along_path,
    evaluate_curve,
    fit_curve,
    functional_distance,
    line,
    line_distance,
    loss_barrier,
    measure_saturation,
    random_plane,
    weight_matching,
)
from landscape.curvature import gradient_descent_curvature, hessian_spectrum, worst_case_sharpness
from persistence.fast import fast_persistent_run, train_seeds_batched

pytest.importorskip("xarray")


def _net(seed: int, act: type[nn.Module] = nn.Tanh) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), act(), nn.Linear(6, 3)).double()


@pytest.fixture(scope="module")
def results() -> dict[str, R.Result]:
    """One result of every registered type (and both axis names of a line), each from a real computation."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(24, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (24,), generator=g)
    data = (X, y)
    a, b, c, d = (_net(s) for s in range(4))
    ce = F.cross_entropy
    out: dict[str, R.Result] = {}
    out["LineResult"] = line(a, a, b, data, alphas=np.linspace(-0.5, 1.5, 5), progress=False)
    out["LineResult/distance"] = line_distance(a, a, b, data, distances=[0.0, 0.5, 1.0], progress=False)
    out["PlaneResult"] = random_plane(a, data, np.linspace(-1, 1, 4), np.linspace(-0.5, 0.5, 3), seed=0, progress=False)
    out["BilinearResult"] = bilinear(a, [a, b, c, d], data, n=3, progress=False)
    out["BarycentricResult"] = barycentric(a, a, b, c, data, n=3, progress=False)
    out["FunctionalDistance"] = functional_distance(a, a, b, data, progress=False)
    out["DistanceResult"] = distance_along_path(a, a, b, data, alphas=[0.0, 0.5, 1.0], progress=False)
    out["BarrierResult"] = loss_barrier(a, b, data, alphas=np.linspace(0, 1, 5), metrics=("loss", "accuracy"))
    curve = fit_curve(a, b, data, steps=3, optimizer_kwargs={"lr": 0.1}, record_every_epochs=None)
    out["ModeCurve"] = curve
    out["CurveResult"] = evaluate_curve(a, curve, data, ts=[0.0, 0.5, 1.0])
    out["HessianSpectrum"] = hessian_spectrum(a, ce, data, n_probes=2, steps=6, top_k=2, trace_products=4)
    stats = [measure_saturation(m, X, nn.Tanh, percentiles=(50.0, 98.0), bins=8) for m in (a, b)]
    out["SaturationStats"] = next(iter(stats[0].values()))
    out["SaturationHistory"] = SaturationHistory.from_stats(stats, [0, 1], label="run")
    out["SharpnessResult"] = worst_case_sharpness(a, ce, data, radius=0.05, steps=2, restarts=2, progress=False)
    path = torch.stack([torch.nn.utils.parameters_to_vector(m.parameters()) for m in (a, b, c, d)])
    pca = TrajectoryPCA(2).fit(path)
    out["ProjectedPath"] = pca.project(path, loss_at=lambda p: p.square().sum(1))
    out["CurvatureTrace"], _ = gradient_descent_curvature(
        a, ce, data, lr=0.1, steps=4, every_steps=2, k=2, progress=False
    )
    out["AlignmentResult"] = weight_matching(a, b)
    reg = _net(0, nn.ReLU)
    Xr, yr = X[:, :4], X[:, :3].sin()
    out["SeedsResult"] = train_seeds_batched(reg, Xr, yr, [0, 1], steps=4, log_every=2, backend="eager")
    out["FastPersistentResult"] = fast_persistent_run(
        reg, Xr, yr, iterations=2, steps=4, lam=0.1, log_every=2, record_every=2, backend="eager"
    )
    return out


CASES = [
    "LineResult",
    "LineResult/distance",
    "PlaneResult",
    "BilinearResult",
    "BarycentricResult",
    "FunctionalDistance",
    "DistanceResult",
    "BarrierResult",
    "ModeCurve",
    "CurveResult",
    "HessianSpectrum",
    "SaturationStats",
    "SaturationHistory",
    "SharpnessResult",
    "ProjectedPath",
    "CurvatureTrace",
    "AlignmentResult",
    "SeedsResult",
    "FastPersistentResult",
]


def test_every_registered_type_is_covered():
    assert {c.split("/")[0] for c in CASES} == set(R._REGISTRY)


def _same(x, y, where="") -> None:
    """Exact equality of field values: arrays (dtype, shape, values with NaN), dicts, lists, provenance."""
    if isinstance(x, np.ndarray):
        assert isinstance(y, np.ndarray), where
        assert x.dtype == y.dtype and x.shape == y.shape, (where, x.dtype, y.dtype, x.shape, y.shape)
        np.testing.assert_array_equal(x, y, err_msg=where)
    elif isinstance(x, dict):
        assert isinstance(y, dict) and list(x) == list(y), where
        for k in x:
            _same(x[k], y[k], f"{where}.{k}")
    elif isinstance(x, list | tuple):
        assert len(x) == len(y), where
        for i, (u, v) in enumerate(zip(x, y)):
            _same(u, v, f"{where}[{i}]")
    elif isinstance(x, R.Provenance):
        _same(x.to_dict(), y.to_dict(), where)
    elif isinstance(x, float) and np.isnan(x):
        assert isinstance(y, float) and np.isnan(y), where
    else:
        assert x == y and type(x) is type(y), (where, x, y)


def _same_result(r, s) -> None:
    assert type(r) is type(s)
    for f in dataclasses.fields(r):
        _same(getattr(r, f.name), getattr(s, f.name), f.name)


def _arrays(r) -> dict[str, np.ndarray]:
    found: dict[str, np.ndarray] = {}
    for f in dataclasses.fields(r):
        R._encode(getattr(r, f.name), found, f.name)
    return found


@pytest.mark.parametrize("case", CASES)
def test_to_xarray_round_trips(results, case):
    r = results[case]
    ds = r.to_xarray()
    names = json.loads(ds.attrs["landscape_result"])["variables"]
    arrays = _arrays(r)
    assert set(names) == set(arrays)  # every array of the result is a variable of the dataset
    for key, a in arrays.items():
        v = ds[names[key]]
        assert v.values.dtype == a.dtype and v.shape == a.shape, key
        np.testing.assert_array_equal(v.values, a, err_msg=key)
    spec = r._spec()
    for key, cname in spec.coords.items():  # declared coordinates are coordinates, with the field's values
        a = R._lookup(r, key)
        if a is None:
            continue
        assert cname in ds.coords, (key, cname)
        np.testing.assert_array_equal(ds.coords[cname].values, a)
    for key, dims in spec.dims.items():  # declared dimension names are used (no unlabeled axes for them)
        for k in arrays:
            head = k.rpartition(".")[0]
            if k == key or (key.endswith(".*") and head == key[:-2]):
                assert ds[names[k]].dims[: len(dims)] == tuple(
                    d.replace("{key}", k.rpartition(".")[2]) for d in dims
                ), k
    for field, dim in spec.labels.items():
        labels = getattr(r, field)
        if labels and dim in ds.dims and ds.sizes[dim] == len(labels):
            assert list(ds.coords[dim].values) == list(labels)
    _same_result(r, type(r).from_xarray(ds))
    _same_result(r, R.Result.from_xarray(ds))


@pytest.mark.parametrize("case", CASES)
def test_from_xarray_rebuilds_the_result_after_a_netcdf3_file(results, case, tmp_path):
    # netCDF3 (scipy's writer: xarray's choice without netCDF4) has no int64: int64 arrays (a permutation, a
    # path's run and step numbers, histogram counts) came back int32; from_xarray promises the result exactly.
    pytest.importorskip("scipy")
    import xarray as xr

    r = results[case]
    if any(0 in a.shape for a in _arrays(r).values()):
        pytest.skip("scipy's netCDF3 reader fails on a dimension of length 0")
    r.to_xarray().to_netcdf(tmp_path / "r.nc", engine="scipy")
    _same_result(r, type(r).from_xarray(xr.load_dataset(tmp_path / "r.nc", engine="scipy")))


def test_from_xarray_refuses_foreign_datasets(results):
    import xarray as xr

    with pytest.raises(ValueError, match="not made by Result.to_xarray"):
        R.Result.from_xarray(xr.Dataset())
    ds = results["PlaneResult"].to_xarray()
    with pytest.raises(ValueError, match="holds a PlaneResult, not a LineResult"):
        type(results["LineResult"]).from_xarray(ds)
    with pytest.raises(ValueError, match="lacks the variables"):
        R.Result.from_xarray(ds.drop_vars("loss"))


def test_plane_dataset_is_labeled(results):
    r = results["PlaneResult"]
    ds = r.to_xarray()
    assert ds["loss"].dims == ("y", "x")
    np.testing.assert_array_equal(ds.x.values, r.xs)
    # label-based selection agrees with the grid convention grid[i, j] at (xs[j], ys[i])
    assert float(ds["loss"].sel(x=r.xs[2], y=r.ys[1])) == r.metrics["loss"][1, 2]
    assert ds.attrs["n_nonfinite"] == r.n_nonfinite and ds.attrs["provenance_version"] == r.provenance.version
    line = results["LineResult/distance"].to_xarray()
    assert line["loss"].dims == ("distance",)


@pytest.mark.parametrize("case", CASES)
def test_to_dataframe(results, case):
    r = results[case]
    table = r._spec().table
    if table is None:
        with pytest.raises(NotImplementedError, match="no single table"):
            r.to_dataframe()
        return
    ds = r.to_xarray()
    df = r.to_dataframe()
    assert list(df.index.names) == list(table)
    assert len(df) == int(np.prod([ds.sizes[d] for d in table]))
    cols = [v for v in ds.data_vars if ds[v].dims == table]
    assert cols and set(cols) <= set(df.columns)
    for v in cols:  # row order is C order over the table's dimensions
        np.testing.assert_array_equal(df[v].to_numpy(), ds[v].values.reshape(-1))


@pytest.mark.parametrize("case", CASES)
def test_repr_is_short_and_never_prints_arrays(results, case):
    r = results[case]
    text = repr(r)
    assert text.startswith(type(r).__name__)
    assert len(text) < 2000 and max(len(line) for line in text.splitlines()) <= 120
    assert "array(" not in text and "tensor(" not in text
    names = {f.name for f in dataclasses.fields(r)}
    assert {line.split(":")[0].strip() for line in text.splitlines()[1:]} == names
    assert str(r) == text


def test_repr_shows_a_few_numbers_by_value_in_order(results):
    """Top eigenvalues are read off the summary as they are stored, largest first; a range would hide the order."""
    r = results["HessianSpectrum"]
    line = next(ln for ln in repr(r).splitlines() if ln.strip().startswith("top_eigenvalues:"))
    shown = [float(v) for v in line.split("= [")[1].rstrip("]").split(", ")]
    np.testing.assert_allclose(shown, r.top_eigenvalues, rtol=1e-3)
    assert "= [" not in next(ln for ln in repr(r).splitlines() if ln.strip().startswith("nodes:"))  # 2-D: a range
    assert "  percentiles: percentile 50, 98 (2)\n" in repr(results["SaturationStats"])  # a short coordinate too


def test_repr_does_not_grow_with_the_grid():
    def plane(n):
        g = np.random.default_rng(0)
        return PlaneResult(
            np.linspace(-1, 1, n),
            np.linspace(-1, 1, n),
            {"loss": g.random((n, n))},
            g.random(50 * n),
            g.random((2, 50 * n)),
        )

    small, big = repr(plane(11)), repr(plane(101))
    assert len(small) < 1000 and abs(len(big) - len(small)) < 40
    assert re.search(r"xs: x -1 \.\. 1 \(11\)", small)
    assert "loss float64 (11, 11)" in small


@pytest.mark.parametrize("case", CASES)
def test_html_is_well_formed(results, case):
    r = results[case]
    page = r._repr_html_()
    root = ET.fromstring(page)  # well-formed XML, so well-formed HTML
    cells = [th.text for th in root.iter("th")]
    assert cells == [f.name for f in dataclasses.fields(r)]
    imgs = list(root.iter("img"))
    draws = r._thumbnail_data() is not None
    assert len(imgs) == int(draws)
    if draws:
        src = imgs[0].get("src")
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1])
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) < 60_000


def test_thumbnails_exist_for_the_grids_and_curves(results):
    for case in (
        "PlaneResult",
        "LineResult",
        "DistanceResult",
        "HessianSpectrum",
        "ProjectedPath",
        "CurvatureTrace",
        "SaturationHistory",
        "BarrierResult",
        "CurveResult",
    ):
        assert results[case]._thumbnail_data() is not None, case


def test_save_and_load_unchanged(results, tmp_path):
    for case in CASES:
        r = results[case]
        _same_result(r, R.load_result(r.save(tmp_path / case.replace("/", "_"))))


def test_loading_a_file_that_is_no_result_never_suggests_unpickling(tmp_path):
    """numpy's own message for a text file advised 'load it unsafely using allow_pickle'."""
    script = tmp_path / "train.py"
    script.write_text("print('hello')\n" * 5)
    with pytest.raises(ValueError, match="train.py is not a saved landscape result: not an .npz archive") as e:
        R.load_result(script)
    assert "pickle" not in str(e.value)
    with pytest.raises(FileNotFoundError, match="no such file"):
        R.load_result(tmp_path / "missing.npz")


def test_missing_xarray_is_a_clear_error(results, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "xarray", None)
    with pytest.raises(ImportError, match="pip install xarray"):
        results["LineResult"].to_xarray()
