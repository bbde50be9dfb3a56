"""The attention-kernel benchmarks' CPU dry runs under the Triton interpreter: every config
checked against the reference, every case timed, nothing recorded without --results; and
their shared device gate."""

import json

import pytest

from sparsebench.kernels.dispatch import interpreting, triton_available

from .loader import load_benchmark

needs_interpreter = pytest.mark.skipif(not triton_available() or not interpreting(),
                                       reason="needs triton and TRITON_INTERPRET=1 (the kernels on CPU)")


@needs_interpreter
@pytest.mark.parametrize("name,first_col", [("block_sparse_attn", "| L |"), ("topk_decode_attn", "| context |")])
def test_cpu_dry_run_records_when_asked(name, first_col, tmp_path, capsys):
    bench = load_benchmark(f"kernels/{name}")
    assert bench.main(["--device", "cpu", "--results", str(tmp_path)]) == 0
    assert first_col in capsys.readouterr().out
    (path,) = (tmp_path / "kernels").glob(f"*-{name}-*.json")
    rec = json.loads(path.read_text())
    assert rec["op"] == name and rec["correctness"]["passed"] and rec["cases"]
    assert rec["hardware"]["profile"] == "cpu"


def test_a_cpu_dry_run_without_the_interpreter_exits_2(monkeypatch, capsys):
    common = load_benchmark("kernels/common")
    monkeypatch.setattr("sparsebench.kernels.dispatch.interpreting", lambda: False)
    assert common.device_gate("cpu") == 2
    assert "needs TRITON_INTERPRET=1" in capsys.readouterr().err
