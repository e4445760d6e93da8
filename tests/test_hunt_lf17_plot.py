"""``landscape plot`` draws every result type the package saves, or refuses it naming the file (hunt lf17).

Before: a saved BarrierResult, FunctionalDistance or SharpnessResult (and CurvatureTrace, CurveResult,
SaturationHistory) gave "no renderer for a ..." without naming the file or what plot can draw.
"""

from __future__ import annotations

import importlib
import pkgutil

import numpy as np
import pytest

import landscape
from landscape.analyze.align import AlignmentResult
from landscape.analyze.barrier import BarrierResult, barrier_values
from landscape.analyze.curves import CurveResult, ModeCurve
from landscape.analyze.distance import FunctionalDistance
from landscape.analyze.saturation_results import SaturationHistory, SaturationStats
from landscape.analyze.slice_results import LineResult
from landscape.cli import main
from landscape.curvature.sharpness import SharpnessResult
from landscape.curvature.training import CurvatureTrace

ALPHAS = np.linspace(0.0, 1.0, 5)
LOSS = np.array([0.3, 0.5, 0.9, 0.4, 0.2])


def _barrier(label: str = "ab") -> BarrierResult:
    b = barrier_values(ALPHAS, LOSS)
    return BarrierResult(
        alphas=ALPHAS,
        metrics={"loss": LOSS, "accuracy": np.array([0.9, 0.8, 0.5, 0.85, 0.95])},
        loss_barrier=b["barrier"],
        loss_barrier_mean=b["barrier_mean"],
        peak_alpha=b["peak_alpha"],
        peak_alpha_mean=b["peak_alpha_mean"],
        label=label,
    )


def _sharpness(measure: str, values: np.ndarray) -> SharpnessResult:
    mean = measure != "worst_case"
    value = float(values.mean() if mean else values.max())
    stderr = float(values.std(ddof=1) / np.sqrt(len(values))) if mean else 0.0
    return SharpnessResult(
        measure=measure,
        value=value,
        stderr=stderr,
        radius=0.05,
        norm="l2" if not mean else "gaussian",
        adaptive="none",
        eta=0.0,
        steps=3 if not mean else 0,
        restarts=len(values) if not mean else 1,
        n_samples=len(values) if mean else 0,
        m=0,
        base_loss=0.2,
        values=values,
        loss_evaluations=10.0,
        n_params=100,
    )


def _trace() -> CurvatureTrace:
    T = 3
    z = np.zeros((T, 1))
    return CurvatureTrace(
        steps=np.arange(T) * 10,
        epochs=np.arange(T, dtype=float),
        indices=np.arange(T),
        eigenvalues=np.array([[1.0], [4.0], [9.0]]),
        error_bounds=z,
        residuals=z,
        converged=np.ones(T, bool),
        hvps=np.ones(T, np.int64),
        trace=np.full(T, np.nan),
        trace_stderr=np.full(T, np.nan),
        layer_names=[],
        layer_eigenvalues=np.zeros((T, 0)),
        lr=np.full(T, 0.1),
        k=1,
        tol=1e-4,
        warm_start=True,
        bn_mode="eval",
    )


def _history() -> SaturationHistory:
    return SaturationHistory(
        epochs=np.array([0.0, 1.0]),
        layers=["a", "b"],
        percentiles=np.array([98.0]),
        values=np.array([[[0.9], [0.9]], [[0.2], [0.4]]]),
        lower=np.zeros((2, 2, 1)),
        upper=np.zeros((2, 2, 1)),
        mean=np.zeros((2, 2)),
        std=np.zeros((2, 2)),
        histogram_epochs=np.array([1.0]),
        histograms=np.ones((1, 2, 4)),
        edges=np.tile(np.linspace(0, 1, 5), (2, 1)),
    )


def _stats() -> SaturationStats:
    one = np.array([98.0])
    return SaturationStats(
        layer="a",
        value="abs",
        percentiles=one,
        values=one / 100,
        lower=one / 100,
        upper=one / 100,
        exact=True,
        counts=np.ones(4, np.int64),
        edges=np.linspace(0, 1, 5),
        underflow=0,
        overflow=0,
        count=4,
        minimum=0.1,
        maximum=0.9,
        mean=0.5,
        std=0.3,
    )


DRAWN = {
    "barrier": [_barrier()],
    "functional_distance": [FunctionalDistance(rms=0.25, disagreement=0.1, n_samples=50)],
    "sharpness": [_sharpness("worst_case", np.array([0.01, 0.03, 0.02]))],
    "sharpness_two": [
        _sharpness("worst_case", np.array([0.01, 0.03, 0.02])),
        _sharpness("average_case", np.array([0.001, -0.002, 0.004, 0.003])),
    ],
    "trace": [_trace()],
    "curve": [CurveResult(ts=ALPHAS, metrics={"loss": LOSS}, control=np.zeros((3, 4)))],
    "saturation": [_history()],
    "line_and_barrier": [
        LineResult(coords=ALPHAS, metrics={"loss": LOSS}, anchors=np.zeros((2, 4)), anchor_coords=np.array([0.0, 1.0])),
        _barrier("repaired"),
    ],
}


@pytest.mark.parametrize("case", sorted(DRAWN))
def test_plot_draws_saved_results(case, tmp_path, capsys):
    files = []
    for i, r in enumerate(DRAWN[case]):
        files.append(str(r.save(tmp_path / f"{case}{i}.npz")))
    out = tmp_path / "out"
    assert main(["plot", *files, "--out", str(out), "--name", case]) == 0, capsys.readouterr().err
    for ext in ("html", "png"):
        assert (out / f"{case}.{ext}").stat().st_size > 0


def test_plot_reports_the_barrier_sharpness_and_distance_values(tmp_path, capsys):
    b, f = _barrier().save(tmp_path / "b.npz"), FunctionalDistance(rms=0.25, disagreement=0.1, n_samples=50)
    assert main(["plot", str(b), "--out", str(tmp_path), "--no-html"]) == 0
    # LOSS peaks at alpha 0.5: 0.9 - (0.5 * 0.3 + 0.5 * 0.2) = 0.65 (linear), 0.9 - 0.25 = 0.65 (mean)
    assert "loss barrier 0.65 at alpha 0.5" in capsys.readouterr().out
    main(["plot", str(f.save(tmp_path / "f.npz")), "--out", str(tmp_path), "--no-html"])
    assert "RMS softmax distance 0.25, label disagreement 0.1 over 50 samples" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("result", "why"),
    [
        (ModeCurve(control=np.zeros((3, 4))), "evaluate it"),
        (AlignmentResult(permutation={}, objective=np.zeros(1), method="weight", spec={}), "holds a permutation"),
        (_stats(), "SaturationRecorder"),
    ],
)
def test_plot_refuses_what_it_cannot_draw_naming_the_file(result, why, tmp_path, capsys):
    path = result.save(tmp_path / "r.npz")
    assert main(["plot", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{path} holds a {type(result).__name__}, which plot cannot draw" in err
    assert why in err and "plot draws LineResult, BarrierResult" in err and "SharpnessResult" in err
    assert not (tmp_path / "out").exists()


def test_every_saved_result_type_is_drawn_or_refused():
    """Each Result type the package registers has a decision in the plot command (a new type must get one)."""
    from landscape.cli.files import _DRAWN, _REFUSED
    from landscape.results import _REGISTRY

    for m in pkgutil.walk_packages(landscape.__path__, "landscape."):
        importlib.import_module(m.name)
    ours = {n for n, c in _REGISTRY.items() if c.__module__.startswith("landscape.")}
    assert ours == set(_DRAWN) | set(_REFUSED)
    assert not set(_DRAWN) & set(_REFUSED)


def test_plot_sharpness_values_draws_the_values_errors_and_samples():
    """The figure's data are the results' numbers: value, value +- stderr, and each sample."""
    from landscape.plot import plot_sharpness_values  # (imported here: the CLI tests above run on older versions)

    rs = DRAWN["sharpness_two"]
    fig = plot_sharpness_values(rs, labels=["w", "a"])
    traces = list(fig.data)
    worst, avg = rs
    assert traces[0].y.tolist() == [worst.value] and traces[0].x.tolist() == [0.0]
    assert traces[1].y.tolist() == pytest.approx(worst.values.tolist()) and traces[1].mode == "markers"
    assert traces[2].y.tolist() == [avg.value] and traces[2].x.tolist() == [1.0]
    assert traces[3].y.tolist() == pytest.approx([avg.value - avg.stderr, avg.value + avg.stderr])
    assert traces[3].x.tolist() == [1.0, 1.0]
    assert traces[4].y.tolist() == pytest.approx(avg.values.tolist())
    assert worst.value == 0.03 and avg.value == pytest.approx(0.0015)  # max of restarts, mean of samples
    assert list(fig.layout.xaxis.ticktext) == ["w", "a"]
    mpl = plot_sharpness_values(rs, backend="matplotlib")
    ax = mpl.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["worst_case l2 rho=0.05", "average_case gaussian rho=0.05"]
    assert ax.lines[0].get_ydata().tolist() == [worst.value] and ax.lines[1].get_linestyle() == "None"


def test_plot_functional_distance_draws_rms_and_disagreement():
    from landscape.plot import plot_functional_distance

    rs = [FunctionalDistance(rms=0.25, disagreement=0.1), FunctionalDistance(rms=0.5, disagreement=0.3)]
    fig = plot_functional_distance(rs, labels=["ab", "ac"])
    rms = [t for t in fig.data if t.yaxis in (None, "y")]
    rate = [t for t in fig.data if t.yaxis == "y2"]
    assert [t.y.tolist() for t in rms] == [[0.25], [0.5]] and [t.x.tolist() for t in rms] == [[0.0], [1.0]]
    assert [t.y.tolist() for t in rate] == [[0.1], [0.3]]
    assert fig.layout.yaxis2.range == (0, 1.02)
    with pytest.raises(ValueError, match="labels"):
        plot_functional_distance(rs, labels=["ab"])
    with pytest.raises(TypeError, match="FunctionalDistance"):
        plot_functional_distance([_barrier()])
