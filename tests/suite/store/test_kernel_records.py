"""Kernel benchmark records: round trip, ratios, refusal of a newer schema."""

import json

import pytest

from sparsebench.store.kernel_records import (
    KernelCase,
    new_kernel_record,
    read_kernel_records,
    write_kernel_record,
)


def _case(impl, m, p50):
    return KernelCase(impl=impl, params={"m": m, "n": 8}, samples_ms=[p50, p50 * 1.1], p50_ms=p50, p90_ms=p50 * 1.1)


def test_round_trip_and_ratios(tmp_path):
    rec = new_kernel_record("demo", "dense", {"passed": True}, profile="cpu")
    rec.cases += [_case("dense", 1, 2.0), _case("fast", 1, 0.5), _case("dense", 16, 3.0), _case("fast", 16, 3.0)]
    rec.add_ratios(("m",))
    assert [(r["m"], r["speedup"]) for r in rec.ratios] == [(1, 4.0), (16, 1.0)]
    path = write_kernel_record(rec, tmp_path)
    assert path.parent == tmp_path / "kernels"
    [back] = read_kernel_records(tmp_path)
    assert back == rec
    with pytest.raises(FileExistsError):
        write_kernel_record(rec, tmp_path)


def test_newer_schema_refused(tmp_path):
    rec = new_kernel_record("demo", "dense", {}, profile="cpu")
    path = write_kernel_record(rec, tmp_path)
    raw = json.loads(path.read_text())
    raw["schema_version"] = 99
    path.chmod(0o644)
    path.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="newer"):
        read_kernel_records(tmp_path)
