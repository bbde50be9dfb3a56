"""Log run records to MLflow: params = flattened spec, metrics = all numbers, artifact = record.

Default tracking store: ``sqlite:///<cwd>/mlflow.db`` (``MLFLOW_TRACKING_URI`` overrides), so
``mlflow ui --backend-store-uri sqlite:///mlflow.db`` started in the same folder shows the runs.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ..api import RunRecord

EXPERIMENT = "sparsebench"


def default_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        elif isinstance(v, list | tuple) and v and all(isinstance(x, dict) for x in v):
            for i, x in enumerate(v):
                name = x.get("name", str(i)) if isinstance(x, dict) else str(i)
                out.update(flatten(x, f"{key}.{name}."))
        else:
            out[key] = json.dumps(v) if not isinstance(v, str) else v
    return {k[:250]: v[:6000] for k, v in out.items()}


class MlflowSink:
    def __init__(self, tracking_uri: str | None = None, experiment: str = EXPERIMENT):
        import mlflow  # heavy: only imported when logging is wanted

        self.mlflow = mlflow
        self.uri = tracking_uri or default_tracking_uri()
        self.client = mlflow.MlflowClient(tracking_uri=self.uri)
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            location = None
            if self.uri.startswith("sqlite:"):
                # keep artifacts beside the database, not wherever the server is started
                db = Path(self.uri.split("sqlite:///", 1)[-1])
                location = (db.parent / "mlartifacts").resolve().as_uri()
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)
        else:
            self.experiment_id = exp.experiment_id

    def start_parent(self, name: str, tags: dict[str, str]) -> str:
        """Open a run that groups a sweep's runs (they name it in ``mlflow.parentRunId``)."""
        run = self.client.create_run(self.experiment_id, tags={"mlflow.runName": name, **tags})
        return run.info.run_id

    def finish_parent(self, run_id: str, status: str, counts: dict[str, int]) -> None:
        """Close a sweep's parent run: ``status`` FINISHED, FAILED or KILLED, with its counts."""
        metrics = [self.mlflow.entities.Metric(k, float(v), 0, 0) for k, v in counts.items()]
        self.client.log_batch(run_id, metrics=metrics)
        self.client.set_terminated(run_id, status=status)

    def log(self, record: RunRecord, parent_run_id: str | None = None) -> str:
        """Create one MLflow run for the record (a child of ``parent_run_id`` when given);
        returns the MLflow run id."""
        spec = record.spec
        tags = {
            "sparsebench.run_id": record.run_id,
            "sparsebench.spec_key": record.spec_key,
            "sparsebench.status": record.status,
            "sparsebench.profile": str(record.hardware.get("profile")),
            "mlflow.runName": f"{spec['method']['name']} / {spec['model']['name']}",
        }
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id
        run = self.client.create_run(self.experiment_id, tags=tags)
        rid = run.info.run_id
        try:
            params = flatten(spec)
            items = list(params.items())
            for i in range(0, len(items), 100):
                self.client.log_batch(rid, params=[self.mlflow.entities.Param(k, v) for k, v in items[i:i + 100]])
            metrics = [self.mlflow.entities.Metric(k, float(v), 0, 0) for k, v in record.metrics.items()
                       if v == v]  # drop NaN
            for i in range(0, len(metrics), 500):
                self.client.log_batch(rid, metrics=metrics[i:i + 500])
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / f"{record.run_id}.json"
                path.write_text(json.dumps(record.model_dump(mode="json"), indent=1, sort_keys=True))
                self.client.log_artifact(rid, str(path))
            status = {"ok": "FINISHED", "failed": "FAILED", "skipped": "KILLED"}[record.status]
            self.client.set_terminated(rid, status=status)
        except Exception:
            self.client.set_terminated(rid, status="FAILED")
            raise
        return rid
