"""Pure functions building the index sets and masks of the attention patterns.

Conventions: query positions ``q_pos`` and key indices ``j`` are cache indices; a query at
position ``p`` may attend key ``j`` only when ``j <= p`` (causal). Masks are ``True`` where
a query-key pair is computed. A prefill of ``n`` tokens has ``n (n + 1) / 2`` causal pairs.
Everything stays on the tensors' device and uses no data-dependent shapes (no host sync),
so a decode step with these patterns can be captured in a CUDA graph.
"""

from __future__ import annotations

import math

import torch

from ..scores import scores_fp32

INF = float("inf")


# ----------------------------------------------------------------------------- streaming


def streaming_allowed(q_pos: torch.Tensor, n_kv: int, sinks: int, window: int) -> torch.Tensor:
    """``[..., q, n_kv]``: key ``j`` is attended by the query at ``p`` when ``j <= p`` and
    (``j < sinks`` or ``p - j < window``): the sinks and the last ``window`` tokens up to
    and including the query itself."""
    j = torch.arange(n_kv, device=q_pos.device)
    p = q_pos[..., None]
    return (j <= p) & ((j < sinks) | (p - j < window))


def streaming_pairs(q_pos: torch.Tensor, sinks: int, window: int) -> torch.Tensor:
    """Pairs the streaming pattern computes, summed over ``q_pos`` (int64 tensor)."""
    p1 = q_pos.long() + 1  # causal keys of each query
    s = p1.clamp(max=sinks)
    w = p1.clamp(max=window)
    overlap = (s - (p1 - window).clamp(min=0)).clamp(min=0)  # sinks inside the window
    return (s + w - overlap).sum()


def causal_pairs(n: int) -> int:
    return n * (n + 1) // 2


# ----------------------------------------------------------------------------- blocks


def n_blocks(n: int, block: int) -> int:
    return -(-n // block)


def block_pair_counts(n: int, block: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``[nb, nb]`` float: causal pairs inside each (query block, key block) of an ``n``-token
    prefill (the last block may be short)."""
    nb = n_blocks(n, block)
    p1 = torch.arange(1, n + 1, device=device)[:, None]  # keys up to and including each query
    start = torch.arange(nb, device=device)[None, :] * block
    end = (start + block).clamp(max=n)
    per_query = (torch.minimum(p1, end) - start).clamp(min=0).float()  # [n, nb]
    rows = torch.arange(n, device=device) // block
    return torch.zeros(nb, nb, device=device).index_add_(0, rows, per_query)


def a_shape_block_mask(n: int, block: int, density: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """``[nb, nb]``: the first key block (sinks) plus a band of the ``w`` most recent key blocks
    up to the diagonal, ``w`` giving the density nearest ``density`` (computed on the device
    for every ``w`` at once: no host sync)."""
    counts = block_pair_counts(n, block, device)
    nb = counts.shape[0]
    i = torch.arange(nb, device=device)[:, None]
    j = torch.arange(nb, device=device)[None, :]
    w = torch.arange(1, nb + 1, device=device)[:, None, None]
    masks = (j <= i) & ((j == 0) | (i - j < w))  # [w, nb, nb]
    miss = ((masks * counts).sum((1, 2)) - density * counts.sum()).abs()
    return masks[miss.argmin()]  # ties: the smaller w


def block_sparse_mask(q: torch.Tensor, k: torch.Tensor, block: int, density: float, scale: float) -> torch.Tensor:
    """``[b, h, nb, nb]``: per query block, the key blocks of highest pooled score
    ``mean(q_block) . mean(k_block)`` (diagonal block always), taken in score order while
    their causal pairs stay nearest ``density`` of the row's (``q``, ``k``: ``[b, h, n, d]``)."""
    b, h, n, d = q.shape
    nb = n_blocks(n, block)
    pad = nb * block - n
    lengths = torch.full((nb,), float(block), device=q.device)
    lengths[-1] = block - pad

    def pooled(x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.pad(x.float(), (0, 0, 0, pad))
        return x.view(b, h, nb, block, d).sum(3) / lengths[:, None]

    scores = pooled(q) @ pooled(k).transpose(-1, -2) * scale  # [b, h, nb, nb]
    i = torch.arange(nb, device=q.device)[:, None]
    j = torch.arange(nb, device=q.device)[None, :]
    scores = scores.masked_fill(j > i, -INF).masked_fill(j == i, INF)
    counts = block_pair_counts(n, block, q.device)
    return _take_until(scores, counts.expand_as(scores), density * counts.sum(-1)[:, None])


def _take_until(scores: torch.Tensor, cost: torch.Tensor, budget: torch.Tensor | float) -> torch.Tensor:
    """Along the last dim: items in descending score order while taking them brings the total
    cost nearer ``budget`` (an item is taken when the midpoint of its cost lies below the
    budget); +inf items always, -inf items never."""
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices
    c = cost.gather(-1, order)
    s = scores.gather(-1, order)
    before = c.cumsum(-1) - c
    keep_sorted = ((before + c / 2 < budget) | (s == INF)) & (s > -INF)
    return torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)


def block_mask_pairs(block_mask: torch.Tensor, n: int, block: int) -> torch.Tensor:
    """Causal pairs a block mask ``[..., nb, nb]`` computes (summed over everything)."""
    return (block_mask * block_pair_counts(n, block, block_mask.device)).sum()


def block_mask_rows(block_mask: torch.Tensor, start: int, end: int, n: int, block: int) -> torch.Tensor:
    """Token-level ``[..., end - start, n]`` rows of a block mask (causality not applied)."""
    return block_mask_at(block_mask, torch.arange(start, end, device=block_mask.device), n, block)


def block_mask_at(block_mask: torch.Tensor, positions: torch.Tensor, n: int, block: int) -> torch.Tensor:
    """Token-level ``[..., len(positions), n]`` rows of a block mask for the given queries."""
    return block_mask[..., positions // block, :].repeat_interleave(block, dim=-1)[..., :n]


# ----------------------------------------------------------------------------- vertical-slash


def line_scores(probs: torch.Tensor, q_pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Column and diagonal sums of attention probabilities ``probs`` ``[..., m, n]`` of ``m``
    queries at positions ``q_pos`` ``[m]``: ``col[j] = sum_i probs[i, j]`` and
    ``diag[o] = sum_i probs[i, q_pos[i] - o]`` (slash line ``o`` = offset ``p - j``).
    Pairs above the diagonal (``j > q_pos[i]``) count in neither."""
    n = probs.shape[-1]
    j = torch.arange(n, device=probs.device)
    offset = q_pos[:, None].long() - j[None, :]  # [m, n]
    p = probs.float() * (offset >= 0)
    col = p.sum(-2)
    return col, _scatter_diagonal_sums(p, offset)


def _scatter_diagonal_sums(p: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """``diag[o]``: the sum of ``p [..., m, n]`` over the pairs whose ``offset [m, n]`` is ``o``,
    one scatter-add over every pair. (A strided no-scatter sum for a prefill's last queries
    measured slower on an H200: 2.0 against 1.2 ms at 64k, ``minference_stages``.)"""
    idx = offset.clamp(min=0).expand(*p.shape[:-2], -1, -1).flatten(-2)
    return torch.zeros(p.shape[:-2] + p.shape[-1:], dtype=p.dtype, device=p.device).scatter_add(
        -1, idx, p.flatten(-2))


def select_lines(col: torch.Tensor, diag: torch.Tensor, n: int, density: float,
                 corrections: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Vertical columns and slash diagonals of an ``n``-token prefill, ranked together by score,
    taken while the pairs they cover (column ``j``: ``n - j``; diagonal ``o``: ``n - o``) stay
    nearest ``density`` of the causal pairs. Column 0 (the sink) and diagonal 0 (each query's
    own key) are always taken; ``density >= 1`` takes everything. Lines overlap, so the line
    budget is corrected ``corrections`` times by target / covered (per row, on the device)."""
    if density >= 1.0:
        return torch.ones_like(col, dtype=torch.bool), torch.ones_like(diag, dtype=torch.bool)
    col = col.float().clone()
    diag = diag.float().clone()
    col[..., 0] = INF
    diag[..., 0] = INF
    cover = (n - torch.arange(n, device=col.device)).float()
    scores = torch.cat([col, diag], -1)
    cost = torch.cat([cover, cover]).expand_as(scores)
    target = density * causal_pairs(n)
    budget = torch.full((*col.shape[:-1], 1), target, device=col.device)
    for step in range(corrections + 1):
        keep = _take_until(scores, cost, budget)
        if step < corrections:
            covered = vertical_slash_cover(keep[..., :n], keep[..., n:])[..., None]
            budget = budget * target / covered.clamp(min=1.0)
    return keep[..., :n], keep[..., n:]


def estimate_vertical_slash(q: torch.Tensor, k: torch.Tensor, scale: float, last_q: int,
                            density: float) -> tuple[torch.Tensor, torch.Tensor]:
    """MInference's online estimate: attention of the last ``last_q`` queries over all keys
    (``q``, ``k``: ``[b, h, n, d]``, a fresh causal prefill), its column and diagonal sums,
    the top lines within the budget. Returns ``(columns, diagonals)``, bool ``[b, h, n]``."""
    n = q.shape[2]
    m = min(last_q, n)
    q_pos = torch.arange(n - m, n, device=q.device)
    scores = scores_fp32(q[:, :, n - m:], k) * scale
    j = torch.arange(n, device=q.device)
    scores = scores.masked_fill(j[None, :] > q_pos[:, None], -INF)
    col, diag = line_scores(torch.softmax(scores, -1), q_pos)
    return select_lines(col, diag, n, density)


def vertical_slash_rows(cols: torch.Tensor, diags: torch.Tensor, start: int, end: int) -> torch.Tensor:
    """Token-level ``[..., end - start, n]`` rows: key ``j`` of query ``p`` is in when column
    ``j`` or diagonal ``p - j`` is (for ``j <= p``; causality not applied above the diagonal)."""
    return vertical_slash_at(cols, diags, torch.arange(start, end, device=cols.device))


def vertical_slash_at(cols: torch.Tensor, diags: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """``vertical_slash_rows`` for the queries at ``positions`` -> ``[..., len(positions), n]``."""
    n = cols.shape[-1]
    offset = (positions[:, None] - torch.arange(n, device=cols.device)[None, :]).clamp(min=0)
    return cols[..., None, :] | diags[..., offset]


def vertical_slash_cover(cols: torch.Tensor, diags: torch.Tensor) -> torch.Tensor:
    """``[...]``: causal pairs covered by columns and diagonals ``[..., n]`` of an ``n``-token
    prefill, overlaps counted once."""
    n = cols.shape[-1]
    cover = (n - torch.arange(n, device=cols.device)).float()
    both = (cols * diags.float().cumsum(-1).flip(-1)).sum(-1)  # column j meets diagonals o <= n-1-j
    return (cols * cover).sum(-1) + (diags * cover).sum(-1) - both


def vertical_slash_pairs(cols: torch.Tensor, diags: torch.Tensor) -> torch.Tensor:
    """``vertical_slash_cover`` summed over everything."""
    return vertical_slash_cover(cols, diags).sum()


# ----------------------------------------------------------------------------- decode budgets


def budget_tokens(budget: float, unit: str, n_valid: torch.Tensor | int) -> torch.Tensor | int:
    """Keys a decode step may attend: ``ceil(budget * context)`` for a fraction, else the token
    count; never more than the context."""
    if unit == "fraction":
        if isinstance(n_valid, torch.Tensor):
            return torch.ceil(n_valid.double() * budget - 1e-9).long().clamp(min=1)
        return max(1, math.ceil(n_valid * budget - 1e-9))
    if isinstance(n_valid, torch.Tensor):
        return n_valid.long().clamp(max=int(budget))
    return min(int(budget), n_valid)


def topk_keep(scores: torch.Tensor, k: torch.Tensor | int) -> torch.Tensor:
    """Bool, the ``k`` highest entries along the last dim (ties to the lower index; -inf never);
    ``k`` an int or a tensor broadcastable to ``scores[..., :1]``."""
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices
    rank = torch.empty_like(order).scatter_(-1, order, torch.arange(scores.shape[-1], device=scores.device)
                                            .expand_as(order).contiguous())
    return (rank < k) & (scores > -INF)


# ----------------------------------------------------------------------------- quest pages


def page_bounds(k: torch.Tensor, page_size: int, valid: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-page elementwise min and max of the keys ``k`` ``[b, h, n, d]`` over the valid
    tokens (``valid`` ``[b|1, n]``, default all); returns ``(kmin, kmax)`` ``[b, h, P, d]``
    (zeros for pages without a valid token) and ``page_valid`` ``[b|1, P]``."""
    b, h, n, d = k.shape
    pages = n_blocks(n, page_size)
    pad = pages * page_size - n
    if valid is None:
        valid = torch.ones(1, n, dtype=torch.bool, device=k.device)
    valid_p = torch.nn.functional.pad(valid, (0, pad), value=False).view(-1, 1, pages, page_size, 1)
    kp = torch.nn.functional.pad(k.float(), (0, 0, 0, pad)).view(b, h, pages, page_size, d)
    kmin = kp.masked_fill(~valid_p, INF).amin(3)
    kmax = kp.masked_fill(~valid_p, -INF).amax(3)
    page_valid = valid_p.view(-1, pages, page_size).any(-1)
    live = page_valid[:, None, :, None]
    return kmin.where(live, 0.0), kmax.where(live, 0.0), page_valid


def page_upper_bounds(q: torch.Tensor, kmin: torch.Tensor, kmax: torch.Tensor) -> torch.Tensor:
    """Quest's bound on ``q . k`` for every key of a page: ``sum_d max(q_d min_d, q_d max_d)``.
    ``q`` ``[b, hq, d]``; ``kmin``/``kmax`` ``[b, hkv, P, d]`` (query heads grouped on key heads
    as in GQA); returns ``[b, hq, P]``."""
    b, hq, d = q.shape
    hkv = kmin.shape[1]
    qg = q.float().view(b, hkv, hq // hkv, 1, d)
    bound = torch.maximum(qg * kmin[:, :, None], qg * kmax[:, :, None]).sum(-1)
    return bound.reshape(b, hq, -1)


def quest_pages(q: torch.Tensor, k: torch.Tensor, page_size: int, k_pages: torch.Tensor | int,
                current: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """``[b, hq, P]``: per query head, the ``k_pages`` pages of highest upper bound among the
    valid ones, the current page (``current`` ``[b|1]`` page index) always included.
    ``q`` ``[b, hq, d]``, ``k`` ``[b, hkv, n, d]``."""
    kmin, kmax, page_valid = page_bounds(k, page_size, valid)
    scores = page_upper_bounds(q, kmin, kmax)
    pages = scores.shape[-1]
    is_current = torch.arange(pages, device=q.device)[None, :] == current.view(-1, 1)
    scores = scores.masked_fill(~page_valid[:, None, :], -INF).masked_fill(is_current[:, None, :], INF)
    if isinstance(k_pages, torch.Tensor):
        k_pages = k_pages.view(-1, 1, 1)
    return topk_keep(scores, k_pages)


def pages_to_tokens(page_keep: torch.Tensor, page_size: int, n: int) -> torch.Tensor:
    """``[..., P]`` page flags -> ``[..., n]`` token flags."""
    return page_keep.repeat_interleave(page_size, dim=-1)[..., :n]
