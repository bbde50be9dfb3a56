"""The int4 decode benchmark's CPU dry run under the Triton interpreter: every decode tile is
checked bit for bit before it is timed, and the route stage writes each of its cases."""

import json

import pytest

from .loader import load_benchmark

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def bench():
    mod = load_benchmark("kernels/int4_dequant")
    if not mod.fast.INTERPRET:
        pytest.skip("the CPU dry run needs TRITON_INTERPRET=1")
    return mod


def test_the_dry_run_writes_every_decode_and_route_stage(bench, tmp_path):
    assert bench.main(["--device", "cpu", "--results", str(tmp_path), "--m", "3"]) == 0
    (path,) = (tmp_path / "kernels").glob("*-int4_dequant-*.json")
    rec = json.loads(path.read_text())
    assert rec["correctness"]["passed"]
    assert [c["plans"] for c in rec["correctness"]["checked"]] == [3, 3]
    for shape in bench.TINY:
        impls = {c["impl"] for c in rec["cases"] if c["params"]["shape"] == shape}
        assert {"bf16_fill", "bf16_copy", "route:linear_randn", "route:mm_randn", "route:mm_decoded", "route:decode+linear", "route:decode+mm",
                "route:int4_matmul"} <= impls
        route = [c for c in rec["cases"] if c["impl"].startswith("route:") and c["params"]["shape"] == shape]
        assert {c["params"]["m"] for c in route} == {3}
        assert all(c["params"]["decode_plan"].startswith("dequant[") for c in route)
    # ratios: the decodes and copy_ against fill_ of the same shape; the route cases have none
    assert {r["impl"] for r in rec["ratios"]} == {c["impl"] for c in rec["cases"] if c["impl"].startswith("dequant")} | {"bf16_copy"}


def test_the_cpu_dry_run_needs_the_interpreter(bench, monkeypatch, capsys):
    monkeypatch.setattr(bench.fast, "INTERPRET", False)
    assert bench.main(["--device", "cpu"]) == 2
    assert "TRITON_INTERPRET=1" in capsys.readouterr().err
