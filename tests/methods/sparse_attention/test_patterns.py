"""The index sets and masks of the patterns, on cases small enough to check by hand."""

import pytest
import torch

from sparsebench.methods.sparse_attention import patterns as P
from sparsebench.methods.sparse_attention.attention import DensityStats
from sparsebench.methods.sparse_attention.layers import TidalHandler, TidalState

from .helpers import reference_attention


def test_streaming_mask_6x6_sinks1_window2():
    want = torch.tensor([
        [1, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0],
        [1, 0, 1, 1, 0, 0],
        [1, 0, 0, 1, 1, 0],
        [1, 0, 0, 0, 1, 1],
    ], dtype=torch.bool)
    got = P.streaming_allowed(torch.arange(6), 6, sinks=1, window=2)
    assert torch.equal(got, want)
    assert int(P.streaming_pairs(torch.arange(6), 1, 2)) == 15


def test_streaming_pairs_by_hand_window8_sinks2_on_32_tokens():
    # queries 0..9 see all their p+1 keys (55 pairs), queries 10..31 see 2 sinks + 8 (22 x 10)
    assert int(P.streaming_pairs(torch.arange(32), sinks=2, window=8)) == 55 + 220
    for sinks, window in [(0, 1), (3, 4), (5, 40), (4, 2)]:
        q_pos = torch.arange(37)
        mask = P.streaming_allowed(q_pos, 37, sinks, window)
        assert int(P.streaming_pairs(q_pos, sinks, window)) == int(mask.sum())


def test_block_pair_counts_of_a_short_last_block():
    counts = P.block_pair_counts(5, 2)  # blocks {0,1} {2,3} {4}
    assert counts.tolist() == [[3, 0, 0], [4, 3, 0], [2, 2, 1]]
    assert counts.sum() == P.causal_pairs(5)


def test_block_mask_rows_and_pairs_agree():
    g = torch.Generator().manual_seed(0)
    n, block = 11, 3
    bm = torch.rand(2, 4, 4, generator=g) > 0.5
    rows = P.block_mask_rows(bm, 0, n, n, block) & torch.ones(n, n, dtype=torch.bool).tril()
    assert int(rows.sum()) == int(P.block_mask_pairs(bm, n, block))


def test_block_sparse_keeps_the_diagonal_and_the_best_pooled_block():
    n, block, d = 8, 2, 4
    q = torch.zeros(1, 1, n, d)
    q[..., 0] = 1.0
    k = torch.zeros(1, 1, n, d)
    k[:, :, 2:4, 0] = 5.0  # key block 1 scores highest for every query block
    bm = P.block_sparse_mask(q, k, block, density=0.4, scale=1.0)[0, 0]
    # row 3: 15 causal pairs, budget 6: diagonal (3 pairs) then block 1 (4 pairs, midpoint 5 < 6)
    assert bm[3].tolist() == [False, True, False, True]
    assert bm[1].tolist() == [False, True, False, False]
    assert all(bm[i, i] for i in range(4)) and not bm.triu(1).any()


def test_a_shape_is_sink_block_plus_a_band():
    bm = P.a_shape_block_mask(64, 8, 0.3)
    i, j = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    w = int(bm[7].sum()) - 1  # band width of the last row (plus the sink block)
    assert torch.equal(bm, (j <= i) & ((j == 0) | (i - j < w)))
    assert torch.equal(P.a_shape_block_mask(64, 8, 1.0), (j <= i))


def _crafted_probs():
    """Two last queries (positions 4, 5) of a 6-token prompt."""
    probs = torch.zeros(2, 6)
    probs[0, 1], probs[0, 4], probs[0, 2] = 0.5, 0.3, 0.2  # p=4: col 1; diag 0; diag 2
    probs[1, 1], probs[1, 3], probs[1, 5] = 0.4, 0.4, 0.2  # p=5: col 1 (diag 4); diag 2; diag 0
    return probs, torch.tensor([4, 5])


def test_vertical_slash_scores_on_a_crafted_matrix():
    col, diag = P.line_scores(*_crafted_probs())
    torch.testing.assert_close(col, torch.tensor([0.0, 0.9, 0.2, 0.4, 0.3, 0.2]))
    torch.testing.assert_close(diag, torch.tensor([0.5, 0.0, 0.6, 0.5, 0.4, 0.0]))


def test_vertical_slash_scores_match_their_definition_per_batch_and_head():
    """Column and diagonal sums, for a prefill's last queries and for scattered positions,
    equal the pair-by-pair definition in every (batch, head)."""
    g = torch.Generator().manual_seed(3)
    n, m = 37, 5
    probs = torch.rand(2, 3, m, n, generator=g)
    for q_pos in (torch.arange(n - m, n), torch.tensor([3, 9, 10, 20, 36])):
        col, diag = P.line_scores(probs, q_pos)
        want_col, want_diag = torch.zeros(2, 3, n), torch.zeros(2, 3, n)
        for i, p in enumerate(q_pos.tolist()):
            for j in range(p + 1):
                want_col[..., j] += probs[..., i, j]
                want_diag[..., p - j] += probs[..., i, j]
        torch.testing.assert_close(col, want_col)
        torch.testing.assert_close(diag, want_diag)


@pytest.mark.parametrize("density,cols,diags", [
    # budget 21 * d; forced col 0 and diag 0 (6 + 6 pairs), then col 1 (5), diag 2 (4), ...
    (0.5, [0], [0]),        # col 1: 12 + 2.5 >= 10.5
    (0.8, [0, 1], [0]),     # col 1: 14.5 < 16.8; diag 2: 17 + 2 >= 16.8
    (0.95, [0, 1], [0, 2]),  # diag 2: 19 < 19.95; diag 3: 21 + 1.5 >= 19.95
])
def test_vertical_slash_selection_on_a_crafted_matrix(density, cols, diags):
    col, diag = P.line_scores(*_crafted_probs())
    c, d = P.select_lines(col, diag, 6, density, corrections=0)
    assert torch.nonzero(c).flatten().tolist() == cols
    assert torch.nonzero(d).flatten().tolist() == diags


def test_vertical_slash_cover_counts_overlaps_once():
    c = torch.tensor([1, 1, 0, 0, 0, 0], dtype=torch.bool)
    d = torch.tensor([1, 0, 1, 0, 0, 0], dtype=torch.bool)
    rows = P.vertical_slash_rows(c, d, 0, 6) & torch.ones(6, 6, dtype=torch.bool).tril()
    assert int(P.vertical_slash_pairs(c, d)) == int(rows.sum()) == 11 + 10 - 4


def test_vertical_slash_estimate_finds_a_heavy_column():
    n, d = 24, 4
    q = torch.zeros(1, 1, n, d)
    q[..., 0] = 1.0
    k = torch.zeros(1, 1, n, d)
    k[0, 0, 5, 0] = 10.0  # every later query attends key 5
    cols, diags = P.estimate_vertical_slash(q, k, 1.0, last_q=4, density=0.2)
    assert cols[0, 0, 5] and cols[0, 0, 0] and diags[0, 0, 0]
    assert P.select_lines(cols.float(), diags.float(), n, 1.0)[0].all()


def test_quest_page_bounds_and_pages_by_hand():
    k = torch.tensor([[1.0, -2.0], [3.0, 0.0], [-1.0, 4.0], [0.0, 1.0], [2.0, 2.0]]).view(1, 1, 5, 2)
    kmin, kmax, valid = P.page_bounds(k, 2)
    assert kmin[0, 0].tolist() == [[1, -2], [-1, 1], [2, 2]]
    assert kmax[0, 0].tolist() == [[3, 0], [0, 4], [2, 2]]
    assert valid.tolist() == [[True, True, True]]
    q = torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).view(1, 2, 2)  # two query heads on one key head
    bound = P.page_upper_bounds(q, kmin, kmax)
    assert bound[0].tolist() == [[5, -1, 0], [-1, 5, 0]]
    true_max = (q @ k[0, 0].T).view(2, 5)
    for page, cols in enumerate([[0, 1], [2, 3], [4]]):
        assert (bound[0, :, page] >= true_max[:, cols].amax(-1)).all()
    cur = torch.tensor([2])
    pages = P.quest_pages(q, k, 2, 2, cur)
    assert pages[0].tolist() == [[True, False, True], [False, True, True]]  # best page + the current one
    assert P.quest_pages(q, k, 2, 1, cur)[0].tolist() == [[False, False, True]] * 2
    # a static cache whose last slot is empty: page 2 is invalid, page 1 is current
    valid_keys = torch.tensor([[True, True, True, True, False]])
    pages = P.quest_pages(q, k, 2, 2, torch.tensor([1]), valid_keys)
    assert pages[0].tolist() == [[True, True, False], [True, True, False]]


def test_topk_keep_and_budgets():
    s = torch.tensor([[0.5, 2.0, 2.0, -float("inf"), 1.0]])
    assert P.topk_keep(s, 2).tolist() == [[False, True, True, False, False]]
    assert P.topk_keep(s, 9).tolist() == [[True, True, True, False, True]]
    assert P.budget_tokens(0.25, "fraction", 41) == 11
    assert P.budget_tokens(0.1, "fraction", 30) == 3  # not 4 from 3.0000000000000004
    assert P.budget_tokens(64, "tokens", 40) == 40
    assert P.budget_tokens(0.25, "fraction", torch.tensor([41])).tolist() == [11]


def test_tidaldecode_reuses_the_positions_of_the_selection_layer():
    stats, state = DensityStats(), TidalState()
    select = TidalHandler(0, stats, "select", state, budget=3, unit="tokens")
    reuse = TidalHandler(1, stats, "reuse", state, budget=3, unit="tokens")
    n, d = 10, 4
    q = torch.zeros(1, 2, 1, d)
    q[0, 0, 0, 0] = 1.0
    q[0, 1, 0, 1] = 1.0
    k = torch.zeros(1, 1, n, d)
    k[0, 0, [2, 6], 0] = torch.tensor([3.0, 2.0])  # head 0 prefers keys 2, 6
    k[0, 0, [1, 4], 1] = torch.tensor([1.0, 5.0])  # head 1 prefers keys 4, 1
    v = torch.randn(1, 1, n, d)
    assert select(None, q, k, v, None, 1.0) is None  # the selection layer itself is dense
    want = torch.zeros(1, 2, n, dtype=torch.bool)
    want[0, 0, [2, 6, n - 1]] = True  # top 2 + the current token
    want[0, 1, [1, 4, n - 1]] = True
    assert torch.equal(state.keep, want)
    g = torch.Generator().manual_seed(0)
    q2, k2, v2 = (torch.randn(1, 2, 1, d, generator=g), torch.randn(1, 1, n, d, generator=g),
                  torch.randn(1, 1, n, d, generator=g))
    out = reuse(None, q2, k2, v2, None, 0.5)
    torch.testing.assert_close(out, reference_attention(q2, k2, v2, want[:, :, None, :], 0.5))
