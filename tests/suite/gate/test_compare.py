"""Rules the golden cases do not reach: NaN, ungated metrics, memory, declared tolerances."""

import json
import math
from pathlib import Path

from sparsebench.api import RunRecord
from sparsebench.gate import compare_records, task_tolerances

FIX = Path(__file__).parent / "fixtures"


def _pair(**edits: float) -> tuple[RunRecord, RunRecord]:
    base = RunRecord.model_validate(json.loads((FIX / "real" / "wanda-run1.json").read_text()))
    cand = base.model_copy(deep=True)
    cand.metrics.update(edits)
    return base, cand


def _verdicts(base, cand, tolerances=None):
    return {r.metric: r.verdict for r in compare_records(base, cand, tolerances or {})}


def test_the_tasks_declare_tight_tolerances():
    tol = task_tolerances({"perplexity", "lastword", "not-installed"})
    assert set(tol) == {"perplexity", "lastword"}
    assert tol["perplexity"]["perplexity"].allowed(100.0) == 0.1
    assert tol["lastword"]["lastword_accuracy"].allowed(0.5) == 0.01


def test_nan_perplexity_is_a_regression():
    assert _verdicts(*_pair(perplexity=math.nan))["perplexity"] == "REGRESSION"


def test_memory_growth_beyond_threshold_fails():
    base, cand = _pair()
    cand.metrics["model_stored_bytes"] = base.metrics["model_stored_bytes"] * 1.2
    assert _verdicts(base, cand)["model_stored_bytes"] == "REGRESSION"
    cand.metrics["model_stored_bytes"] = base.metrics["model_stored_bytes"] * 1.05
    assert _verdicts(base, cand)["model_stored_bytes"] == "pass"


def test_metrics_without_direction_are_shown_only_when_they_change():
    base, cand = _pair()
    assert "weight_sparsity" not in _verdicts(base, cand)
    cand.metrics["weight_sparsity"] = 0.4
    assert _verdicts(base, cand)["weight_sparsity"] == "info"


def test_sample_summaries_are_not_gated_twice():
    names = set(_verdicts(*_pair()))
    assert "decode_b1_c16_ms (median)" in names
    assert not any(n.endswith(("_p50", "_p90", "_mean", "_roofline_fraction")) for n in names)


def test_a_metric_missing_on_one_side_is_not_compared():
    base, cand = _pair()
    del cand.metrics["lastword_accuracy"]
    assert _verdicts(base, cand)["lastword_accuracy"] == "not compared"
