"""Records: round trip, append-only writes, migration on read, refusals."""

import json

import pytest

from sparsebench.api import SCHEMA_VERSION, Metric, RunRecord, RunSpec
from sparsebench.errors import StoreError
from sparsebench.store import ResultsStore, new_run_id


def _record(**kw):
    spec = RunSpec()
    rec = RunRecord(run_id=new_run_id("dense"), spec_key=spec.key(), created_at="2026-11-22T00:00:00+00:00",
                    status="ok", spec=spec.model_dump(mode="json"), **kw)
    rec.add_metric("perplexity", Metric(value=21.5, stderr=0.4, direction="lower", n=1000))
    rec.samples["decode_ms"] = [1.0, 2.0, 3.0]
    return rec


def test_round_trip(tmp_path):
    store = ResultsStore(tmp_path)
    rec = _record()
    path = store.write(rec)
    back = store.read(path)
    assert back == rec
    assert store.get(rec.run_id[:20]) == rec
    assert json.loads(path.read_text())["schema_version"] == SCHEMA_VERSION


def test_never_overwrites(tmp_path):
    store = ResultsStore(tmp_path)
    rec = _record()
    path = store.write(rec)
    before = path.read_bytes()
    with pytest.raises(StoreError, match="overwrite"):
        store.write(rec.model_copy(update={"status": "failed"}))
    assert path.read_bytes() == before
    assert [p.name for p in store.runs.iterdir()] == [path.name]  # no temp files left


def test_v1_record_is_upgraded_on_read_and_file_untouched(tmp_path):
    store = ResultsStore(tmp_path)
    store.runs.mkdir(parents=True)
    v1 = {
        "schema_version": 1, "run_id": "old-run", "spec_key": "abc", "created_at": "2026-01-01T00:00:00+00:00",
        "status": "ok", "spec": {"method": {"name": "dense"}, "model": {"name": "m"}},
        "metrics": {"perplexity": {"value": 20.0, "stderr": 0.5, "direction": "lower", "n": 100},
                    "weight_sparsity": 0.0},
        "timings": {"apply": 1.5},
    }
    path = store.runs / "old-run.json"
    path.write_text(json.dumps(v1))
    rec = store.read(path)
    assert rec.schema_version == SCHEMA_VERSION
    assert rec.metrics == {"perplexity": 20.0, "weight_sparsity": 0.0}
    assert rec.metric_info["perplexity"].stderr == 0.5
    assert rec.phases == {"apply": 1.5}
    assert json.loads(path.read_text()) == v1


def test_the_committed_v2_records_read_as_v3_without_interleaved_samples():
    """Records written before ``interleaved`` existed keep reading; their comparison then uses
    each record's own samples (``sparsebench.report.compare_latency``)."""
    from pathlib import Path

    store = ResultsStore(Path(__file__).resolve().parents[2] / "results")
    v2 = [path for path in sorted(store.runs.glob("*.json")) if json.loads(path.read_text())["schema_version"] == 2]
    assert v2  # files are never rewritten: the v2 records stay
    for path in v2:
        rec = store.read(path)
        assert rec.schema_version == SCHEMA_VERSION and rec.interleaved == {}


def test_newer_schema_is_refused(tmp_path):
    store = ResultsStore(tmp_path)
    store.runs.mkdir(parents=True)
    (store.runs / "future.json").write_text(json.dumps({"schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(StoreError, match="newer than this sparsebench"):
        store.all()


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"schema_version": 2, "run_id": 3}'])
def test_corrupt_records_are_refused_with_the_path(tmp_path, content):
    store = ResultsStore(tmp_path)
    store.runs.mkdir(parents=True)
    bad = store.runs / "bad.json"
    bad.write_text(content)
    with pytest.raises(StoreError, match="bad.json"):
        store.all()
    assert bad.read_text() == content


def test_spec_key_is_stable_and_sensitive():
    a = RunSpec()
    assert a.key() == RunSpec().key()
    assert a.key() != RunSpec(seed=1).key()
    assert len(a.key()) == 16
