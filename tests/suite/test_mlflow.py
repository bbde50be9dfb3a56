"""MLflow logging into a real temporary SQLite tracking store."""

import json

from sparsebench.api import Metric, RunRecord, RunSpec
from sparsebench.sinks.mlflow_sink import MlflowSink, flatten
from sparsebench.store import new_run_id


def test_flatten_spec():
    flat = flatten({"method": {"name": "wanda", "config": {"sparsity": 0.5}},
                    "tasks": [{"name": "perplexity", "config": {"window": 512}}], "seed": 0})
    assert flat["method.name"] == "wanda"
    assert flat["method.config.sparsity"] == "0.5"
    assert flat["tasks.perplexity.config.window"] == "512"
    assert flat["seed"] == "0"


def test_record_logged_with_params_metrics_and_artifact(tmp_path):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = RunSpec(method={"name": "wanda", "family": "pruning", "config": {"sparsity": 0.5}})
    rec = RunRecord(run_id=new_run_id("wanda"), spec_key=spec.key(), created_at="2026-11-22T00:00:00+00:00",
                    status="ok", spec=spec.model_dump(mode="json"), hardware={"profile": "cpu"})
    rec.add_metric("perplexity", Metric(value=30.25, stderr=0.5, direction="lower"))
    rec.add_metric("weight_sparsity", Metric(value=0.5))
    sink = MlflowSink(uri)
    mlflow_id = sink.log(rec)

    client = mlflow.MlflowClient(tracking_uri=uri)
    run = client.get_run(mlflow_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["method.name"] == "wanda"
    assert run.data.params["method.config.sparsity"] == "0.5"
    assert run.data.metrics == {"perplexity": 30.25, "weight_sparsity": 0.5}
    assert run.data.tags["sparsebench.run_id"] == rec.run_id
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.name == "sparsebench"
    local = client.download_artifacts(mlflow_id, f"{rec.run_id}.json", str(tmp_path / "dl"))
    assert json.loads(open(local).read())["run_id"] == rec.run_id
    # a second sink on the same store reuses the experiment
    assert MlflowSink(uri).experiment_id == sink.experiment_id
