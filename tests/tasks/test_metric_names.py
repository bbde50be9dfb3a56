"""The long-context tasks' metric names are ones records, the gate and the site accept:
they start with the task name (the site's accuracy columns), end in neither ``bytes``
(memory) nor ``_ms`` (latency), and are valid MLflow metric names."""

import re

import pytest

from sparsebench.api import Metric, RunRecord
from sparsebench.gate import compare_records, task_tolerances

NAMES = {
    "passkey": ["passkey_accuracy", "passkey_accuracy_L1024_D10", "passkey_accuracy_L8192_D12p5"],
    "vt": ["vt_recall", "vt_recall_L4096"],
    "cwe": ["cwe_recall", "cwe_recall_L8192"],
    "longppl": ["longppl_W4096", "longppl_nll_W4096", "longppl_tokens_W4096", "longppl_windows_W4096"],
}
HIGHER = {"passkey", "vt", "cwe"}


def _record(values: dict[str, float]) -> RunRecord:
    rec = RunRecord(run_id="r", spec_key="k", created_at="2026-01-01T00:00:00+00:00", status="ok",
                    spec={"method": {"name": "dense"}, "tasks": [{"name": t} for t in NAMES]})
    for task, names in NAMES.items():
        for n in names:
            direction = "none" if "tokens" in n or "windows" in n else "higher" if task in HIGHER else "lower"
            rec.add_metric(n, Metric(value=values.get(n, 0.5), stderr=0.01, direction=direction, n=10))
    return rec


def test_names_fit_records_gate_and_mlflow():
    for task, names in NAMES.items():
        for n in names:
            assert n.startswith(task + "_") and re.fullmatch(r"[A-Za-z0-9_]+", n)
            assert not n.endswith("bytes") and not n.endswith("_ms")
    rec = _record({})
    assert RunRecord.model_validate_json(rec.model_dump_json()) == rec


def test_gate_uses_the_declared_tolerances():
    tol = task_tolerances(set(NAMES))
    base = _record({})
    cand = _record({"passkey_accuracy": 0.49, "passkey_accuracy_L1024_D10": 0.3, "longppl_W4096": 0.6})
    rows = {r.metric: r for r in compare_records(base, cand, {m: t for d in tol.values() for m, t in d.items()})}
    assert rows["passkey_accuracy"].verdict == "pass"  # within 0.02 absolute
    assert rows["passkey_accuracy_L1024_D10"].verdict == "REGRESSION"
    assert rows["longppl_W4096"].verdict == "REGRESSION"  # perplexity rose 20%
    assert rows["vt_recall"].verdict == "pass" and "longppl_tokens_W4096" not in rows  # unchanged


def test_the_site_shows_the_headlines_as_accuracy_columns():
    """Headline metrics and longppl's per-window ones are columns; the per-length cells of
    passkey/vt/cwe (``_L<n>``) stay on the run page."""
    model = pytest.importorskip("sparsebench.sitegen.model")
    keys = model.accuracy_keys(_record({}))
    assert set(keys) == {"passkey_accuracy", "vt_recall", "cwe_recall", "longppl_W4096", "longppl_nll_W4096"}
