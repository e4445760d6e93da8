"""Persistent Neurons, Fig. 12: Hessian eigenvalue density of the plain vs the championship ResNet.

000 Sec. 5, Fig. 12: spectral densities (PyHessian, stochastic Lanczos quadrature) of the vanilla ResNet-18 and
the championship of its partial persistent training (Fig. 11): "the championship persistent model's spectrum has
fewer outliers than the plain model"; "persistent training further shortened the distance between the largest
eigenvalue of the Hessian and the bulk". Here: :func:`landscape.hessian.hessian_spectrum` (SLQ density, Lanczos
top eigenvalues) of the training cross-entropy, BatchNorm in eval mode (running statistics), on the models of
the Fig. 11 run (shared cache, ``figures/_persistent_common.py``).

Definitions fixed before measuring: the *bulk edge* is the 99th percentile of the SLQ spectral measure (the
eigenvalue below which 99% of the spectrum's mass lies); the *gap* is the top eigenvalue over the bulk edge;
*outliers* are Ritz values above 5 times the bulk edge, counted per SLQ probe and averaged over the probes.
If the championship is the plain model itself (no persistent iteration beat it on validation accuracy) the
claims are not testable and the best persistent iteration is shown for orientation.

Quick scale: the small ResNet of Fig. 11's quick run, 512 training images, 3 probes of 60 Lanczos steps; full
scale: ResNet-18 on 1,000 CIFAR-10 training images, 3 probes of 100 steps (PyHessian's ``iter``).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.figure
import numpy as np
from torch import nn

from figures._persistent_common import (
    SOURCE,
    RunSetup,
    best_persistent,
    cache_dir,
    iteration_model,
    partial_setup,
    run_persistent,
    torch_threads,
)
from figures.contract import Claim, FigureResult, Panel, Scale, register_figure
from landscape.hessian import HessianSpectrum, hessian_spectrum
from landscape.plot_hessian import plot_spectrum_density

BULK_MASS = 0.99
OUTLIER_FACTOR = 5.0


def bulk_edge(spec: HessianSpectrum, mass: float = BULK_MASS) -> float:
    """The eigenvalue below which ``mass`` of the SLQ spectral measure lies."""
    nodes, w = spec.spectral_measure()
    order = np.argsort(nodes)
    cum = np.cumsum(w[order])
    return float(nodes[order][min(int(np.searchsorted(cum, mass * cum[-1])), len(cum) - 1)])


def outliers(spec: HessianSpectrum, edge: float, factor: float = OUTLIER_FACTOR) -> float:
    """Mean number per probe of Ritz values above ``factor * edge`` (a positive edge)."""
    thr = factor * max(edge, 0.0)
    return float(np.mean([(row[wr > 0] > thr).sum() for row, wr in zip(spec.nodes, spec.weights)]))


def summary(spec: HessianSpectrum) -> dict[str, float]:
    """Top eigenvalue, bulk edge, their ratio and the outlier count of a spectrum."""
    edge = bulk_edge(spec)
    top = float(spec.top_eigenvalues[0]) if len(spec.top_eigenvalues) else float(spec.nodes.max())
    return {"top": top, "edge": edge, "ratio": top / edge if edge > 0 else float("inf"),
            "outliers": outliers(spec, edge)}


def figure12(scale: Scale | str, data_dir: Path | str | None = None, cache: Path | str | None = None,
             progress: bool = False, setup: RunSetup | None = None, images: int | None = None,
             probes: int = 3, steps: int | None = None, top_k: int = 5) -> FigureResult:
    """The figure at a scale (or for an explicit setup and spectrum settings)."""
    full = Scale(scale) is Scale.FULL
    setup = setup or partial_setup("resnet", scale, data_dir)
    images = images or (1000 if full else 512)
    steps = steps or (100 if full else 60)
    pt = run_persistent(setup, cache, progress)
    c = pt.champion_
    other = c if c > 0 else best_persistent(pt)
    x, y = setup.splits().train
    data = (x[:images], y[:images])
    spectra = []
    with torch_threads(1):
        for it in (0, other):
            spectra.append(hessian_spectrum(iteration_model(pt, it), nn.functional.cross_entropy, data,
                                            n_probes=probes, steps=steps, top_k=top_k, seed=0, bn_mode="eval",
                                            data_description=f"{images} training images", progress=progress))
    sp, so = summary(spectra[0]), summary(spectra[1])
    who = f"championship (iteration {c})" if other == c else f"best persistent iteration ({other})"
    labels = ["plain", who]
    title = "Fig. 12: Hessian eigenvalue density, plain vs " + who
    fig = plot_spectrum_density(spectra, labels, title=title)
    mfig = matplotlib.figure.Figure(figsize=(7.5, 4.5), layout="constrained")
    ax = mfig.add_subplot()
    plot_spectrum_density(spectra, labels, backend="matplotlib", title=title, ax=ax)
    for s, color, name in ((sp, "#1f77b4", "plain"), (so, "#ff7f0e", labels[1])):
        fig.add_vline(x=s["edge"], line_dash="dash", line_color=color, annotation_text=f"bulk edge, {name}")
        ax.axvline(s["edge"], linestyle="--", color=color, linewidth=1, label=f"bulk edge ({name})")
    ax.legend(fontsize="small")
    testable = other == c
    why = "" if testable else (" Not testable: the championship is the plain model itself here (no persistent "
                               f"iteration beat it on validation accuracy); numbers for iteration {other}.")

    def nums(s: dict[str, float]) -> str:
        return (f"top {s['top']:.4g}, bulk edge {s['edge']:.4g}, ratio {s['ratio']:.4g}, outliers "
                f"{s['outliers']:.3g}")

    src = f"{SOURCE}, Sec. 5, Fig. 12"
    claims = [
        Claim(
            statement="Persistent training shortens the distance between the largest Hessian eigenvalue and the "
                      "bulk: top eigenvalue / bulk edge is smaller for the championship.",
            paper_value=None, source=src, measured=f"{so['ratio']:.4g} vs {sp['ratio']:.4g}",
            held=bool(so["ratio"] < sp["ratio"]) if testable else None,
            detail=f"plain: {nums(sp)}; {labels[1]}: {nums(so)}. Bulk edge = {100 * BULK_MASS:g}th percentile of the "
                   f"SLQ spectral measure ({probes} probes x {steps} Lanczos steps); top eigenvalue by Lanczos."
                   + why,
        ),
        Claim(
            statement="The championship's Hessian spectrum has fewer outliers than the plain model's.",
            paper_value=None, source=src, measured=f"{so['outliers']:.3g} vs {sp['outliers']:.3g}",
            held=bool(so["outliers"] < sp["outliers"]) if testable else None,
            detail=f"Ritz values above {OUTLIER_FACTOR:g} x the bulk edge, mean per SLQ probe." + why,
        ),
    ]
    return FigureResult(
        caption=f"Fig. 12: Hessian eigenvalue densities (SLQ, Gaussian broadening, log scale) of the plain model and "
                f"the {labels[1]} of the partial persistent ResNet run of Fig. 11; dotted lines: top eigenvalues, "
                f"dashed: bulk edges ({100 * BULK_MASS:g}% of the spectral mass below). The paper draws the two "
                "densities side by side.",
        panels=[Panel("density", plotly=fig, mpl=mfig)], claims=claims,
        scaling={"model": setup.describe_model() + " (paper: ResNet-18)", **setup.scaling(),
                 "hessian": f"training cross-entropy on {images} training images, eval-mode BatchNorm, {probes} SLQ "
                            f"probes x {steps} steps, top {top_k} eigenvalues"},
    )


@register_figure("persistent_fig12", paper="persistent",
                 title="Fig. 12: Hessian eigenvalue density, plain vs championship ResNet")
def run(scale: Scale, data_dir: Path | None, out: Path, progress: bool) -> FigureResult:
    return figure12(scale, data_dir, cache_dir(out), progress)
