"""Regenerate the golden gate fixtures from the real records in ``fixtures/real/``.

``real/`` holds unedited records of two real CPU runs of the same small spec (dense +
wanda, then wanda again) and a magnitude 2:4 run. Each case below is one of them, or one
of them with a single, named edit, so every number in a fixture was measured except the
one the case is about. Run: ``python tests/suite/gate/make_fixtures.py``.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from sparsebench.api import RunSpec

HERE = Path(__file__).parent / "fixtures"


def _load(name: str) -> dict[str, Any]:
    return json.loads((HERE / "real" / f"{name}.json").read_text())


def _edit(rec: dict[str, Any], run_id: str, **metrics: float) -> dict[str, Any]:
    rec = copy.deepcopy(rec)
    rec["run_id"] = run_id
    rec["metrics"].update(metrics)
    return rec


def _rekey(rec: dict[str, Any]) -> dict[str, Any]:
    rec["spec_key"] = RunSpec.model_validate(rec["spec"]).key()
    return rec


def cases() -> dict[str, dict[str, Any]]:
    wanda, rerun = _load("wanda-run1"), _load("wanda-run2")
    ppl = wanda["metrics"]["perplexity"]
    version2 = copy.deepcopy(rerun)
    version2["run_id"] = "wanda-method-version-2"
    version2["spec"]["method"]["config"]["version"] = 2
    slower = copy.deepcopy(rerun)
    slower["run_id"] = "wanda-decode-1.5x-slower"
    slower["samples"]["decode_b1_c16_ms"] = [x * 1.5 for x in slower["samples"]["decode_b1_c16_ms"]]
    failed = copy.deepcopy(rerun)
    failed.update(run_id="wanda-failed", status="failed", error="RuntimeError: kaboom", metrics={},
                  metric_info={}, samples={})
    return {
        "noise": rerun,  # a real second run: same accuracy bits, different timings
        "regression": _edit(rerun, "wanda-ppl-plus-5pct", perplexity=ppl * 1.05),
        "within-tolerance": _edit(rerun, "wanda-ppl-plus-0.05pct", perplexity=ppl * 1.0005),
        "improvement": _edit(rerun, "wanda-ppl-minus-5pct", perplexity=ppl * 0.95,
                             lastword_accuracy=wanda["metrics"]["lastword_accuracy"] + 0.0625),
        "missing-baseline": _load("magnitude-run1"),
        "version-mismatch": _rekey(version2),
        "latency-regression": slower,
        "failed": failed,
    }


def main() -> None:
    base = {"schema": 1, "created_at": "2026-11-22T20:04:00+00:00",
            "records": [_load("dense-run1"), _load("wanda-run1")]}
    (HERE / "baseline.json").write_text(json.dumps(base, indent=1, sort_keys=True) + "\n")
    for name, rec in cases().items():
        (HERE / f"{name}.json").write_text(json.dumps(rec, indent=1, sort_keys=True) + "\n")
    (HERE / "corrupt.json").write_text(json.dumps(_load("wanda-run2"), indent=1)[:500])  # a torn write


if __name__ == "__main__":
    main()
