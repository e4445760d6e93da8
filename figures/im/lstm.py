"""Im, Tao & Branson: the LSTM language model (Sec. 3.1, Table 1, Fig. 4), on embedded English or Penn Treebank.

The paper's LSTM "was tested on the Penn Treebank next-word prediction data set" (Sec. 3.1), beside the VGG and NIN, and
states its findings for all three: "for every pair of optimization algorithms ... the training loss between the final
weights for different algorithms shows a sharp increase along the interpolated path" (Sec. 4.1, Table 1) and the
minima found "are not different in terms of their final quality" (Sec. 4.2, Fig. 4). It gives no settings for the
LSTM; the readings here (fixed before measuring):

- Model: a word-level LSTM language model (:class:`figures.im._setup.WordLSTM`: embedding, LSTM, linear decoder);
  every sequence of ``lstm_seq`` words starts from a zero state (no state carried across sequences).
- Quick scale: CPython's own English documentation (``pydoc_data.topics``, about 108,000 training words), vocabulary of
  the 1,000 most frequent words, 800 training sequences of 20 words, embedding 32, LSTM 64, 5 epochs of batch 32.
  Medium: the same model on all of that text (about 5,400 sequences), 10 epochs. Full: Penn
  Treebank from ``--data-dir`` (``ptb.train.txt`` / ``ptb.test.txt``), Zaremba et al.'s "small" model (2 x 200, 35
  steps, batch 20, 13 epochs, vocabulary 10,000), a common reading of "the LSTM" on that set.
- Methods: SGD, Adam and Adadelta (the three of the appendix's switching figures) from shared initial weights and the
  same minibatch order, with the learning-rate schedule of the other Im figures (halved between 8 equal stages).
  SGD runs at 0.2, the top of the paper's grid (Sec. 3.4; LSTM language models are trained with large SGD rates);
  Adam at 0.001 and Adadelta at 1.0 (the package's defaults). No rate was searched.
- "A sharp rise" = :func:`figures.im._setup.rise_score` >= 1 (peak >= 2x the larger endpoint loss and >= 0.05 nats above
  it: the gallery's test, as in its Table 1 figure). "Not different in quality" = per-word test loss: one-way ANOVA
  across methods p >= 0.05 and the best-minus-worst method's interval within +-0.05 nats (5% perplexity).

Statistics over ``setup.repetitions_lstm`` initializations. Premise of both claims: the runs ended at critical points
(:func:`figures.im._setup.converged_premise`: the gallery's reading of the paper's definition of its minima, "for
which the gradient is approximately 0", Sec. 3.3, as a final gradient norm at most 1% of the initial).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from figures.claims import ClaimBook
from figures.contract import FigureResult, Scale, register_figure
from figures.im._measures import converged_premise, no_difference, rise_score
from figures.im._setup import (
    GALLERY,
    Curve,
    ImRuns,
    ImSetup,
    RunSpec,
    color,
    im_figure,
    init_dash,
    multiples_panels,
    ptb_dir,
)
from figures.im._setup import METHOD_LABELS as LABELS
from figures.im.fig4 import anova
from figures.verdict import paired_effect
from landscape.analyze import line

__all__ = ["LSTM_METHODS", "lstm_figure", "lstm_setup"]

LSTM_METHODS = {"sgd": {"lr": 0.2}, "adam": {}, "adadelta": {}}
"""The methods compared and their overrides of the package's default hyperparameters."""

MARGIN_NATS = 0.05
"""Largest test-loss difference between methods still read as "not different" (fixed before measuring)."""


def lstm_setup(scale: Scale | str, data_dir: Path | str | None = None) -> ImSetup:
    """The LSTM figure's settings at a gallery scale (see the module docstring).

    Raises:
        MissingDataError: At full scale when ``data_dir`` does not hold Penn Treebank's text files.
    """
    scale = Scale(scale)
    if scale is Scale.QUICK:
        return ImSetup(name="quick", dataset="pydoc", train_size=800, epochs=5, dropout=0.1, surface_size=512)
    if scale is Scale.MEDIUM:
        return ImSetup(name="medium", dataset="pydoc", train_size=None, epochs=10, dropout=0.1, surface_size=1000)
    root = ptb_dir(data_dir)  # fails at once, naming the files, when they are missing
    return ImSetup(
        name="full",
        dataset="ptb",
        data_dir=str(root),
        train_size=None,
        epochs=13,
        batch_size=20,
        dropout=0.0,
        surface_size=2000,
        lstm_vocab=10_000,
        lstm_embed=200,
        lstm_hidden=200,
        lstm_layers=2,
        lstm_seq=35,
    )


def _spec(method: str, k: int) -> RunSpec:
    return RunSpec(method, init=k, arch="lstm", batchnorm=False, hyper=LSTM_METHODS[method])


@register_figure("im_lstm", title="Im et al. LSTM language model: minima of three methods, quality", **GALLERY)
@im_figure(settings=lstm_setup)
def lstm_figure(runs: ImRuns) -> FigureResult:
    """Compute and draw the LSTM figure (see the module docstring) from the runs of one setting.

    Signature: ``(scale="quick", data_dir=None, *, cache=None, progress=False, setup=None)``, see
    :func:`~figures.im._runs.im_figure`; the setting needs a text ``dataset`` (``"pydoc"`` or ``"ptb"``).
    """
    setup = runs.setup
    if setup.dataset not in ("pydoc", "ptb"):
        raise ValueError(f"the LSTM figure needs a text dataset ('pydoc' or 'ptb'), got {setup.dataset!r}")
    reps = setup.repetitions_lstm
    methods = list(LSTM_METHODS)
    got = runs.table({(m, k): _spec(m, k) for k in range(reps) for m in methods})
    template = setup.model(_spec("sgd", 0))
    data = runs.surface_data()
    alphas = np.linspace(0, 1, 21)
    pairs = list(itertools.combinations(methods, 2))
    lines, scores = {}, []
    for k in range(reps):
        sc = []
        for a, b in pairs:
            z = line(template, got[a, k].final, got[b, k].final, data, alphas=alphas, metrics=("loss",)).metrics["loss"]
            lines[a, b, k] = z
            sc.append(rise_score(z))
        scores.append(float(min(sc)))
    test = np.array([[got[m, k].last("test_loss") for k in range(reps)] for m in methods])  # (methods, inits)
    train = np.array([[got[m, k].last("trainset_loss") for k in range(reps)] for m in methods])
    conv = converged_premise(list(got.values()), data, f"the {len(got)} LSTM runs reached critical points")
    finite = bool(np.isfinite(scores).all() and min(scores) > 0)
    e1 = paired_effect(np.log(scores), 0.0) if finite else None
    _, p = anova(list(test))
    hi, lo = int(np.argmax(test.mean(1))), int(np.argmin(test.mean(1)))
    e2 = paired_effect(test[hi], test[lo])
    table = ", ".join(
        f"{LABELS[m]} train {train[i].mean():.3f} / test {test[i].mean():.3f} (perplexity {np.exp(test[i].mean()):.0f})"
        for i, m in enumerate(methods)
    )
    book = ClaimBook("im_lstm", scale=setup.name)
    claims = [
        book(
            "pairs-rise-sharply",
            scores,
            e1,
            premises=[conv],
            pairs=len(pairs),
            reps=reps,
            per_pair=", ".join(f"{LABELS[a]}-{LABELS[b]} {rise_score(lines[a, b, 0]):.3g}" for a, b in pairs),
            not_tested="" if e1 else " Not tested: a loss on a line is not finite.",
        ),
        book(
            "quality-not-different",
            list(test.mean(1)),
            e2,
            premises=[conv],
            verdict=no_difference(p, e2, MARGIN_NATS),
            methods=", ".join(LABELS[m] for m in methods),
            reps=reps,
            p=p,
            worst=LABELS[methods[hi]],
            best=LABELS[methods[lo]],
            margin=MARGIN_NATS,
            table=table,
        ),
    ]

    curves = []
    for metric, what in (("trainset_loss", "training loss"), ("test_loss", "test loss")):
        curves.append(
            (
                what,
                [
                    Curve(
                        np.arange(len(got[m, k].history)),
                        got[m, k].curve(metric),
                        f"{LABELS[m]} init {k}",
                        color(m),
                        dash=init_dash(k),
                    )
                    for m in methods
                    for k in range(reps)
                ],
            )
        )
    (fc,) = multiples_panels(
        [
            (
                "learning",
                curves,
                "epoch",
                "loss per word (nats)",
                "LSTM language model: learning curves per method and initialization",
            )
        ],
        cols=2,
        sharey=False,
        width=4.2,
        height=3.0,
    )
    between = [
        (
            f"{LABELS[a]} (0) to {LABELS[b]} (1)",
            [Curve(alphas, lines[a, b, k], f"init {k}", "#444444", dash=init_dash(k)) for k in range(reps)],
        )
        for a, b in pairs
    ]
    (fl,) = multiples_panels(
        [
            (
                "interpolation",
                between,
                "alpha",
                "training loss",
                "LSTM: training loss between the final weights of two methods",
            )
        ],
        cols=3,
        logy=True,
    )
    return FigureResult(
        caption="The LSTM language model of Im et al. (Sec. 3.1) trained with SGD, Adam and Adadelta from shared "
        "initializations (line styles). Top: training and test loss per word and epoch; bottom: training "
        "loss on the straight line between two methods' final weights, per initialization. "
        + (
            "Scaled down: embedded English text (CPython's documentation), not Penn Treebank (see scaling)."
            if setup.dataset == "pydoc"
            else "On Penn Treebank."
        ),
        panels=[fc, fl],
        claims=claims,
        scaling={
            **setup.scaling(reps, arch="lstm"),
            "model": setup.describe_model("lstm") + " (paper: an LSTM on Penn Treebank, settings not given)",
            "learning_rates": "SGD 0.2 (top of the paper's grid), Adam 0.001, Adadelta 1.0; not searched",
            "sequence_length": setup.lstm_seq,
        },
    )
