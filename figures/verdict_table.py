"""The golden verdict table: every claim's verdict of a gallery run, as a small TSV that a change shows in.

A gallery's ``claims.json`` holds, per figure, a list of claims with their verdicts (held, not held,
inconclusive, not tested). :func:`verdict_table` reduces it to one row per claim: the figure name, the claim's
index in that figure, a short stable key of its statement (see :func:`statement_key`) and the verdict.
:func:`write_table` / :func:`read_table` store it as TSV (``figures/golden_verdicts.tsv`` is the quick-scale
table of the current figures), and :func:`compare` lists the added, removed and changed rows, so that a
changed verdict is a visible, reviewable diff rather than a silent change in a long HTML page.

Usage::

    python -m figures.verdict_table CLAIMS_JSON [--golden figures/golden_verdicts.tsv] [--write] [--allow-near]

prints the diff of ``CLAIMS_JSON``'s table against the golden one and exits 1 if they differ (0 if equal);
``--write`` overwrites the golden table with the new one instead (after a reviewed, explained change).

A verdict decided at its line (a p-value near 0.05, a premise's measurement near its bound) can change with the
machine's floating-point paths alone. :func:`near_line` finds such claims in the new run, and the diff says, for
each changed row, how close the new run was (``near its line: p = 0.022``); ``--allow-near`` exits 0 when every
change is of that kind and no row was added or removed.
Only figures that finished (status ``ok``) contribute rows, so a failed or pending figure shows as removed rows, marked
with its status. A gallery made with ``--only`` holds some figures only: the others (``claims.json``'s
``not_in_gallery``) are listed once as not run and not compared, apart from a claim that disappeared from a figure
that ran (see :func:`gallery_figures`).

Example:
    >>> doc = {"figures": [{"name": "toy", "status": "ok", "claims": [
    ...     {"statement": "The loss goes down.", "verdict": "held"}]}]}
    >>> verdict_table(doc)
    [VerdictRow(figure='toy', claim=0, key='the-loss-goes-down', verdict='held')]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "GOLDEN",
    "HEADER",
    "VerdictDiff",
    "VerdictRow",
    "compare",
    "gallery_figures",
    "golden_report",
    "main",
    "near_line",
    "read_table",
    "statement_key",
    "verdict_table",
    "write_table",
]

GOLDEN = Path(__file__).with_name("golden_verdicts.tsv")
"""The golden quick-scale verdict table of the current figures."""

HEADER = ("figure", "claim", "key", "verdict")
"""The TSV's column names (its first line)."""

_KEY_WORDS = 8
_KEY_CHARS = 60

NEAR_P = (0.01, 0.2)
"""A significance test's p-value in this closed range counts as decided near the 0.05 line."""

NEAR_RATIO = 1.25
"""A premise's deciding measurement within this factor of its bound (either side) counts as decided near the line."""


def statement_key(statement: str) -> str:
    """A short stable key of a claim's statement: its first words, lower case, joined by ``-``.

    Only letters and digits count (numbers keep their digits: "1.5" becomes "1-5"), so the key survives
    changes of punctuation and spacing but not of the claim's opening words. The key is for a reader of the
    diff; rows are matched by figure and claim index.

    Args:
        statement: The claim's statement.

    Returns:
        At most 8 words and 60 characters, e.g. ``"plain-gd-from-w-ini-0-335-1"``.
    """
    words = re.findall(r"[a-z0-9]+", statement.lower())[:_KEY_WORDS]
    return "-".join(words)[:_KEY_CHARS].rstrip("-")


@dataclasses.dataclass(frozen=True, order=True)
class VerdictRow:
    """One claim's row of the verdict table.

    Attributes:
        figure: The registered figure name.
        claim: The claim's index in the figure's claim list (0-based).
        key: :func:`statement_key` of the statement.
        verdict: ``"held"``, ``"not held"``, ``"inconclusive"`` or ``"not tested"``.
    """

    figure: str
    claim: int
    key: str
    verdict: str


def _verdict(claim: Mapping[str, Any]) -> str:
    verdict = claim.get("verdict")
    if verdict is None:  # format-1 documents: only ``held`` (True / False / None)
        held = claim.get("held")
        verdict = "not tested" if held is None else "held" if held else "not held"
    return str(verdict)


def verdict_table(document: Mapping[str, Any]) -> list[VerdictRow]:
    """The verdict table of a ``claims.json`` document, sorted by figure name and claim index.

    Args:
        document: The parsed ``claims.json`` (schema: ``figures.contract.CLAIMS_SCHEMA``).

    Returns:
        One row per claim of every figure whose status is ``ok``.

    Raises:
        ValueError: If the document has no ``figures`` list (not a gallery's ``claims.json``).
    """
    figures = document.get("figures") if isinstance(document, Mapping) else None
    if not isinstance(figures, list):
        raise ValueError("not a gallery claims.json: no 'figures' list (write one with python -m figures.make_all)")
    rows = [
        VerdictRow(str(f["name"]), i, statement_key(str(c.get("statement", ""))), _verdict(c))
        for f in figures
        if f.get("status", "ok") == "ok"
        for i, c in enumerate(f.get("claims") or ())
    ]
    return sorted(rows)


def _number(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def near_line(claim: Mapping[str, Any]) -> list[str]:
    """Why a claim's verdict sat near its line in this run: the reasons, empty when it was decided clearly.

    Only what decided the verdict counts. A claim whose premise failed is not tested whatever else was measured, so
    its verdict is near its line only when every failed premise is (each would have to cross for the claim to be
    tested), and the reasons name those premises; a met premise near its bound or a p-value near 0.05 cannot change
    it. (Until 2026-12-08 every premise near its bound was named, met or not: Lipton Fig. 3's "clones diverge", not
    tested on its failed low-loss premise, 0.027-0.067 against 0.01, was marked near its line on its converged
    premise, 0.0088 against 0.01, which passed.) A claim whose premises all passed is near its line when any of them
    is (it would fail) or when its p-value is. Two kinds are recognised from the claim's record (the rest of a
    verdict's reasoning is free text):

    - the effect's ``p_value`` within :data:`NEAR_P` (a test at the 0.05 level);
    - a premise whose deciding ``measured`` value lies within a factor :data:`NEAR_RATIO` of its positive
      ``threshold``, on either side. For a list (one value per run, say) the record does not say whether the
      bound is an upper or a lower one, so the deciding value is inferred: for a premise met with every value on
      one side of the bound, the value nearest it (the first to cross); for one that failed with every value on
      one side, the value farthest from it (the last that would have to cross); for values on both sides, the
      largest (as for an upper bound) or the smallest (a lower one), whichever is near.

    Args:
        claim: One claim of a ``claims.json`` figure entry.

    Returns:
        Reasons such as ``["p = 0.022", "premise 'every iteration converged' failed: 0.0177 vs bound 0.0146"]``.

    Example:
        >>> near_line({"effect": {"p_value": 0.03}, "premises": []})
        ['p = 0.03']
        >>> met = {"statement": "converged", "measured": 0.0088, "threshold": 0.01, "met": True}
        >>> failed = {"statement": "low loss", "measured": 0.067, "threshold": 0.01, "met": False}
        >>> near_line({"premises": [met, failed]})  # the failed premise decided, far from its bound
        []
    """
    premises = [p for p in claim.get("premises") or () if isinstance(p, Mapping)]
    failed = [p for p in premises if p.get("met") is False]
    if failed:  # not tested: decided by the failed premises alone
        reasons = [_premise_near(p) for p in failed]
        return [r for r in reasons if r] if all(reasons) else []
    out = []
    effect = claim.get("effect")
    p = _number(effect.get("p_value")) if isinstance(effect, Mapping) else None
    if p is not None and NEAR_P[0] <= p <= NEAR_P[1]:
        out.append(f"p = {p:.2g}")
    return out + [r for r in map(_premise_near, premises) if r]


def _premise_near(premise: Mapping[str, Any]) -> str | None:
    """The reason a premise's deciding value lies near its bound (:func:`near_line`), or ``None``."""
    bound = _number(premise.get("threshold"))
    if bound is None or bound <= 0:
        return None
    measured = premise.get("measured")
    values = [v for v in map(_number, measured if isinstance(measured, list) else [measured]) if v is not None]
    if not values or min(values) <= 0:
        return None
    met = premise.get("met") is True
    above, below = [v for v in values if v > bound], [v for v in values if v < bound]
    if not above or not below:  # every value on one side (or at the bound)
        dist = [abs(math.log(v / bound)) for v in values]
        decide = [values[dist.index(min(dist) if met else max(dist))]]
    else:  # an upper bound fails on the largest value, a lower one on the smallest: either may be the one
        decide = [max(above), min(below)]
    for v in decide:
        if abs(math.log(v / bound)) <= math.log(NEAR_RATIO):
            state = "met" if met else "failed"
            return f"premise {str(premise.get('statement', ''))!r} {state}: {v:.3g} vs bound {bound:.3g}"
    return None


def near_lines(document: Mapping[str, Any]) -> dict[tuple[str, int], list[str]]:
    """:func:`near_line` of every claim of the finished figures, by ``(figure, claim index)``; only non-empty ones."""
    out = {}
    for f in document.get("figures") or ():
        if f.get("status", "ok") != "ok":
            continue
        for i, c in enumerate(f.get("claims") or ()):
            reasons = near_line(c)
            if reasons:
                out[(str(f["name"]), i)] = reasons
    return out


def write_table(rows: Iterable[VerdictRow], path: Path | str) -> Path:
    """Write the rows as TSV with a header line (sorted, so equal tables give equal files).

    Args:
        rows: The table.
        path: The ``.tsv`` file to write.

    Returns:
        The path written.
    """
    path = Path(path)
    lines = ["\t".join(HEADER)] + [f"{r.figure}\t{r.claim}\t{r.key}\t{r.verdict}" for r in sorted(rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_table(path: Path | str) -> list[VerdictRow]:
    """Read a table written by :func:`write_table`.

    Raises:
        ValueError: If the header or a row does not have the four columns (the message names the line).
    """
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or tuple(lines[0].split("\t")) != HEADER:
        raise ValueError(f"{path}: first line must be the header {'<TAB>'.join(HEADER)!r}")
    rows = []
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 4 or not parts[1].isdigit():
            raise ValueError(f"{path}:{n}: expected figure<TAB>claim index<TAB>key<TAB>verdict, got {line!r}")
        rows.append(VerdictRow(parts[0], int(parts[1]), parts[2], parts[3]))
    return sorted(rows)


@dataclasses.dataclass(frozen=True)
class VerdictDiff:
    """The difference between an old (golden) and a new verdict table.

    Attributes:
        added: Rows only in the new table.
        removed: Rows only in the old table.
        changed: ``(old, new)`` pairs of the same figure and claim index whose key or verdict differ.
        near: For changed rows whose new verdict sat near its line, the reasons (:func:`near_line`), by
            ``(figure, claim index)``.
        not_run: Figures of the old table that the new gallery did not run (made with ``--only``): their rows are
            not compared, and are not a difference.
        why_removed: Why a figure's rows are all missing, by figure (``"figure failed"``...); a figure that ran
            but lost a claim has no entry.
    """

    added: list[VerdictRow]
    removed: list[VerdictRow]
    changed: list[tuple[VerdictRow, VerdictRow]]
    near: dict[tuple[str, int], list[str]] = dataclasses.field(default_factory=dict)
    not_run: list[str] = dataclasses.field(default_factory=list)
    why_removed: dict[str, str] = dataclasses.field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    @property
    def only_near(self) -> bool:
        """Whether the tables differ only in changed verdicts that each sat near their line in the new run."""
        return (
            bool(self)
            and not self.added
            and not self.removed
            and all((o.figure, o.claim) in self.near for o, _ in self.changed)
        )

    def lines(self) -> list[str]:
        """The diff as readable lines (``+`` added, ``-`` removed, ``~`` changed), empty when equal."""
        out = [f"~ {o.figure} #{o.claim} {_change(o, n)}{self._near(o)}" for o, n in self.changed]
        out += [f"+ {r.figure} #{r.claim} {r.key}: {r.verdict}" for r in self.added]
        out += [f"- {r.figure} #{r.claim} {r.key}: {r.verdict}{self._why(r)}" for r in self.removed]
        return out

    def _why(self, row: VerdictRow) -> str:
        why = self.why_removed.get(row.figure)
        return f" ({why})" if why else ""

    def _not_run(self) -> str:
        n = len(self.not_run)
        if not n:
            return ""
        return f"{n} figure{'s' * (n != 1)} not run in this gallery (not compared): {', '.join(self.not_run)}"

    def _near(self, row: VerdictRow) -> str:
        reasons = self.near.get((row.figure, row.claim))
        return f" (near its line: {'; '.join(reasons)})" if reasons else ""

    def __str__(self) -> str:
        not_run = self._not_run()
        if not self:
            return "verdict table: no change" + (f" in the figures that ran; {not_run}" if not_run else "")
        near = sum((o.figure, o.claim) in self.near for o, _ in self.changed)
        counts = f"{len(self.changed)} changed ({near} near their line), {len(self.added)} added"
        counts += f", {len(self.removed)} removed"
        return "\n".join([f"verdict table: {counts}", *self.lines(), *([not_run] if not_run else [])])


def _change(old: VerdictRow, new: VerdictRow) -> str:
    key = old.key if old.key == new.key else f"{old.key} -> {new.key}"
    verdict = old.verdict if old.verdict == new.verdict else f"{old.verdict} -> {new.verdict}"
    return f"{key}: {verdict}"


def compare(
    old: Sequence[VerdictRow],
    new: Sequence[VerdictRow],
    figures: Iterable[str] | None = None,
    near: Mapping[tuple[str, int], list[str]] | None = None,
    *,
    not_run: Iterable[str] = (),
    why_removed: Mapping[str, str] | None = None,
) -> VerdictDiff:
    """Added, removed and changed rows of ``new`` against ``old``, matched by figure and claim index.

    Args:
        old: The reference (golden) table.
        new: The table of a new run.
        figures: Compare only these figures (for a run of a few figures); default: all of both tables.
        near: The new run's :func:`near_lines`, to annotate changed rows with.
        not_run: Figures the new gallery did not run (:func:`gallery_figures`): their old rows are listed as not
            run instead of removed.
        why_removed: Why a figure's rows are missing (:func:`gallery_figures`), to annotate removed rows with.

    Returns:
        The :class:`VerdictDiff` (false when the tables agree; figures not run are no difference).
    """
    keep = None if figures is None else set(figures)
    skipped = set(not_run)
    a = {(r.figure, r.claim): r for r in old if (keep is None or r.figure in keep) and r.figure not in skipped}
    b = {(r.figure, r.claim): r for r in new if keep is None or r.figure in keep}
    changed = sorted(((a[k], b[k]) for k in a.keys() & b.keys() if a[k] != b[k]), key=lambda p: p[0])
    notes = {
        (o.figure, o.claim): list(near[(o.figure, o.claim)]) for o, _ in changed if (o.figure, o.claim) in (near or {})
    }
    removed = sorted(a[k] for k in a.keys() - b.keys())
    why = {f: str(w) for f, w in (why_removed or {}).items() if any(r.figure == f for r in removed)}
    return VerdictDiff(
        added=sorted(b[k] for k in b.keys() - a.keys()),
        removed=removed,
        changed=changed,
        near=notes,
        not_run=sorted({r.figure for r in old if r.figure in skipped and (keep is None or r.figure in keep)}),
        why_removed=why,
    )


def gallery_figures(document: Mapping[str, Any], figures: Iterable[str]) -> tuple[list[str], dict[str, str]]:
    """Which of ``figures`` (the golden table's) a gallery did not run, and why the others' rows may be missing.

    A figure absent from the document was not run when ``not_in_gallery`` lists it (a gallery made with
    ``--only``), or when the document predates that list; absent otherwise, it was not registered when the gallery
    was made (renamed, removed, or its module failed to import), and its rows count as removed. A figure present
    but failed or pending has no rows either: removed, marked with its status.

    Args:
        document: The gallery's ``claims.json``.
        figures: The figures of the reference table.

    Returns:
        ``(not_run, why_removed)`` for :func:`compare`: the figures not run, sorted, and a reason by figure.

    Example:
        >>> doc = {"figures": [{"name": "a", "status": "failed"}], "not_in_gallery": ["b"]}
        >>> gallery_figures(doc, ["a", "b", "c"])
        (['b'], {'a': 'figure failed', 'c': 'figure not registered when the gallery was made'})
    """
    status = {str(f["name"]): str(f.get("status", "ok")) for f in document.get("figures") or ()}
    absent = set(figures) - status.keys()
    listed = document.get("not_in_gallery")
    not_run = absent if listed is None else absent & {str(n) for n in listed}
    why = {name: f"figure {s}" for name, s in status.items() if s != "ok"}
    why |= dict.fromkeys(sorted(absent - not_run), "figure not registered when the gallery was made")
    return sorted(not_run), dict(sorted(why.items()))


def golden_report(
    entries: Sequence[Mapping[str, Any]], golden: Path | str = GOLDEN, not_in_gallery: Sequence[str] = ()
) -> str:
    """The verdict diff of a gallery run's figure entries against the golden table, as text to print.

    ``figures.make_all`` prints it at the end of a whole quick-scale run: a warning, not a failure.

    Args:
        entries: The figures' ``claims.json`` entries.
        golden: The reference table.
        not_in_gallery: Registered figures the gallery does not hold (not compared).

    Returns:
        ``"verdict table: no change"``, or a warning line followed by the diff.
    """
    golden = Path(golden)
    if not golden.exists():
        return f"verdict table: no golden table at {golden} (python -m figures.verdict_table CLAIMS_JSON --write)"
    document = {"figures": list(entries), "not_in_gallery": list(not_in_gallery)}
    old = read_table(golden)
    not_run, why = gallery_figures(document, {r.figure for r in old})
    diff = compare(old, verdict_table(document), near=near_lines(document), not_run=not_run, why_removed=why)
    if not diff:
        return str(diff)
    return f"WARNING: verdicts differ from {golden.name} (review, then update it with --write)\n{diff}"


def _load(path: Path) -> Mapping[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SystemExit(f"no such file: {path} (give a gallery's claims.json, e.g. gallery/claims.json)") from None
    except json.JSONDecodeError as e:
        raise SystemExit(f"{path} is not JSON ({e}); give a gallery's claims.json") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns 1 when the tables differ (0 when equal or after ``--write``)."""
    p = argparse.ArgumentParser(prog="python -m figures.verdict_table", description=__doc__.split("\n")[0])
    p.add_argument("claims", type=Path, metavar="CLAIMS_JSON", help="a gallery's claims.json")
    p.add_argument("--golden", type=Path, default=GOLDEN, help=f"the reference table (default: {GOLDEN.name})")
    p.add_argument("--write", action="store_true", help="write the new table to --golden instead of comparing")
    p.add_argument(
        "--allow-near",
        action="store_true",
        help="exit 0 when every difference is a changed verdict that sat near its line in the new run",
    )
    args = p.parse_args(argv)
    document = _load(args.claims)
    if document.get("scale") not in (None, "quick"):
        print(f"note: {args.claims} is at scale {document['scale']!r}; the golden table is quick-scale")
    rows = verdict_table(document)
    if args.write:
        write_table(rows, args.golden)
        print(f"wrote {len(rows)} rows to {args.golden}")
        return 0
    if not args.golden.exists():
        raise SystemExit(f"no golden table at {args.golden}; create one with --write")
    old = read_table(args.golden)
    not_run, why = gallery_figures(document, {r.figure for r in old})
    diff = compare(old, rows, near=near_lines(document), not_run=not_run, why_removed=why)
    print(diff)
    return 0 if not diff or (args.allow_near and diff.only_near) else 1


if __name__ == "__main__":
    sys.exit(main())
