"""Pairing candidate records with baseline records, and saying why a pair is impossible.

Only records with the same spec key (model, method config and version, task configs and
versions, corpus, profile, measurement, seed) are compared. When none matches, the
nearest baseline (same model and method) is diffed against the candidate so the report
says *what* changed, e.g. ``method.config.version 1 -> 2``, instead of just "missing".

A baseline may hold one record per spec key for each kind of processor (``arithmetic``):
the same code and packages gave the gate's Wanda run perplexity 136.62 on an AMD EPYC and
135.88 on an Intel Xeon (dense and magnitude bit-identical): a calibrated mask flips where
two scores are near-equal and the CPUs' vector kernels round differently. A candidate is
compared with the record of its own kind; with none, with the newest of another kind, and
the report says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..api import RunRecord, Tolerance
from .compare import Row, Settings, compare_records


@dataclass
class Outcome:
    """The gate's result for one candidate record."""

    candidate: RunRecord
    baseline: RunRecord | None
    rows: list[Row] = field(default_factory=list)
    not_compared: str | None = None  # why the record as a whole was not compared
    note: str | None = None  # about the pairing (a baseline from another kind of processor)

    @property
    def label(self) -> str:
        return f"{self.candidate.spec['method']['name']} {self.candidate.spec_key[:8]}"

    @property
    def regressed(self) -> bool:
        return any(r.verdict == "REGRESSION" for r in self.rows)

    @property
    def incomplete(self) -> bool:
        return self.not_compared is not None or any(r.verdict == "not compared" for r in self.rows)


def arithmetic(rec: RunRecord) -> str:
    """The kind of processor whose arithmetic made a record's numbers: the GPU's name when
    the run had CUDA, else the CPU model (not the machine: any EPYC rounds like another)."""
    fp = rec.hardware.get("fingerprint") or {}
    return str((fp.get("gpu_name") if fp.get("cuda_available") else None) or fp.get("cpu") or "unknown")


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def spec_diff(base: dict[str, Any], cand: dict[str, Any], limit: int = 4) -> str:
    """``path base -> candidate`` for the first few differing spec fields (lists compared whole)."""
    fb, fc = _flatten(base), _flatten(cand)
    diffs = [f"{k} {fb.get(k)!r} -> {fc.get(k)!r}" for k in sorted(set(fb) | set(fc)) if fb.get(k) != fc.get(k)]
    more = f" (+{len(diffs) - limit} more)" if len(diffs) > limit else ""
    return "; ".join(diffs[:limit]) + more


def _why_no_baseline(cand: RunRecord, baselines: list[RunRecord]) -> str:
    def same(path: tuple[str, str], r: RunRecord) -> bool:
        return r.spec[path[0]][path[1]] == cand.spec[path[0]][path[1]]

    near = [r for r in baselines if same(("method", "name"), r) and same(("model", "name"), r)]
    if not near:
        return (f"no baseline record for method {cand.spec['method']['name']!r} on model "
                f"{cand.spec['model']['name']!r}")
    nearest = min(near, key=lambda r: len(spec_diff(r.spec, cand.spec, limit=99)))
    return f"no baseline with spec key {cand.spec_key}; nearest differs in: {spec_diff(nearest.spec, cand.spec)}"


def _incompatible(base: RunRecord, cand: RunRecord) -> str | None:
    """Belt and braces for hand-edited baselines: the key should already rule these out."""
    if cand.status != "ok":
        return f"candidate status is {cand.status}: {cand.error or cand.reason}"
    if base.status != "ok":
        return f"baseline status is {base.status}: {base.error or base.reason}"
    pb, pc = base.hardware.get("profile"), cand.hardware.get("profile")
    if pb != pc:
        return f"hardware profile differs: baseline {pb!r}, candidate {pc!r}"
    for part in ("method", "tasks"):
        if base.spec.get(part) != cand.spec.get(part):
            return f"{part} config or version differs: {spec_diff(base.spec, cand.spec)}"
    return None


def pair(candidates: list[RunRecord], baselines: list[RunRecord],
         tolerances: dict[str, dict[str, Tolerance]], settings: Settings) -> list[Outcome]:
    """One outcome per candidate; ``tolerances`` maps task name -> metric -> tolerance."""
    by_key: dict[str, dict[str, RunRecord]] = {}  # spec key -> kind of processor -> record
    newest: dict[str, RunRecord] = {}  # spec key -> the newest record of any kind (ok first)
    for b in sorted(baselines, key=lambda r: r.created_at):  # newest wins
        kinds = by_key.setdefault(b.spec_key, {})
        if b.status == "ok" or arithmetic(b) not in kinds:
            kinds[arithmetic(b)] = b
        if b.status == "ok" or b.spec_key not in newest:
            newest[b.spec_key] = b
    outcomes = []
    for cand in candidates:
        base = by_key.get(cand.spec_key, {}).get(arithmetic(cand))
        note = None
        if base is None and cand.spec_key in newest:
            base = newest[cand.spec_key]
            note = (f"baseline measured on {arithmetic(base)}, this run on {arithmetic(cand)}: a result that "
                    "depends on rounding (a calibrated mask) can differ; add a baseline of this processor "
                    "with --update-baseline")
        if base is None:
            why = (f"candidate status is {cand.status}: {cand.error or cand.reason}" if cand.status != "ok"
                   else _why_no_baseline(cand, baselines))
            outcomes.append(Outcome(cand, None, not_compared=why))
            continue
        if why := _incompatible(base, cand):
            outcomes.append(Outcome(cand, base, not_compared=why, note=note))
            continue
        tol = {m: t for task in cand.spec.get("tasks", []) for m, t in tolerances.get(task["name"], {}).items()}
        outcomes.append(Outcome(cand, base, compare_records(base, cand, tol, settings), note=note))
    return outcomes


def merged_baseline(baselines: list[RunRecord], accepted: list[RunRecord]) -> tuple[list[RunRecord], int]:
    """What ``--update-baseline`` writes: the accepted records, and for the same spec keys the
    records of other kinds of processor (kept, so accepting on one kind does not drop
    another's), nothing else. Returns (records, how many were kept)."""
    keys = {r.spec_key for r in accepted}
    mine = {(r.spec_key, arithmetic(r)) for r in accepted}
    kept = [b for b in baselines if b.status == "ok" and b.spec_key in keys and (b.spec_key, arithmetic(b)) not in mine]
    return kept + accepted, len(kept)
