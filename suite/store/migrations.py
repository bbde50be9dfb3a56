"""Schema migrations applied when records are read; files on disk are never rewritten.

Each ``upgrade_N_to_M`` takes the JSON of schema N and returns schema N+1. A record from a
newer schema than this code knows is refused: guessing would silently misread it.

History:
- v1 (first drafts): ``metrics`` held ``{name: {value, stderr, direction, n}}`` and phase
  durations were stored under ``timings``.
- v2: ``metrics`` is a flat name -> number map (what tools and MLflow want), the rest of
  each metric moved to ``metric_info``; ``timings`` renamed ``phases``.
- v3: ``interleaved`` holds dense and method latency samples timed in alternating rounds
  of one process (older records have none: their comparison falls back to ``samples``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..api import SCHEMA_VERSION
from ..errors import StoreError


def upgrade_1_to_2(rec: dict[str, Any]) -> dict[str, Any]:
    rec = dict(rec)
    flat: dict[str, float] = {}
    info: dict[str, dict[str, Any]] = {}
    for name, m in (rec.get("metrics") or {}).items():
        if isinstance(m, dict):
            flat[name] = float(m["value"])
            info[name] = {k: m.get(k) for k in ("stderr", "direction", "n", "unit") if m.get(k) is not None}
        else:
            flat[name] = float(m)
    rec["metrics"] = flat
    rec["metric_info"] = info
    rec["phases"] = rec.pop("timings", {}) or {}
    rec["schema_version"] = 2
    return rec


def upgrade_2_to_3(rec: dict[str, Any]) -> dict[str, Any]:
    return {**rec, "interleaved": {}, "schema_version": 3}


UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: upgrade_1_to_2, 2: upgrade_2_to_3}


def upgrade(rec: dict[str, Any], origin: str = "record") -> dict[str, Any]:
    """Bring a record dict to ``SCHEMA_VERSION``, or raise ``StoreError`` saying why not."""
    v = rec.get("schema_version")
    if not isinstance(v, int) or v < 1:
        raise StoreError(f"{origin} has no valid schema_version (found {v!r}); it is not a sparsebench record.")
    if v > SCHEMA_VERSION:
        raise StoreError(
            f"{origin} has schema_version {v}, newer than this sparsebench understands "
            f"({SCHEMA_VERSION}). Upgrade sparsebench to read it; the file was left untouched."
        )
    while v < SCHEMA_VERSION:
        rec = UPGRADES[v](rec)
        v = rec["schema_version"]
    return rec
