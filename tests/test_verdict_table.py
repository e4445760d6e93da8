"""The golden verdict table (issue 20): extraction, TSV round trip, the diff, and the current figures against it."""

import json
from pathlib import Path

import pytest

from figures.contract import discover, registered
from figures.make_all import main as make_all
from figures.verdict_table import (
    GOLDEN,
    VerdictRow,
    compare,
    gallery_figures,
    golden_report,
    main,
    near_line,
    read_table,
    statement_key,
    verdict_table,
    write_table,
)

# The cheapest figures that train nothing shared with others (runtime_s of a quick gallery: under a second each).
FAST_FIGURES = ("toy_demo", "persistent_fig1_2")


def _doc(verdicts: dict[str, list[str]], status: dict[str, str] | None = None) -> dict:
    """A synthetic claims.json: figure -> one claim per verdict, statements ``"Claim <i> of <figure>."``."""
    return {
        "format": 2,
        "scale": "quick",
        "figures": [
            {
                "name": name,
                "status": (status or {}).get(name, "ok"),
                "claims": [{"statement": f"Claim {i} of {name}.", "verdict": v} for i, v in enumerate(vs)],
            }
            for name, vs in verdicts.items()
        ],
    }


def test_table_has_one_row_per_claim_of_finished_figures() -> None:
    doc = _doc({"b": ["held", "not held"], "a": ["inconclusive"], "c": ["held"]}, status={"c": "failed"})
    rows = verdict_table(doc)
    assert rows == [
        VerdictRow("a", 0, "claim-0-of-a", "inconclusive"),
        VerdictRow("b", 0, "claim-0-of-b", "held"),
        VerdictRow("b", 1, "claim-1-of-b", "not held"),
    ]
    # format 1: only ``held``
    old = {"figures": [{"name": "x", "status": "ok", "claims": [{"statement": "s", "held": None}]}]}
    assert verdict_table(old)[0].verdict == "not tested"
    with pytest.raises(ValueError, match="claims.json"):
        verdict_table({"format": 2})


def test_statement_key_is_short_and_ignores_punctuation() -> None:
    s = "Plain GD from w_ini = (-0.335, -1.4), lr 0.001, 50,000 steps converges to the sub-optimal minimum."
    k = statement_key(s)
    assert k == statement_key(s.replace(",", " ,").replace("(", "[")) and len(k) <= 60
    assert k.startswith("plain-gd-from-w-ini") and statement_key(s.upper()) == k


def test_tsv_round_trip_and_bad_files(tmp_path: Path) -> None:
    rows = verdict_table(_doc({"f": ["held", "not tested"], "g": ["not held"]}))
    p = write_table(rows, tmp_path / "t.tsv")
    assert read_table(p) == rows
    (tmp_path / "bad.tsv").write_text("figure\tclaim\tkey\tverdict\nf\tzero\tk\theld\n")
    with pytest.raises(ValueError, match="bad.tsv:2"):
        read_table(tmp_path / "bad.tsv")
    (tmp_path / "nohead.tsv").write_text("f\t0\tk\theld\n")
    with pytest.raises(ValueError, match="header"):
        read_table(tmp_path / "nohead.tsv")


def test_a_changed_added_or_removed_verdict_shows_in_the_diff() -> None:
    old = verdict_table(_doc({"f": ["held", "not held"], "g": ["inconclusive"], "h": ["held"]}))
    assert not compare(old, old) and str(compare(old, old)) == "verdict table: no change"
    new = verdict_table(_doc({"f": ["held", "held", "not tested"], "g": ["inconclusive"]}))
    diff = compare(old, new)
    assert diff
    assert [(o.figure, o.claim, o.verdict, n.verdict) for o, n in diff.changed] == [("f", 1, "not held", "held")]
    assert [(r.figure, r.claim) for r in diff.added] == [("f", 2)]
    assert [(r.figure, r.claim) for r in diff.removed] == [("h", 0)]
    text = str(diff)
    assert "1 changed (0 near their line), 1 added, 1 removed" in text
    assert "~ f #1 claim-1-of-f: not held -> held" in text
    assert "+ f #2 claim-2-of-f: not tested" in text and "- h #0 claim-0-of-h: held" in text
    # a changed statement at the same index is a change too; restricting to figures hides the others
    reworded = [VerdictRow("g", 0, "another-claim", "inconclusive")]
    assert "claim-0-of-g -> another-claim" in str(compare(old, reworded, figures=["g"]))
    assert not compare(old, new, figures=["g"])


def test_cli_exits_1_on_a_change_and_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    claims, golden = tmp_path / "claims.json", tmp_path / "golden.tsv"
    claims.write_text(json.dumps(_doc({"f": ["held"]})))
    assert main([str(claims), "--golden", str(golden), "--write"]) == 0
    assert main([str(claims), "--golden", str(golden)]) == 0
    assert "no change" in capsys.readouterr().out
    claims.write_text(json.dumps(_doc({"f": ["not held"]})))
    assert main([str(claims), "--golden", str(golden)]) == 1
    assert "~ f #0 claim-0-of-f: held -> not held" in capsys.readouterr().out
    assert "WARNING" in golden_report(_doc({"f": ["not held"]})["figures"], golden)
    with pytest.raises(SystemExit, match="no such file"):
        main([str(tmp_path / "missing.json"), "--golden", str(golden)])


def test_figures_not_in_a_partial_gallery_are_not_run_not_removed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A gallery made with --only holds some figures: the others are listed once as not run (no difference), apart
    from a claim that disappeared from a figure that ran, a figure that failed, and one no longer registered."""
    claims, golden = tmp_path / "claims.json", tmp_path / "golden.tsv"
    write_table(verdict_table(_doc({"a": ["held", "held"], "b": ["held"], "c": ["not held"], "d": ["held"]})), golden)
    partial = _doc({"a": ["held", "held"]})
    partial["not_in_gallery"] = ["b", "c", "d", "e"]  # e: registered, but not in the golden table
    claims.write_text(json.dumps(partial))
    assert main([str(claims), "--golden", str(golden)]) == 0
    out = capsys.readouterr().out
    assert out.strip() == "verdict table: no change in the figures that ran; 3 figures not run in this gallery " + (
        "(not compared): b, c, d"
    )
    doc = _doc({"a": ["held"], "b": ["held"]}, status={"b": "failed"})  # a lost claim 1; b failed
    doc["not_in_gallery"] = ["c"]  # d: absent and not listed, so not registered when the gallery was made
    claims.write_text(json.dumps(doc))
    assert main([str(claims), "--golden", str(golden)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "verdict table: 0 changed (0 near their line), 0 added, 3 removed",
        "- a #1 claim-1-of-a: held",
        "- b #0 claim-0-of-b: held (figure failed)",
        "- d #0 claim-0-of-d: held (figure not registered when the gallery was made)",
        "1 figure not run in this gallery (not compared): c",
    ]
    # a claims.json written before not_in_gallery existed: an absent figure was not run
    del doc["not_in_gallery"]
    not_run, why = gallery_figures(doc, ["a", "b", "c", "d"])
    assert not_run == ["c", "d"] and why == {"b": "figure failed"}
    diff = compare(read_table(golden), verdict_table(doc), not_run=not_run, why_removed=why)
    assert [(r.figure, r.claim) for r in diff.removed] == [("a", 1), ("b", 0)] and diff.not_run == ["c", "d"]
    # not run is never a difference, even restricted to a few figures
    assert not compare(read_table(golden), [], not_run=["a", "b", "c", "d"])
    assert compare(read_table(golden), [], figures=["a"], not_run=["b"]).not_run == []


def test_a_gallery_made_with_only_compares_the_figures_it_ran(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert make_all(["--only", "toy_demo", "--out", str(tmp_path), "--quiet", "--jobs", "1"]) == 0
    doc = json.loads((tmp_path / "claims.json").read_text())
    others = sorted(set(registered()) - {"toy_demo"})
    assert doc["not_in_gallery"] == others and others
    assert main([str(tmp_path / "claims.json")]) == 0
    out = capsys.readouterr().out.strip()
    golden_others = sorted({r.figure for r in read_table(GOLDEN)} - {"toy_demo"})
    assert out == f"verdict table: no change in the figures that ran; {len(golden_others)} figures not run in this " + (
        f"gallery (not compared): {', '.join(golden_others)}"
    )


def _premise(measured: float | list[float], bound: float, met: bool) -> dict:
    return {"statement": "the runs converged", "measured": measured, "threshold": bound, "met": met}


@pytest.mark.parametrize(
    ("claim", "near"),
    [
        ({"effect": {"p_value": 0.022}}, "p = 0.022"),
        ({"effect": {"p_value": 1e-5}}, None),  # decided clearly either way
        ({"effect": {"p_value": 0.6}}, None),
        ({"effect": {"p_value": float("nan")}}, None),
        # an upper bound met by every run: the largest value decides (the first to cross)
        ({"premises": [_premise([0.001, 0.014], 0.0146, True)]}, "0.014 vs bound 0.0146"),
        ({"premises": [_premise([0.001, 0.005], 0.0146, True)]}, None),
        # failed on both sides of the bound: an upper bound fails on the largest value (near here)
        ({"premises": [_premise([0.0003, 0.0137, 0.0177], 0.0146, False)]}, "0.0177 vs bound 0.0146"),
        ({"premises": [_premise([0.0003, 0.05], 0.0146, False)]}, None),
        # failed with every value beyond: all of them would have to cross, the farthest decides
        ({"premises": [_premise([0.016, 0.017], 0.0146, False)]}, "0.017 vs bound 0.0146"),
        ({"premises": [_premise([0.016, 0.04], 0.0146, False)]}, None),
        ({"premises": [_premise(0.7025, 0.5, True)]}, None),  # 40% past its bound: not near
        ({"premises": [{"statement": "qualitative", "measured": 1.0, "threshold": None, "met": True}]}, None),
    ],
)
def test_near_line_finds_verdicts_decided_at_their_line(claim: dict, near: str | None) -> None:
    reasons = near_line(claim)
    if near is None:
        assert reasons == []
    else:
        assert len(reasons) == 1 and near in reasons[0]


def test_changes_near_their_line_are_marked_and_allowed_on_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    claims, golden = tmp_path / "claims.json", tmp_path / "golden.tsv"
    write_table(verdict_table(_doc({"f": ["inconclusive", "held"]})), golden)
    doc = _doc({"f": ["held", "held"]})
    doc["figures"][0]["claims"][0]["effect"] = {"p_value": 0.03}
    claims.write_text(json.dumps(doc))
    assert main([str(claims), "--golden", str(golden)]) == 1
    out = capsys.readouterr().out
    assert "1 changed (1 near their line)" in out and "inconclusive -> held (near its line: p = 0.03)" in out
    assert main([str(claims), "--golden", str(golden), "--allow-near"]) == 0
    # a change decided clearly is not allowed, nor is a removed row
    doc["figures"][0]["claims"][1]["verdict"] = "not held"
    claims.write_text(json.dumps(doc))
    assert main([str(claims), "--golden", str(golden), "--allow-near"]) == 1
    doc["figures"][0]["claims"] = doc["figures"][0]["claims"][:1]
    claims.write_text(json.dumps(doc))
    assert main([str(claims), "--golden", str(golden), "--allow-near"]) == 1
    assert "near its line" in golden_report(doc["figures"], golden)


def test_every_registered_figure_has_rows_in_the_golden_table() -> None:
    assert not discover()
    names = set(registered())
    golden = read_table(GOLDEN)
    in_table = {r.figure for r in golden}
    assert names - in_table == set(), "figures without golden verdicts: run the quick gallery, then --write"
    assert in_table - names == set(), "golden rows of figures that no longer exist"
    for name in names:  # claim indices 0..k-1, no gaps
        idx = sorted(r.claim for r in golden if r.figure == name)
        assert idx == list(range(len(idx)))


@pytest.mark.slow
def test_fast_figures_reproduce_their_golden_verdicts(tmp_path: Path) -> None:
    assert make_all(["--only", *FAST_FIGURES, "--out", str(tmp_path), "--quiet", "--jobs", "1"]) == 0
    doc = json.loads((tmp_path / "claims.json").read_text())
    diff = compare(read_table(GOLDEN), verdict_table(doc), figures=FAST_FIGURES)
    assert not diff, str(diff)
    assert {r.figure for r in verdict_table(doc)} >= set(FAST_FIGURES)
