"""Kernel benchmark records: one JSON file per benchmark run under ``results/kernels/``.

A run record (``RunRecord``) describes a model x method run; a kernel benchmark has no
model and no task, so it gets its own small schema: which op, which implementations,
the correctness check that had to pass first, and per case the raw samples and their
summary, beside the machine's fingerprint and measured ceilings.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

KERNEL_SCHEMA_VERSION = 1


class KernelCase(BaseModel):
    """One shape x implementation measurement."""

    model_config = ConfigDict(extra="forbid")
    impl: str
    params: dict[str, Any]  # shape and knobs: m, n, k, sparsity, group size, ...
    samples_ms: list[float]
    p50_ms: float
    p90_ms: float
    extra: dict[str, float] = Field(default_factory=dict)  # e.g. achieved GB/s, TFLOP/s


class KernelRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schema_version: int = KERNEL_SCHEMA_VERSION
    kind: str = "kernel-benchmark"
    run_id: str
    created_at: str
    op: str
    baseline_impl: str  # ratios are baseline p50 / impl p50 at the same params
    correctness: dict[str, Any]  # what was checked against ref before timing, and the errors
    cases: list[KernelCase]
    ratios: list[dict[str, Any]] = Field(default_factory=list)
    env: dict[str, Any] = Field(default_factory=dict)
    hardware: dict[str, Any] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)

    def add_ratios(self, keys: tuple[str, ...]) -> None:
        """Speed-up of every impl over ``baseline_impl`` at equal ``params`` (p50 over p50)."""
        base = {json.dumps(c.params, sort_keys=True): c for c in self.cases if c.impl == self.baseline_impl}
        for c in self.cases:
            if c.impl == self.baseline_impl:
                continue
            b = base.get(json.dumps(c.params, sort_keys=True))
            if b is not None:
                self.ratios.append({**{k: c.params.get(k) for k in keys}, "impl": c.impl,
                                    "speedup": b.p50_ms / c.p50_ms})


def new_kernel_record(op: str, baseline_impl: str, correctness: dict[str, Any], profile: str | None = None,
                      ceilings: dict[str, float] | None = None) -> KernelRecord:
    from ..environment import environment
    from ..profiles.hardware import fingerprint, machine_info, select_profile

    machine = machine_info()
    now = datetime.now(timezone.utc)
    prof = select_profile(profile or "auto", machine)
    return KernelRecord(
        run_id=f"{now:%Y%m%dT%H%M%S}-{op}-{os.urandom(3).hex()}", created_at=now.isoformat(timespec="seconds"),
        op=op, baseline_impl=baseline_impl, correctness=correctness, cases=[], env=environment(),
        hardware={"profile": prof.id, "fingerprint": fingerprint(machine), "measured": ceilings or {}},
    )


def write_kernel_record(rec: KernelRecord, results: str | Path = "results") -> Path:
    """Atomically create ``results/kernels/<run_id>.json`` (never overwrites)."""
    out = Path(results) / "kernels"
    out.mkdir(parents=True, exist_ok=True)
    final = out / f"{rec.run_id}.json"
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=out)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(rec.model_dump(mode="json"), indent=1, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.link(tmp, final)
    finally:
        os.unlink(tmp)
    return final


def read_kernel_records(results: str | Path = "results") -> list[KernelRecord]:
    d = Path(results) / "kernels"
    if not d.is_dir():
        return []
    out = []
    for p in sorted(d.glob("*.json")):
        raw = json.loads(p.read_text())
        if raw.get("schema_version", 0) > KERNEL_SCHEMA_VERSION:
            raise ValueError(f"{p} has kernel schema {raw['schema_version']}, newer than this code "
                             f"({KERNEL_SCHEMA_VERSION}); upgrade sparsebench")
        out.append(KernelRecord.model_validate(raw))
    return out
