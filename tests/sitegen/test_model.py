"""Leaderboard numbers: deltas and speed-ups against the referenced dense record."""

import pytest

from sparsebench.sitegen import model as M

from .conftest import HOSTILE


@pytest.fixture
def data(results_dir):
    return M.load(results_dir)


def test_boards_group_by_family_and_profile_without_baselines(data):
    assert data.families == ["pruning"]
    (board,) = data.boards["pruning"]
    assert board.profile == "cpu"
    assert all(M.family_of(r.rec) != "baseline" for r in board.rows)
    assert len(board.rows) == 6  # three ok runs, failed, skipped, hostile
    assert data.latest.startswith("2026-11-07")


def test_deltas_and_speedups_use_the_baseline_record(data):
    row = data.rows["20261102T000000Z-wanda-bbbbbb"]
    assert row.base.run_id == "20261101T000000Z-dense-aaaaaa"
    assert row.accuracy["perplexity"] == (25.0, 5.0)
    assert row.accuracy["lastword_accuracy"][1] == pytest.approx(-0.05)
    assert row.speedup == {"decode_b1_c128_ms_p50": pytest.approx(1.25), "prefill_b1_s128_ms_p50": pytest.approx(1.25)}
    assert row.loss("perplexity") == pytest.approx(25.0)       # lower is better: +25 % worse
    assert row.loss("lastword_accuracy") == pytest.approx(12.5)  # higher is better: 0.40 -> 0.35
    assert row.memory == 900 * 2**20 and row.stored == 500 * 2**20


def test_failed_and_skipped_rows_have_no_numbers(data):
    failed = data.rows["20261105T000000Z-magnitude-eeeeee"]
    skipped = data.rows["20261106T000000Z-wanda-ffffff"]
    assert failed.accuracy == {} and failed.speedup == {} and failed.loss("perplexity") is None
    assert skipped.rec.reason and skipped.memory is None


def test_missing_baseline_gives_no_delta(data):
    rec = data.rows["20261102T000000Z-wanda-bbbbbb"].rec
    row = M.make_row(rec, {})
    assert row.base is None and row.accuracy["perplexity"] == (25.0, None)
    assert row.speedup["decode_b1_c128_ms_p50"] is None


def test_slug_is_safe_and_unique():
    assert M.slug("wanda") == "wanda"
    s = M.slug(HOSTILE)
    assert all(c.isalnum() or c in "._-" for c in s)
    assert s != M.slug("<script>alert(2)</script>")


def test_leaderboard_columns_leave_the_long_context_cells_to_the_run_page(data):
    rec = data.rows["20261102T000000Z-wanda-bbbbbb"].rec.model_copy(deep=True)
    rec.spec["tasks"] = [{"name": "passkey"}, {"name": "vt"}]
    for key in ("passkey_accuracy", "passkey_accuracy_L4096_D50", "vt_recall", "vt_recall_L1024"):
        rec.metrics[key] = 0.5
        rec.metric_info[key] = rec.metric_info["lastword_accuracy"]
    assert M.accuracy_keys(rec) == ["passkey_accuracy", "vt_recall"]


def test_kv_cache_rows_are_placed_by_the_kv_bytes_they_hold(data):
    rec = data.rows["20261102T000000Z-wanda-bbbbbb"].rec.model_copy(deep=True)
    rec.metrics["kv_bytes_held_mean"] = 3 * 2**20
    assert M.make_row(rec, {}).memory == 3 * 2**20


def test_speed_ups_inside_the_noise_are_marked(data):
    """With samples the leaderboard follows the comparison table's rule
    (``tests/suite/test_report.py``): the interleaved pair first, a caveat when not claimed."""
    wanda = data.rows["20261102T000000Z-wanda-bbbbbb"].rec.model_copy(deep=True)
    base = data.rows["20261102T000000Z-wanda-bbbbbb"].base.model_copy(deep=True)
    base.samples["prefill_b1_s128_ms"] = [200, 202, 204, 206, 208]
    wanda.samples["prefill_b1_s128_ms"] = [100, 101, 102, 103, 104]  # own phases: 2x apart
    row = M.make_row(wanda, {base.run_id: base})
    assert row.speedup["prefill_b1_s128_ms_p50"] == pytest.approx(2.0) and row.noise["prefill_b1_s128_ms_p50"] == ""
    wanda.interleaved["prefill_b1_s128_ms"] = {"dense": [300, 320, 340, 360, 380], "method": [310, 325, 335, 345, 360]}
    row = M.make_row(wanda, {base.run_id: base})
    assert row.speedup["prefill_b1_s128_ms_p50"] == pytest.approx(340 / 335)
    assert row.noise["prefill_b1_s128_ms_p50"] == "within noise ±19%"
    assert "decode_b1_c128_ms_p50" not in row.noise  # no samples: the ratio of p50s, unmarked
    assert row.speedup["decode_b1_c128_ms_p50"] == pytest.approx(1.25)
