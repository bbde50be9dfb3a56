"""The local executor for real: child processes, crash isolation, SIGKILL and resume.

Runs use the tiny local model and the ``sweepcheck`` test plugin (methods that raise, hang
or kill their own process), so each run costs about the executor's own overhead.
"""

import collections
import json
import signal
import subprocess
import time

import pytest

from sparsebench.store import ResultsStore

from .helpers import run_sweep, sweep_command, tiny_sweep, write_sweep

pytestmark = pytest.mark.slow


def _by_method(records):
    return {r.spec["method"]["name"]: r for r in records}


def test_failures_are_isolated_and_the_sweep_goes_on(tmp_path, tiny_model, plugin_env):
    sweep = write_sweep(tmp_path / "crash.yaml", tiny_sweep(tiny_model, [
        "dense", "sc_raise", {"name": "sc_sleep", "timeout_s": 3}, "sc_die", "sc_noop"]))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = run_sweep(sweep, tmp_path / "results", plugin_env, "--tracking-uri", uri)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    recs = ResultsStore(tmp_path / "results").all()
    assert len(recs) == 5  # one each: the baseline ran once, first
    by = _by_method(recs)
    assert by["dense"].status == "ok" and by["sc_noop"].status == "ok"
    assert by["sc_noop"].baseline == {"run_id": by["dense"].run_id, "spec_key": by["dense"].spec_key,
                                      "reused": True}
    assert by["sc_raise"].status == "failed"
    assert by["sc_raise"].error == "RuntimeError: sweepcheck: boom in apply_"  # written by the runner
    assert by["sc_sleep"].status == "failed" and by["sc_sleep"].error == "timeout after 3 s"
    assert by["sc_die"].status == "failed" and "SIGKILL" in by["sc_die"].error
    for name in ("sc_sleep", "sc_die"):  # written by the driver, with the spec and its key
        assert by[name].spec["method"]["name"] == name and by[name].hardware["profile"] == "cpu"
        assert by[name].baseline["run_id"] == by["dense"].run_id
    out = proc.stdout
    assert "failures:" in out and "timeout after 3 s" in out and "sweepcheck: boom" in out
    assert "3 failed" in out and "executor overhead per run" in out
    _check_mlflow_parent(uri, recs)


def _check_mlflow_parent(uri, records):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("sparsebench").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.run_name == "sweep t"
    assert parents[0].info.status == "FAILED" and parents[0].data.metrics["runs_failed"] == 3
    children = {r.data.tags["sparsebench.run_id"] for r in runs if r.data.tags.get("mlflow.parentRunId")
                == parents[0].info.run_id}
    assert children == {r.run_id for r in records}


def _descendants(pid):
    import psutil

    return psutil.Process(pid).children(recursive=True)


def _records(runs):
    """Finished record files: pathlib's glob also matches the ``.tmp-*.json`` file a write the
    kill interrupted leaves (which the resume rightly does not count as done)."""
    return [f for f in runs.glob("*.json") if not f.name.startswith(".")]


def test_sigkill_mid_sweep_then_resume_completes_without_duplicates(tmp_path, tiny_model, plugin_env):
    sweep = write_sweep(tmp_path / "resume.yaml", tiny_sweep(tiny_model, [
        "dense", {"name": "sc_sleep", "grid": {"seconds": [0.5, 0.6, 0.7, 0.8]}}]))
    results = tmp_path / "results"
    runs = results / "runs"
    driver = subprocess.Popen(sweep_command(sweep, results, "--no-mlflow"), env=plugin_env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(_records(runs)) < 2:
        time.sleep(0.05)
    workers = _descendants(driver.pid)  # the forkserver, the running child, multiprocessing helpers
    assert workers
    driver.send_signal(signal.SIGKILL)  # mid-sweep: a worker is running, records are being written
    driver.wait()
    # orphans notice (the running child's lifeline pipe closes) and exit instead of finishing
    import psutil

    _, alive = psutil.wait_procs(workers, timeout=15)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
    # counted once the workers are gone: a child past its last lifeline check at the kill may
    # still rename its finished record into place (the CI flake of stop 14 counted before that)
    first = len(_records(runs))
    assert 2 <= first < 5, driver.stdout.read()

    proc = run_sweep(sweep, results, plugin_env, "--no-mlflow")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"already done: {first}" in proc.stdout
    recs = ResultsStore(results).all()  # every record file parses: none is torn
    assert all(r.status == "ok" for r in recs)
    keys = collections.Counter(r.spec_key for r in recs)
    assert len(keys) == 5 and set(keys.values()) == {1}  # complete, no duplicates
    secs = sorted(r.spec["method"]["config"].get("seconds") for r in recs if r.spec["method"]["name"] != "dense")
    assert secs == [0.5, 0.6, 0.7, 0.8]
    for f in runs.iterdir():  # only complete records (and perhaps a temp file the kill interrupted)
        assert f.name.startswith(".tmp-") or json.loads(f.read_text())["spec_key"] in keys
    # a third run has nothing to do
    again = run_sweep(sweep, results, plugin_env, "--no-mlflow")
    assert again.returncode == 0 and "nothing to run" in again.stdout
    assert len(ResultsStore(results).all()) == 5
