"""The papers' claims as data (figures/claims.py): the files parse, every claim is used, verdicts follow the rules."""

import ast
import importlib
import re
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


def _book_figures(arg: ast.expr, module: str) -> list[str]:
    """The figures a ``ClaimBook``'s first argument names: a constant, or an f-string (``f"im_fig{number}"``, one
    function behind several registered figures) matched against the figures the module registers."""
    if isinstance(arg, ast.Constant):
        return [arg.value]
    if isinstance(arg, ast.JoinedStr):
        pattern = "".join(re.escape(v.value) if isinstance(v, ast.Constant) else ".+" for v in arg.values)
        return [n for n, spec in registered().items() if spec.module == module and re.fullmatch(pattern, n)]
    return []


def _book_keys_used(module: str) -> set[tuple[str, str]]:
    """(figure, key) pairs a module decides: ``ClaimBook("fig", ...)`` bound to a name, then ``name("key", ...)``."""
    tree = ast.parse(Path(importlib.import_module(module).__file__).read_text())
    books: dict[str, list[str]] = {}
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            f = node.value.func
            if isinstance(f, ast.Name) and f.id == "ClaimBook" and node.value.args:
                for t in node.targets:
                    if isinstance(t, ast.Name):
                        books[t.id] = _book_figures(node.value.args[0], module)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in books and node.args:
            if isinstance(node.args[0], ast.Constant):
                used |= {(fig, node.args[0].value) for fig in books[node.func.id]}
    return used


@pytest.mark.parametrize("paper", PAPERS)
def test_every_claim_in_a_file_is_decided_by_its_figure(paper):
    discover()
    modules = {spec.module for spec in registered().values() if spec.paper.value == paper}
    used = set().union(*(_book_keys_used(m) for m in modules))
    listed = {(fig, key) for fig, table in paper_claims(paper).items() for key in table}
    assert listed <= used, f"claims listed in {claims_file(paper)} that no figure decides: {sorted(listed - used)}"


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
    up = paired_effect([1.0, 1.2, 1.1, 1.3, 1.2], [0.0, 0.1, 0.0, 0.2, 0.1])
    c = toy_book("grows", [1.0, 1.1], up, reps=5)
    assert c.verdict is verdict_for(up, direction=1) is Verdict.HELD
    assert c.paper_value == 0.5 and c.scale == "quick" and c.source == "Toy 2026, Sec. 1"
    assert c.detail == f"mean over 5 seeds; {up}"
    noise = paired_effect([1.0, -1.0, 0.5, -0.4], [0.0, 0.0, 0.0, 0.0])
    assert toy_book("grows", 0.0, noise, reps=4).verdict is Verdict.INCONCLUSIVE
    down = paired_effect([0.0, 0.1, 0.0, 0.2], [1.0, 1.2, 1.1, 1.3])
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
