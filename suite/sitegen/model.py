"""What the site shows, computed from records: rows with deltas vs the dense baseline.

Kept apart from rendering so the numbers (deltas, speed-ups, Pareto points) are tested on
their own. Records are read only through ``ResultsStore``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_origin

from ..api import RunRecord
from ..report import compare_latency
from ..store import ResultsStore

# first found wins: a KV-cache method is judged by the cache it holds, not the process peak
MEMORY_KEYS = ("kv_bytes_held_mean", "inference_peak_allocated_bytes", "inference_peak_rss_bytes",
               "peak_allocated_bytes", "peak_rss_bytes")
STORED_KEY = "model_stored_bytes"
LATENCY_SUFFIX = "_ms_p50"


def slug(text: str) -> str:
    """A file-name-safe id; method names and run ids are data and may hold anything.

    Names that had to be changed get a short hash so two of them never share a page.
    """
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:80]
    if s == text:
        return s
    return f"{s or 'x'}-{hashlib.sha256(text.encode()).hexdigest()[:6]}"


def method_name(rec: RunRecord) -> str:
    return str((rec.spec.get("method") or {}).get("name", "?"))


def family_of(rec: RunRecord) -> str:
    return str((rec.spec.get("method") or {}).get("family") or "unknown")


def profile_of(rec: RunRecord) -> str:
    return str(rec.hardware.get("profile") or rec.spec.get("profile") or "unknown")


def device_of(rec: RunRecord) -> str:
    fp = rec.hardware.get("fingerprint") or {}
    return str(fp.get("gpu_name") or fp.get("cpu") or "unknown")


def config_text(rec: RunRecord) -> str:
    cfg = (rec.spec.get("method") or {}).get("config") or {}
    return ", ".join(f"{k}={v}" for k, v in cfg.items() if k != "version") or "-"


#: per-cell metrics of the long-context tasks (``passkey_accuracy_L4096_D50``, ``vt_recall_L1024``)
_CELL = re.compile(r"_L\d+(_|$)")


def accuracy_keys(rec: RunRecord) -> list[str]:
    """Headline metrics produced by the record's tasks that have a better direction (the
    long-context tasks' per-length cells stay on the run page: a leaderboard column each
    would bury the headline under a dozen cells)."""
    tasks = [t.get("name", "") for t in rec.spec.get("tasks") or []]
    return sorted(k for k, info in rec.metric_info.items()
                  if info.direction != "none" and any(k.startswith(t) for t in tasks if t)
                  and not _CELL.search(k))


def memory_key(rec: RunRecord) -> str | None:
    return next((k for k in MEMORY_KEYS if k in rec.metrics), None)


@dataclass
class Row:
    """One method run as a leaderboard row; ``None`` where a number cannot be computed."""

    rec: RunRecord
    base: RunRecord | None
    accuracy: dict[str, tuple[float, float | None]] = field(default_factory=dict)  # value, delta
    speedup: dict[str, float | None] = field(default_factory=dict)
    # why a speed-up is not claimed ("within noise ±19%"; "" when it is), where both sides have
    # samples: the comparison table's rule, so a leaderboard shows no drift as a speed-up either
    noise: dict[str, str] = field(default_factory=dict)
    memory: float | None = None
    stored: float | None = None

    @property
    def run_id(self) -> str:
        return self.rec.run_id

    def loss(self, key: str) -> float | None:
        """Relative accuracy loss in percent for ``key`` (positive = worse than dense)."""
        if self.base is None or key not in self.rec.metrics or not self.base.metrics.get(key):
            return None
        b, m = self.base.metrics[key], self.rec.metrics[key]
        info = self.rec.metric_info.get(key)
        sign = 1.0 if info is not None and info.direction == "lower" else -1.0
        return sign * (m - b) / abs(b) * 100.0


def make_row(rec: RunRecord, by_id: dict[str, RunRecord]) -> Row:
    base_id = (rec.baseline or {}).get("run_id")
    base = by_id.get(base_id) if base_id else None
    row = Row(rec, base)
    for key in accuracy_keys(rec):
        b = base.metrics.get(key) if base else None
        v = rec.metrics[key]
        row.accuracy[key] = (v, None if b is None else v - b)
    for key in sorted(k for k in rec.metrics if k.endswith(LATENCY_SUFFIX)):
        b = base.metrics.get(key) if base else None
        cmp = compare_latency(base, rec, key) if base else None
        if cmp is not None:  # from the samples the verdict is made of (interleaved ones first)
            row.speedup[key], row.noise[key] = cmp.speedup, cmp.caveat
        else:
            row.speedup[key] = b / rec.metrics[key] if b and rec.metrics[key] else None
    mk = memory_key(rec)
    row.memory = rec.metrics.get(mk) if mk else None
    row.stored = rec.metrics.get(STORED_KEY)
    return row


@dataclass
class Board:
    """One leaderboard: the rows of one family on one hardware profile."""

    family: str
    profile: str
    rows: list[Row]

    def column_keys(self) -> tuple[list[str], list[str]]:
        acc = sorted({k for r in self.rows for k in r.accuracy})
        lat = sorted({k for r in self.rows for k in r.speedup})
        return acc, lat

    def memory_label(self) -> str:
        keys = {memory_key(r.rec) for r in self.rows} - {None}
        return ", ".join(sorted(k for k in keys if k)) or "memory"


@dataclass
class SiteData:
    records: list[RunRecord]
    rows: dict[str, Row]
    boards: dict[str, list[Board]]  # family -> boards, one per profile

    @property
    def families(self) -> list[str]:
        return sorted(self.boards)

    @property
    def profiles(self) -> list[str]:
        return sorted({profile_of(r) for r in self.records})

    @property
    def latest(self) -> str | None:
        return max((r.created_at for r in self.records), default=None)

    def by_method(self) -> dict[str, list[RunRecord]]:
        out: dict[str, list[RunRecord]] = {}
        for r in self.records:
            out.setdefault(method_name(r), []).append(r)
        return out


def collect(records: list[RunRecord]) -> SiteData:
    """Group records into boards; dense baselines are the reference, not board rows."""
    records = sorted(records, key=lambda r: (r.created_at, r.run_id), reverse=True)
    by_id = {r.run_id: r for r in records}
    rows = {r.run_id: make_row(r, by_id) for r in records}
    grouped: dict[tuple[str, str], list[Row]] = {}
    for r in records:
        if family_of(r) == "baseline":
            continue
        grouped.setdefault((family_of(r), profile_of(r)), []).append(rows[r.run_id])
    boards: dict[str, list[Board]] = {}
    for (fam, prof), rs in sorted(grouped.items()):
        boards.setdefault(fam, []).append(Board(fam, prof, rs))
    return SiteData(records, rows, boards)


def load(results: str | Path) -> SiteData:
    return collect(ResultsStore(results).all())


def describe_method(cls: Any) -> dict[str, Any]:
    """Registry facts about a method class, for its page (schema with defaults)."""
    fields = []
    for name, f in cls.Config.model_fields.items():
        plain = get_origin(f.annotation) is None and hasattr(f.annotation, "__name__")
        ann = f.annotation.__name__ if plain else str(f.annotation).replace("typing.", "")
        fields.append({"name": name, "type": ann, "default": f.default, "description": f.description or ""})
    return {"name": cls.name, "family": cls.family, "description": cls.description,
            "paper": cls.paper, "fields": fields, "version": cls.Config.version}
