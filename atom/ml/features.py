"""A decision's context, flattened to named features (pure Python: no NumPy, no LightGBM).

A context is any JSON object. Nested objects flatten to dotted names (``user.plan``);
numbers and booleans are numeric features (``true`` is 1); strings are categorical; a list
becomes its length; ``null`` or an absent field is missing, which LightGBM handles natively.
A version's feature schema fixes the names, kinds and categories it was trained on; a
category it never saw, or a field it does not know, is missing to it.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 5
MAX_FIELDS = 200
MAX_CONTEXT_BYTES = 64 * 1024
MAX_STRING = 500
MAX_NUMBER = 1e300
"""Largest magnitude of a number in a context (beyond it a float cannot hold it reliably)."""
MAX_CATEGORIES = 200
"""Categories kept per feature (the most frequent); the rest are missing to the model."""

Scalar = float | str | None


def check_context(context: Any, where: str = "context") -> list[str]:
    """Every problem with a context, as ``location: message`` strings (empty when valid)."""
    if not isinstance(context, dict):
        return [f"{where}: must be a JSON object, not {type(context).__name__}"]
    try:
        size = len(json.dumps(context, allow_nan=False))
    except ValueError:
        size = None
    problems: list[str] = []
    if size is not None and size > MAX_CONTEXT_BYTES:
        problems.append(f"{where}: is {size} bytes of JSON; at most {MAX_CONTEXT_BYTES} allowed")
        return problems
    count = 0

    def walk(value: Any, path: str, depth: int) -> None:
        nonlocal count
        if isinstance(value, dict):
            if depth > MAX_DEPTH:
                problems.append(f"{path}: nested deeper than {MAX_DEPTH} levels")
                return
            for key, item in value.items():
                walk(item, f"{path}.{key}", depth + 1)
            return
        count += 1
        if problem := _leaf_problem(value):
            problems.append(f"{path}: {problem}")

    walk(context, where, 1)
    if count > MAX_FIELDS:
        problems.append(f"{where}: has {count} fields; at most {MAX_FIELDS} allowed")
    return problems


def _leaf_problem(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number, not {value}"
    if isinstance(value, int | float) and abs(value) > MAX_NUMBER:
        return f"numbers are at most {MAX_NUMBER:g} in magnitude"
    if isinstance(value, str) and len(value) > MAX_STRING:
        return f"strings are at most {MAX_STRING} characters"
    return None


def flatten(context: dict[str, Any], prefix: str = "") -> dict[str, Scalar]:
    """The context as ``{dotted name: number | string | None}``."""
    out: dict[str, Scalar] = {}
    for key, value in context.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, bool):
            out[name] = 1.0 if value else 0.0
        elif isinstance(value, int | float):
            out[name] = float(value)
        elif isinstance(value, str):
            out[name] = value
        elif isinstance(value, list):
            out[name] = float(len(value))
        else:
            out[name] = None
    return out


def infer_schema(rows: list[dict[str, Scalar]]) -> dict[str, Any]:
    """The feature schema of a training set: every name seen, its kind and its categories.

    A field with any string value is categorical (numbers in it count as their text).
    """
    kinds: dict[str, str] = {}
    counts: dict[str, dict[str, int]] = {}
    for row in rows:
        for name, value in row.items():
            if value is None:
                kinds.setdefault(name, "numeric")
                continue
            if isinstance(value, str):
                kinds[name] = "categorical"
            else:
                kinds.setdefault(name, "numeric")
            counts.setdefault(name, {})
            key = value if isinstance(value, str) else _num_text(value)
            counts[name][key] = counts[name].get(key, 0) + 1
    features = []
    for name in sorted(kinds):
        entry: dict[str, Any] = {"name": name, "kind": kinds[name]}
        if kinds[name] == "categorical":
            seen = counts.get(name, {})
            ranked = sorted(seen, key=lambda k: (-seen[k], k))[:MAX_CATEGORIES]
            entry["categories"] = sorted(ranked)
        features.append(entry)
    return {"features": features}


def _num_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def encode(row: dict[str, Scalar], schema: dict[str, Any]) -> list[float]:
    """One row as the model's input vector: floats, category codes, NaN for missing."""
    vector: list[float] = []
    for feature in schema["features"]:
        value = row.get(feature["name"])
        if value is None:
            vector.append(math.nan)
        elif feature["kind"] == "categorical":
            key = value if isinstance(value, str) else _num_text(value)
            codes = feature.get("_codes")
            if codes is None:
                codes = {c: i for i, c in enumerate(feature["categories"])}
                feature["_codes"] = codes  # cached on the loaded schema, never stored
            code = codes.get(key)
            vector.append(math.nan if code is None else float(code))
        else:
            vector.append(value if isinstance(value, float) else math.nan)
    return vector


def categorical_indices(schema: dict[str, Any]) -> list[int]:
    """Positions of the categorical features (LightGBM's ``categorical_feature``)."""
    return [i for i, f in enumerate(schema["features"]) if f["kind"] == "categorical"]


def public_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema without its in-memory caches."""
    return {
        "features": [
            {k: v for k, v in f.items() if not k.startswith("_")} for f in schema["features"]
        ]
    }
