"""The whole pipeline on the real embedded model and real shipped text, with small settings.

Marked ``slow``: the first call fetches and converts the default model (about a minute);
later calls load the cached conversion in about a second.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from sparsebench.cli import main
from sparsebench.store import ResultsStore

pytestmark = pytest.mark.slow

SMALL = ["--model", "llama", "--calib-samples", "4", "--calib-seq-len", "64",
         "--perplexity-max-tokens", "512", "--perplexity-window", "128",
         "--lastword-items", "16", "--warmup", "1", "--repetitions", "2",
         "--prefill-lengths", "32", "--decode-context", "16", "--decode-tokens", "4", "--no-progress"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="module")
def wanda_run(workdir):
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    code = main(["run", "--method", "wanda", *SMALL, "--results", str(workdir / "results"),
                 "--tracking-uri", uri, "--save-model", str(workdir / "saved")])
    return code, ResultsStore(workdir / "results").all(), uri


def test_wanda_run_writes_dense_and_wanda_records(wanda_run):
    code, records, _ = wanda_run
    assert code == 0
    by_method = {r.spec["method"]["name"]: r for r in records}
    assert set(by_method) == {"dense", "wanda"}
    dense, wanda = by_method["dense"], by_method["wanda"]
    for r in records:
        assert r.status == "ok"
        assert r.spec["model"]["name"] == "smollm2-135m"
        assert r.env["model_class"] == "LlamaForCausalLM"
        assert r.env["git"].keys() == {"sha", "dirty"}
        assert r.env["packages"]["torch"]
        assert r.hardware["profile"] == "cpu"
        assert r.metrics["perplexity_tokens"] > 0
        assert len(r.samples["decode_b1_c16_ms"]) == 2 * 4
        assert r.metrics["decode_b1_c16_ms_p90"] >= r.metrics["decode_b1_c16_ms_p50"] > 0
        assert r.metrics["model_stored_bytes"] > 100e6
        assert {"load_model", "apply", "task:perplexity", "task:lastword", "latency"} <= set(r.phases)
    assert wanda.spec["method"]["family"] == "pruning"
    assert wanda.spec["method"]["config"] == {"sparsity": 0.5, "pattern": "unstructured",
                                               "comparison": "row", "version": 1}
    assert wanda.spec["calibration"]["samples"] == 4
    assert dense.spec["calibration"] is None
    assert dense.metrics["weight_sparsity"] < 0.01
    assert wanda.metrics["weight_sparsity"] == pytest.approx(0.5, abs=0.005)
    # pruning half the weights costs accuracy, measured against the same-run baseline
    assert wanda.metrics["perplexity"] > dense.metrics["perplexity"]
    assert 5 < dense.metrics["perplexity"] < 200
    assert wanda.baseline == {"run_id": dense.run_id, "spec_key": dense.spec_key, "reused": False}


def test_mlflow_has_both_runs(wanda_run):
    import mlflow

    _, records, uri = wanda_run
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("sparsebench")
    runs = client.search_runs([exp.experiment_id])
    assert {r.data.tags["sparsebench.run_id"] for r in runs} == {r.run_id for r in records}
    for run in runs:
        assert "perplexity" in run.data.metrics
        assert [a.path for a in client.list_artifacts(run.info.run_id)][0].endswith(".json")


def test_saved_model_loads_with_transformers_and_keeps_sparsity(wanda_run, workdir):
    from transformers import AutoModelForCausalLM

    from sparsebench.measure.sparsity import weight_sparsity

    model = AutoModelForCausalLM.from_pretrained(workdir / "saved")
    assert weight_sparsity(model)[0] == pytest.approx(0.5, abs=0.005)
    assert json.loads((workdir / "saved" / "sparsebench_run.json").read_text())["spec"]["method"]["name"] == "wanda"


def test_second_method_reuses_the_dense_baseline(wanda_run, workdir):
    _, first, uri = wanda_run
    dense = next(r for r in first if r.spec["method"]["name"] == "dense")
    code = main(["run", "--method", "magnitude", "--pattern", "2:4", *SMALL,
                 "--results", str(workdir / "results"), "--tracking-uri", uri])
    assert code == 0
    records = ResultsStore(workdir / "results").all()
    mag = next(r for r in records if r.spec["method"]["name"] == "magnitude")
    assert mag.baseline == {"run_id": dense.run_id, "spec_key": dense.spec_key, "reused": True}
    assert sum(r.spec["method"]["name"] == "dense" for r in records) == 1
    assert mag.metrics["weight_sparsity"] == pytest.approx(0.5, abs=0.005)
    assert mag.spec["calibration"] is None


def test_activation_sparsity_record_reports_what_evaluation_reached(wanda_run, workdir):
    """TEAL through the CLI: the record holds the sparsity measured while the tasks ran
    (Method.report, called after the tasks and before latency), per layer and on average."""
    _, _, uri = wanda_run
    code = main(["run", "--method", "teal", "--sparsity", "0.4", *SMALL,
                 "--results", str(workdir / "results"), "--tracking-uri", uri])
    assert code == 0
    rec = next(r for r in ResultsStore(workdir / "results").all() if r.spec["method"]["name"] == "teal")
    assert rec.status == "ok" and rec.spec["method"]["family"] == "activation_sparsity"
    layers = {k: v for k, v in rec.metrics.items() if k.startswith("activation_sparsity.layers.")}
    assert len(layers) == 30 * 7  # every linear of every block
    assert all(rec.metric_info[k].n > 0 for k in layers)
    assert rec.metrics["activation_sparsity_mean"] == pytest.approx(sum(layers.values()) / len(layers))
    assert rec.metrics["activation_weight_reads_skipped"] == pytest.approx(0.4, abs=0.1)
    assert rec.metrics["activation_sparsity_target"] == 0.4
    assert rec.kernels["sparse_linear"].startswith("sparse_gemv ref")
    assert rec.metrics["decode_b1_c16_ms_p50"] > 0


def test_method_that_raises_writes_a_failed_record(tmp_path):
    """A third-party plugin (declared through a real entry point) that raises in apply_."""
    (tmp_path / "boom_plugin.py").write_text(textwrap.dedent("""
        from sparsebench.api import Method, MethodConfig
        class BoomConfig(MethodConfig):
            pass
        class Boom(Method):
            name = "boom"; family = "pruning"; description = "raises"; Config = BoomConfig
            def apply_(self, model, ctx):
                raise RuntimeError("kaboom in apply_")
    """))
    dist = tmp_path / "boom_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: boom-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[sparsebench.methods]\nboom = boom_plugin:Boom\n")
    results = tmp_path / "results"
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "sparsebench.cli", "run", "--method", "boom", *SMALL,
                           "--no-latency", "--no-mlflow", "--results", str(results)],
                          capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    recs = {r.spec["method"]["name"]: r for r in ResultsStore(results).all()}
    assert recs["dense"].status == "ok"
    assert recs["boom"].status == "failed"
    assert recs["boom"].error == "RuntimeError: kaboom in apply_"
    assert "kaboom" in proc.stdout + proc.stderr
