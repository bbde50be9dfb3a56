"""The Ray executor for real, on a local Ray instance the sweep starts (this machine's CPUs)."""

import pytest

from sparsebench.store import ResultsStore

from .helpers import run_sweep, tiny_sweep, write_sweep

pytestmark = pytest.mark.slow


def test_ray_sweep_runs_isolates_failures_and_resumes(tmp_path, tiny_model, plugin_env):
    pytest.importorskip("ray", reason="the Ray executor needs the 'dist' extra")
    sweep = write_sweep(tmp_path / "ray.yaml", tiny_sweep(tiny_model, [
        "dense", {"name": "sc_noop", "grid": {"tag": [1, 2]}}, "sc_raise",
        {"name": "sc_sleep", "timeout_s": 3}, "sc_die"]))
    env = {**plugin_env, "RAY_ADDRESS": "", "RAY_AUTH_MODE": "disabled"}
    proc = run_sweep(sweep, tmp_path / "results", env, "--executor", "ray", "--no-mlflow")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "ray (local):" in out
    recs = ResultsStore(tmp_path / "results").all()
    by = {}
    for r in recs:
        by.setdefault(r.spec["method"]["name"], []).append(r)
    assert {k: len(v) for k, v in by.items()} == {"dense": 1, "sc_noop": 2, "sc_raise": 1, "sc_sleep": 1,
                                                  "sc_die": 1}  # nothing retried, nothing twice
    assert all(r.status == "ok" for r in by["dense"] + by["sc_noop"])
    assert all(r.baseline["run_id"] == by["dense"][0].run_id for r in by["sc_noop"])
    assert by["sc_raise"][0].status == "failed" and "sweepcheck: boom" in by["sc_raise"][0].error
    assert by["sc_sleep"][0].status == "failed" and by["sc_sleep"][0].error == "timeout after 3 s"
    assert by["sc_die"][0].status == "failed" and "WorkerCrashedError" in by["sc_die"][0].error
    assert "executor overhead per run" in out

    # resumable with the same executor: only the failed runs are tried again
    again = run_sweep(sweep, tmp_path / "results", env, "--executor", "ray", "--no-mlflow", "--dry-run")
    assert again.returncode == 0 and "already done: 3" in again.stdout and "to run: 3" in again.stdout
