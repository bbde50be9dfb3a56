"""The leaderboard sweeps shipped under sweeps/ (validity of every file: test_file.py): one per
method family, and their CPU grid points are the spec keys of the committed records."""

from pathlib import Path

import pytest

from sparsebench.resolve import resolve
from sparsebench.store import ResultsStore
from sparsebench.sweep import expand, load_sweep

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = sorted((ROOT / "sweeps").glob("*.yaml"))
CPU = {"id": None, "cuda_available": False}


def test_every_family_with_methods_has_a_sweep():
    names = {p.stem for p in SHIPPED}
    assert {"pruning", "quantization", "activation", "kv-cache", "sparse-attention"} <= names


@pytest.mark.parametrize("name", ["activation", "pruning-methods", "quantization", "sparse-attention", "kv-cache"])
def test_leaderboard_sweeps_match_committed_records(name):
    """These sweeps exist to (re)produce the leaderboard's records: their resolved spec keys
    must be the keys of ok records in results/ (a typo in the file would silently make a
    sweep that re-runs everything under new keys)."""
    recorded = {r.spec_key for r in ResultsStore(ROOT / "results") if r.status == "ok"}
    keys = [resolve(run.spec, CPU).spec.key() for run in expand(load_sweep(ROOT / "sweeps" / f"{name}.yaml"))]
    missing = [k for k in keys if k not in recorded]
    assert not missing, f"{name}: {len(missing)} of {len(keys)} grid points have no ok record"
