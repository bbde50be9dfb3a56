"""The sparse-prefill benchmark's CPU dry run (tiny Llama, the methods' reference paths):
every (method, length) case lands in one record with its density, and bad arguments are
refused with exit code 2 before anything is written."""

import json

import pytest

from .loader import load_benchmark

LABELS = {"dense", "streaming[w=4096]", "streaming[w=1/8]", "minference[vertical_slash]",
          "minference[block_sparse]", "quest", "tidaldecode"}


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("sparse_prefill")


@pytest.fixture(scope="module")
def record(bench, tmp_path_factory):
    out = tmp_path_factory.mktemp("prefill")
    rc = bench.main(["--device", "cpu", "--lengths", "128", "192", "--reps", "1", "--check-length", "80",
                     "--results", str(out)])
    assert rc == 0
    (f,) = (out / "kernels").glob("*-sparse_prefill-*.json")
    return json.loads(f.read_text())


def test_windows_are_tokens_or_fractions_of_the_length(bench):
    assert bench.parse_window("4096", 131072) == 4096
    assert bench.parse_window("1/8", 131072) == 16384
    assert bench.parse_window("0.25", 100) == 25
    assert bench.parse_window("1/1000", 100) == 1
    for bad in ("0", "-3", "3/2", "x"):
        with pytest.raises((ValueError, ZeroDivisionError)):
            bench.parse_window(bad, 100)


def test_dry_run_records_every_method_at_every_length(record):
    assert record["op"] == "sparse_prefill" and record["baseline_impl"] == "dense"
    assert {(c["impl"], c["params"]["L"]) for c in record["cases"]} == {(lbl, L) for lbl in LABELS for L in (128, 192)}
    assert {(r["impl"], r["L"]) for r in record["ratios"]} == {(lbl, L) for lbl in LABELS - {"dense"} for L in (128, 192)}
    assert all(len(c["samples_ms"]) == 1 and c["p50_ms"] > 0 for c in record["cases"])
    assert "dry run" in " ".join(record["notes"])
    ok = record["correctness"]
    assert ok["passed"] and ok["check_length"] == 80
    assert set(ok["errors"]) == {f"{lbl} covering" for lbl in LABELS - {"dense"}} | {"streaming kernel vs ref"}
    assert max(ok["errors"].values()) < 1e-4  # fp32 reference paths: dense up to rounding


def test_dry_run_densities_are_the_methods_reports(record):
    dens = {(c["impl"], c["params"]["L"]): c["extra"]["density"] for c in record["cases"]}
    for L in (128, 192):
        assert dens[("dense", L)] == 1.0
        assert dens[("streaming[w=4096]", L)] == 1.0  # the window covers the prompt: dense
        assert 0.1 < dens[("streaming[w=1/8]", L)] < 0.5
        assert dens[("minference[vertical_slash]", L)] == pytest.approx(0.1, abs=0.03)  # token-exact on CPU
        assert 0 < dens[("minference[block_sparse]", L)] < 0.5
        assert dens[("quest", L)] == dens[("tidaldecode", L)] == 1.0  # prefill dense by design
    cfg = {c["impl"]: c["params"]["config"] for c in record["cases"] if c["params"]["L"] == 192}
    assert cfg["streaming[w=1/8]"] == {"sinks": 4, "window": 24}
    assert cfg["minference[vertical_slash]"]["patterns"] == "vertical_slash"


@pytest.mark.parametrize("args,msg", [
    (["--lengths", "8", "256"], "lengths must be >= 16"),
    (["--density", "0"], "density must be in (0, 1]"),
    (["--density", "1.5"], "density must be in (0, 1]"),
    (["--windows", "0"], "windows must be"),
    (["--methods", "dense", "h2o"], "methods must be among"),
    (["--minference-patterns", "vertical"], "minference patterns must be"),
])
def test_bad_arguments_exit_2_without_a_record(bench, tmp_path, capsys, args, msg):
    assert bench.main(["--device", "cpu", *args, "--results", str(tmp_path)]) == 2
    assert msg in capsys.readouterr().err
    assert not (tmp_path / "kernels").exists()
