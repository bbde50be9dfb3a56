"""The comparison table's latency rule, on samples whose statistics can be checked by hand.

A change is claimed only when a one-sided Mann-Whitney test gives p < 0.01 *and* the
medians differ by more than the noise band: the larger of 10% and each sample set's
(p90 - p10) / p50 (linear-interpolated percentiles; for five sorted values p10 sits 0.4 of
the way from the first to the second, p90 0.6 of the way from the fourth to the fifth).
"""

import pytest

from sparsebench.api import Metric, RunRecord
from sparsebench.report import compare_latency, comparison_table

KEY = "prefill_b1_s128_ms_p50"


def _rec(method: str, samples: list[float], interleaved: dict | None = None) -> RunRecord:
    rec = RunRecord(run_id=f"r-{method}", spec_key="k", created_at="2026-12-05T00:00:00+00:00", status="ok",
                    spec={"method": {"name": method}}, samples={"prefill_b1_s128_ms": samples},
                    interleaved=interleaved or {})
    rec.add_metric(KEY, Metric(value=sorted(samples)[len(samples) // 2], direction="lower", unit="ms"))
    return rec


def _text(dense: list[float], method: list[float]) -> str:
    cmp = compare_latency(_rec("dense", dense), _rec("wanda", method), KEY)
    assert cmp is not None and not cmp.interleaved
    return cmp.text()


def test_overlapping_rounds_are_within_noise():
    # dense: p50 340, p10 308, p90 372 -> spread 64/340 = 18.8%; method p50 335 -> 340/335 = 1.01
    assert _text([300, 320, 340, 360, 380], [310, 325, 335, 345, 360]) == "~1.01x (within noise ±19%)"


def test_clearly_separated_samples_are_a_speed_up_or_a_slowdown():
    slow, fast = [200, 202, 204, 206, 208], [100, 101, 102, 103, 104]
    # every dense sample above every method sample: exact p = 1 / C(10, 5) = 1/252 < 0.01;
    # spreads 6.4/204 and 3.2/102 are under 10%, so the band is 10%; 204 / 102 = 2
    assert _text(slow, fast) == "2.00x faster"
    assert _text(fast, slow) == "2.00x slower"


def test_a_large_ratio_from_too_few_samples_is_not_claimed():
    # two against two, fully separated: p = 1 / C(4, 2) = 0.17
    assert _text([200, 208], [100, 104]) == "~2.00x (not significant: p=0.17, 2 vs 2 samples)"


def test_a_small_significant_shift_is_inside_the_ten_percent_floor():
    # separated (p = 1/252) but 204 / 196 = 1.04 < 1.10
    assert _text([200, 202, 204, 206, 208], [192, 194, 196, 198, 199]) == "~1.04x (within noise ±10%)"


def test_the_interleaved_pair_decides_over_the_records_own_phases():
    # the records' own phases drifted apart (brief's numbers: dense 319-374 ms, pruned 278-312):
    # taken at face value they would read as a 1.17x speed-up
    dense = _rec("dense", [319, 331, 345, 358, 374])
    own = [278, 287, 295, 304, 312]
    assert _text(dense.samples["prefill_b1_s128_ms"], own) == "1.17x faster"
    # timed in alternating rounds the same two models overlap
    pair = {"dense": [330, 336, 341, 350, 362], "method": [329, 338, 340, 348, 360]}
    wanda = _rec("wanda", own, {"prefill_b1_s128_ms": pair})
    cmp = compare_latency(dense, wanda, KEY)
    assert cmp.interleaved and cmp.dense == pair["dense"] and cmp.method == pair["method"]
    assert cmp.change.verdict == "within noise"
    table = comparison_table([dense, wanda])
    row = next(line for line in table.splitlines() if line.startswith("| prefill_b1_s128"))
    assert row.split(" | ")[1:] == ["341.00", "340.00", "~1.00x (within noise ±10%) |"]
    assert row.startswith("| prefill_b1_s128 p50 ms (interleaved) |")
    assert "faster" not in table
    assert "alternating rounds" in table and "dense / wanda p50 ms: prefill_b1_s128 345.00 / 295.00" in table


def test_records_without_samples_never_claim_a_change():
    dense, wanda = _rec("dense", [100.0]), _rec("wanda", [50.0])
    dense.samples, wanda.samples = {}, {}
    assert compare_latency(dense, wanda, KEY) is None
    table = comparison_table([dense, wanda])
    assert "~2.00x (no samples: noise unknown)" in table and "faster" not in table


@pytest.mark.parametrize("method", [[300, 320, 340, 360, 380], [100, 101, 102, 103, 104]])
def test_the_gate_and_the_table_share_one_test(method):
    """The gate's latency verdict is the table's rule with the band fixed at its threshold."""
    from sparsebench.gate.compare import Settings, latency_row

    dense = [200, 202, 204, 206, 208]
    cmp = compare_latency(_rec("dense", dense), _rec("wanda", method), KEY)
    row = latency_row("prefill_b1_s128_ms", dense, method, Settings())
    expected = {"faster": "improved", "slower": "REGRESSION", "within noise": "pass"}[cmp.change.verdict]
    assert row.verdict == expected
