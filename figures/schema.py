"""The JSON Schema of the gallery's ``claims.json`` (:data:`CLAIMS_SCHEMA`, version :data:`CLAIMS_FORMAT`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from figures._provenance import PROVENANCE_KEYS
from figures.contract import Scale
from figures.result import CLAIM_KEYS, PANEL_RE, SCALING_KEYS
from figures.verdict import PREMISE_KEYS, Verdict

__all__ = ["CLAIMS_FORMAT", "CLAIMS_SCHEMA", "SUMMARY_KEYS"]

CLAIMS_FORMAT = 2
"""Version of ``claims.json`` (2: verdicts, premises and effects on every claim)."""

SUMMARY_KEYS = (
    "figures_ok",
    "figures_failed",
    "figures_pending",
    "claims_held",
    "claims_not_held",
    "claims_inconclusive",
    "claims_not_tested",
)


def _record(
    properties: dict[str, Any], *, required: Sequence[str] | None = None, closed: bool = False, **extra: Any
) -> dict[str, Any]:
    """The schema of a JSON object with ``properties``.

    Args:
        properties: The schema of each key.
        required: The keys every object has (default: all of ``properties``).
        closed: Whether other keys are an error.
        **extra: More schema keywords (``allOf``, or ``type`` to replace ``"object"``).
    """
    schema: dict[str, Any] = {"type": "object", "required": list(properties if required is None else required)}
    if closed:
        schema["additionalProperties"] = False
    return schema | {"properties": properties} | extra


def _claims_schema() -> dict[str, Any]:
    value = {"type": ["number", "string", "null"]}
    number = {"type": ["number", "string"]}  # non-finite floats are written as "nan", "inf", "-inf"
    premise = _record(
        {
            "statement": {"type": "string", "minLength": 1},
            "measured": {"anyOf": [number, {"type": "array", "items": number}]},
            "threshold": {"type": ["number", "string", "null"]},
            "met": {"type": "boolean"},
            "detail": {"type": "string"},
        },
        required=PREMISE_KEYS,
        closed=True,
    )
    effect = _record(
        {k: number for k in ("mean", "sd", "ci_low", "ci_high", "p_value", "confidence")}
        | {"n": {"type": "integer", "minimum": 1}, "method": {"type": "string"}},
        type=["object", "null"],
    )
    claim = _record(
        {
            "statement": {"type": "string", "minLength": 1},
            "paper_value": value,
            "measured": {"anyOf": [value, {"type": "array", "items": number}]},
            "held": {"type": ["boolean", "null"]},
            "verdict": {"enum": [v.value for v in Verdict]},
            "detail": {"type": "string"},
            "source": {"type": "string"},
            "premises": {"type": "array", "items": premise},
            "effect": effect,
            "scale": {"type": ["string", "null"]},
        },
        required=CLAIM_KEYS,
        closed=True,
        allOf=[  # held mirrors the verdict; a failed premise means not tested
            {"if": {"properties": {"verdict": {"const": "held"}}}, "then": {"properties": {"held": {"const": True}}}},
            {
                "if": {"properties": {"verdict": {"const": "not held"}}},
                "then": {"properties": {"held": {"const": False}}},
            },
            {
                "if": {"properties": {"premises": {"contains": {"properties": {"met": {"const": False}}}}}},
                "then": {"properties": {"verdict": {"const": "not tested"}}},
            },
        ],
    )
    panel = _record(
        {
            "key": {"type": "string", "pattern": PANEL_RE.pattern},
            "caption": {"type": "string"},
            "html": {"type": "string"},
            "png": {"type": "string"},
            "json": {"type": "string"},
        }
    )
    text = {"type": "string"}
    provenance = _record(
        {"commit": text, "dirty": {"type": ["boolean", "null"]}} | {k: text for k in PROVENANCE_KEYS[2:]},
        required=PROVENANCE_KEYS,
        type=["object", "null"],
    )
    properties = {
        "name": {"type": "string", "minLength": 1},
        "title": {"type": "string"},
        "paper": {"type": ["string", "null"]},
        "module": {"type": "string"},
        "scale": {"enum": [s.value for s in Scale]},
        "scaling": {"type": "object"},
        "caption": {"type": "string"},
        "runtime_s": {"type": ["number", "null"], "minimum": 0},
        "status": {"enum": ["ok", "failed", "pending"]},
        "error": {"type": ["string", "null"]},
        "cached": {"type": "boolean"},
        "cache_key": {"type": ["string", "null"]},
        "finished": {"type": ["string", "null"]},
        "panels": {"type": "array", "items": panel},
        "claims": {"type": "array", "items": claim},
        "provenance": provenance,
    }
    figure = _record(
        properties,
        # records written before the provenance was stamped have none, and are still reused from the cache
        required=[k for k in properties if k != "provenance"],
        allOf=[
            {  # a rendered figure states its scaling, time and panels, and has no error
                "if": {"properties": {"status": {"const": "ok"}}},
                "then": {
                    "properties": {
                        "scaling": {"required": list(SCALING_KEYS)},
                        "runtime_s": {"type": "number"},
                        "error": {"type": "null"},
                        "panels": {"minItems": 1},
                    }
                },
            },
            {  # a failed figure carries its traceback
                "if": {"properties": {"status": {"const": "failed"}}},
                "then": {"properties": {"error": {"type": "string", "minLength": 1}}},
            },
        ],
    )
    count = {"type": "integer", "minimum": 0}
    document = _record(
        {
            "format": {"const": CLAIMS_FORMAT},
            "generated": {"type": "string"},
            "scale": {"enum": [s.value for s in Scale]},
            "complete": {"type": "boolean"},
            "total_runtime_s": {"type": "number", "minimum": 0},
            "summary": _record(dict.fromkeys(SUMMARY_KEYS, count)),
            "figures": {"type": "array", "items": figure},
            "not_in_gallery": {"type": "array", "items": {"type": "string"}},
        },
        required=["format", "generated", "scale", "complete", "total_runtime_s", "summary", "figures"],
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "landscape figure gallery: claims.json",
        **document,
    }


CLAIMS_SCHEMA: dict[str, Any] = _claims_schema()
"""JSON Schema (draft 2020-12) of ``claims.json``.

Top level: ``format`` (:data:`CLAIMS_FORMAT`), ``generated`` (ISO 8601 UTC), ``scale`` (``quick``/``medium``/``full``:
the gallery's; each figure's own ``scale`` says which it ran at), ``not_in_gallery`` (the registered figures a gallery
made with ``--only`` does not hold; absent from documents written before it existed),
``complete`` (false while a run is in progress or was interrupted), ``total_runtime_s`` (wall time of the run),
``summary`` (counts of figures ok/failed/pending and claims held/not held/inconclusive/not tested), and
``figures``: one object per figure with ``name``, ``title``, ``paper``, ``module``, ``scale``, ``scaling`` (model, data,
epochs, repetitions, ...), ``caption``, ``runtime_s``, ``status`` (``ok``/``failed``/``pending``), ``error``
(traceback or null), ``cached`` (reused from an earlier run), ``cache_key``, ``finished`` (ISO time),
``panels`` (``key``, ``caption`` and the ``html``/``png``/``json`` paths relative to the gallery) and
``claims`` (``statement``, ``paper_value``, ``measured`` (a number or a list of numbers), ``verdict`` (held /
not held / inconclusive / not tested), ``held`` (true/false/null, mirroring the verdict), ``detail``,
``source``, ``premises`` (each ``statement``, ``measured``, ``threshold``, ``met``, ``detail``), ``effect``
(``mean``, ``sd``, ``n``, ``ci_low``, ``ci_high``, ``p_value``, ``confidence``, ``method``, or null) and
``scale`` (which scale the verdict comes from, or null)), and ``provenance``: the code that made the figure
(``commit``: the checkout's git commit or ``"unknown"``, ``dirty``: uncommitted changes to tracked files, or null when
unknown, and the ``python``, ``torch``, ``numpy`` and ``landscape`` versions), null while pending and absent from
records written before it existed.
"""
