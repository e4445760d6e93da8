"""The papers' claims as data (figures/claims.py): the files parse, every claim is used, verdicts follow the rules."""

import ast
import importlib
from pathlib import Path

import pytest

from figures import claims as book_module
from figures.claims import ClaimBook, _spec, claims_file, paper_claims
from figures.contract import Paper, discover, registered
from figures.verdict import Verdict, at_least, paired_effect, verdict_for

PAPERS = [p.value for p in Paper if claims_file(p.value).is_file()]


@pytest.mark.parametrize("paper", PAPERS)
def test_every_claim_file_parses_and_names_registered_figures(paper):
    discover()
    names = registered()
    specs = paper_claims(paper)
    assert specs, f"{claims_file(paper)} is empty"
    for fig, table in specs.items():
        assert fig in names and names[fig].paper.value == paper, f"{fig} is not a registered figure of {paper}"
        for key, spec in table.items():
            assert spec.statement.strip() and spec.source.strip() and key == spec.key


def _strings(module: str) -> set[str]:
    """The string constants of a module's source (a claim's key: ``book("key", ...)``, a helper's argument, a table)."""
    tree = ast.parse(Path(importlib.import_module(module).__file__).read_text())
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


@pytest.mark.parametrize("paper", PAPERS)
def test_every_claim_in_a_file_is_decided_by_its_figure(paper):
    # Every (figure, key) of the file is named in the module that registers the figure, which builds a ClaimBook.
    discover()
    figures = registered()
    listed = {(fig, key) for fig, table in paper_claims(paper).items() for key in table}
    unused = sorted(
        (fig, key)
        for fig, key in listed
        if fig not in figures
        or key not in _strings(figures[fig].module)
        or "ClaimBook" not in Path(importlib.import_module(figures[fig].module).__file__).read_text()
    )
    assert not unused, f"claims listed in {claims_file(paper)} that no figure decides: {unused}"


@pytest.fixture
def toy_book(tmp_path, monkeypatch):
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "claims.toml").write_text(
        """
[toy_a.grows]
statement = "It grows."
source = "Toy 2026, Sec. 1"
direction = 1
paper_value = 0.5
detail = "mean over {reps} seeds; {effect}"

[toy_a.exact]
statement = "It is exact."
source = "Toy 2026, Sec. 2"
detail = "largest error {err:.2g}"
"""
    )
    monkeypatch.setattr(book_module, "_ROOT", tmp_path)
    paper_claims.cache_clear()
    yield ClaimBook("toy_a", scale="quick")
    paper_claims.cache_clear()


def test_verdict_comes_from_the_effect_in_the_files_direction(toy_book):
    # differences 1.0, 1.05, 1.1, 1.1, 1.15: a real spread (4 of 5 equal differences would go to the sign test)
    up = paired_effect([1.0, 1.2, 1.1, 1.3, 1.2], [0.0, 0.15, 0.0, 0.2, 0.05])
    c = toy_book("grows", [1.0, 1.1], up, reps=5)
    assert c.verdict is verdict_for(up, direction=1) is Verdict.HELD
    assert c.paper_value == 0.5 and c.scale == "quick" and c.source == "Toy 2026, Sec. 1"
    assert c.detail == f"mean over 5 seeds; {up}"
    noise = paired_effect([1.0, -1.0, 0.5, -0.4], [0.0, 0.0, 0.0, 0.0])
    assert toy_book("grows", 0.0, noise, reps=4).verdict is Verdict.INCONCLUSIVE
    down = paired_effect([0.0, 0.15, 0.05, 0.2], [1.0, 1.2, 1.1, 1.3])
    assert toy_book("grows", 0.0, down, reps=4).verdict is Verdict.NOT_HELD


def test_exact_checks_own_rules_and_failed_premises(toy_book):
    assert toy_book("exact", 1e-12, held=True, err=1e-12).verdict is Verdict.HELD
    assert toy_book("exact", 0.3, held=False, err=0.3).verdict is Verdict.NOT_HELD
    assert toy_book("exact", 0.3, verdict="inconclusive", err=0.3).verdict is Verdict.INCONCLUSIVE
    failed = at_least("the runs converged", 0.2, 0.9)
    c = toy_book("exact", 1e-12, held=True, premises=[failed], err=1e-12)
    assert c.verdict is Verdict.NOT_TESTED and c.detail.startswith("premise not met: the runs converged")


def test_template_mismatch_names_the_claim_and_the_fields(toy_book):
    up = paired_effect([1.0, 1.2, 1.1], [0.0, 0.1, 0.0])
    with pytest.raises(ValueError, match=r"toy_a.grows.*needs \['effect', 'reps'\].*\['reps', 'typo'\]"):
        toy_book("grows", 1.0, up, reps=3, typo=1)
    with pytest.raises(ValueError, match="toy_a.grows.*and no effect"):
        toy_book("grows", 1.0, reps=3)
    with pytest.raises(ValueError, match="toy_a.exact has an effect but no direction"):
        toy_book("exact", 1.0, up, err=1.0)
    with pytest.raises(KeyError, match="no claim 'nope'.*grows"):
        toy_book("nope", 1.0)
    with pytest.raises(KeyError, match="no claims for figure 'toy_b'"):
        ClaimBook("toy_b")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"statement": "s"}, r"missing or empty \['source'\]"),
        ({"statement": "s", "source": "x", "held": True}, r"unknown fields \['held'\]"),
        ({"statement": "s", "source": "x", "direction": 0}, "direction must be 1 or -1"),
        ({"statement": "s", "source": "x", "detail": "{} seeds"}, "positional field"),
        ("s", "a claim is a table"),
    ],
)
def test_malformed_claims_are_refused_with_the_table_named(table, message):
    with pytest.raises(ValueError, match=message) as e:
        _spec(Path("claims.toml"), "fig", "key", table)
    assert str(e.value).startswith("claims.toml [fig.key]: ")


def test_a_statement_may_be_a_template_filled_like_the_detail(tmp_path, monkeypatch):
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "claims.toml").write_text(
        '[toy_c.agree]\nstatement = "The {n} runs agree."\nsource = "Toy 2026"\ndetail = "spread {cv:.2f}"\n'
    )
    monkeypatch.setattr(book_module, "_ROOT", tmp_path)
    paper_claims.cache_clear()
    try:
        book = ClaimBook("toy_c")
        assert book["agree"].fields == {"n", "cv"}
        c = book("agree", 0.123, held=True, n=3, cv=0.123)
        assert (c.statement, c.detail) == ("The 3 runs agree.", "spread 0.12")
        with pytest.raises(ValueError, match=r"needs \['cv', 'n'\], got \['cv'\]"):
            book("agree", 0.1, held=True, cv=0.1)
    finally:
        paper_claims.cache_clear()
    with pytest.raises(ValueError, match="positional field"):
        _spec(Path("claims.toml"), "fig", "key", {"statement": "{} runs", "source": "x"})


def test_not_held_by_the_paper_effect_says_why():
    # Persistent Fig. 7's "persistent training improves the bad init" (paper +1.84 points): an interval covering 0
    # that stops below the paper's effect is not held, and the detail must say it is the size that decides, not a sign
    book = ClaimBook("persistent_fig7_8", scale="quick")
    values = dict(champion=3, champ_test=0.82, plain_test=0.82, plain_val=0.78, champ_val=0.79, test="t", seeds="s")
    covering = paired_effect([-0.010, 0.0, 0.005, 0.002])  # [-0.012, +0.011] points/100: below +0.0184
    assert covering.ci_low < 0 < covering.ci_high < 0.0184
    claim = book("persistent-improves-bad", [-1.0, 0.0, 0.5, 0.2], covering, **values)
    assert claim.verdict is Verdict.NOT_HELD and "covers 0" in claim.detail and "0.0184" in claim.detail
    # a not held by the sign (interval below 0) and an inconclusive one carry no such sentence
    below = paired_effect([-0.03, -0.02, -0.025])
    assert "covers 0" not in book("persistent-improves-bad", [-3.0, -2.0, -2.5], below, **values).detail
    wide = paired_effect([-0.05, 0.0, 0.06])
    claim = book("persistent-improves-bad", [-5.0, 0.0, 6.0], wide, **values)
    assert claim.verdict is Verdict.INCONCLUSIVE and "covers 0" not in claim.detail
    # a failed premise makes the claim not tested: no reason for a "not held" it is not given
    failed = at_least("the bad initialization is the worse one", 0.5, 1.0)
    claim = book("persistent-improves-bad", [-1.0, 0.0, 0.5, 0.2], covering, premises=[failed], **values)
    assert claim.verdict is Verdict.NOT_TESTED and "covers 0" not in claim.detail
