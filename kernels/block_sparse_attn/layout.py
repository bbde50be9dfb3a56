"""The block layout of block-sparse causal attention (pure PyTorch, no triton import).

A sequence of ``L`` tokens is cut into query blocks of ``block_m`` rows and key blocks of
``block_n`` columns (the last ones may be partial): ``nq = cdiv(L, block_m)``,
``nk = cdiv(L, block_n)``. A pattern says which (query block, key block) pairs are live,
per batch element and query head, in one of two forms:

* a boolean ``block_mask [B, Hq, nq, nk]`` (the reference's form);
* the kernel's lists (CSR style, one row per query block): ``block_index [B, Hq, nq, max_k]``
  int32, the live key blocks of each query block in ascending order, and
  ``block_count [B, Hq, nq]`` int32, how many of the row are used. Entries past the count
  are padding (``-1`` from ``mask_to_index``) and are never read.

Leading dimensions broadcast (``[1, Hq, ...]``: one pattern for every batch element).
``mask_to_index`` drops key blocks no query of the block can see (causal), so every listed
block is reachable; the kernel relies on that and on the ascending order. Patterns for tests
and benchmarks: ``random_block_mask`` (a target density of the causal block pairs, the
diagonal and the first ``sinks`` key blocks always live) and ``vertical_slash_mask``
(MInference: the key blocks holding given columns and given diagonals). Patterns for the
sparse-attention methods, built on the device without a host synchronisation:
``streaming_block_mask`` / ``streaming_block_index`` (the sink blocks plus the band of key
blocks a sliding window touches; the kernel's ``sinks``/``window`` arguments mask the
tokens inside them) and ``vertical_slash_block_mask`` (the key blocks touched by chosen
columns and diagonals given as boolean ``[..., L]`` flags, exact at block granularity).
"""

from __future__ import annotations

import torch

from ..launch import cdiv


def num_blocks(L: int, block_m: int, block_n: int | None = None) -> tuple[int, int]:
    """(query blocks, key blocks) of a length-``L`` sequence."""
    return cdiv(L, block_m), cdiv(L, block_n or block_m)


def reachable(nq: int, nk: int, block_m: int, block_n: int | None = None,
              device: torch.device | str | None = None) -> torch.Tensor:
    """``[nq, nk]`` bool: key block ``kb`` holds a key at or before the last row of query
    block ``qb`` (``kb * block_n <= (qb + 1) * block_m - 1``), i.e. the causal block pairs."""
    bn = block_n or block_m
    qb = torch.arange(nq, device=device)[:, None]
    kb = torch.arange(nk, device=device)[None, :]
    return kb * bn <= (qb + 1) * block_m - 1


def diagonal(nq: int, nk: int, block_m: int, block_n: int | None = None,
             device: torch.device | str | None = None) -> torch.Tensor:
    """``[nq, nk]`` bool: the key blocks that hold some row's own position (the diagonal band;
    with square blocks exactly ``kb == qb``). Including them gives every row a live key."""
    bn = block_n or block_m
    qb = torch.arange(nq, device=device)[:, None]
    kb = torch.arange(nk, device=device)[None, :]
    first = (qb * block_m) // bn
    last = ((qb + 1) * block_m - 1) // bn
    return (kb >= first) & (kb <= last)


def causal_block_mask(L: int, block_m: int, block_n: int | None = None,
                      device: torch.device | str | None = None) -> torch.Tensor:
    """The dense causal pattern ``[1, 1, nq, nk]`` (density 1.0)."""
    nq, nk = num_blocks(L, block_m, block_n)
    return reachable(nq, nk, block_m, block_n, device)[None, None]


def mask_to_index(block_mask: torch.Tensor, block_m: int | None = None, block_n: int | None = None,
                  max_count: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``block_mask [..., nq, nk]`` -> ``(block_index [..., nq, max_count], block_count [..., nq])``.

    The mask is first ANDed with the causal block pairs (``reachable``; square blocks when
    the sizes are left out). Indices ascend; padding is ``-1``. ``max_count`` defaults to the
    longest row (one host synchronisation); pass it (e.g. ``nk``) to avoid that."""
    nq, nk = block_mask.shape[-2:]
    bm = block_m or 1
    bn = block_n or bm
    live = block_mask.bool() & reachable(nq, nk, bm, bn, block_mask.device)
    count = live.sum(-1, dtype=torch.int32)
    if max_count is None:
        max_count = int(count.max()) if count.numel() else 0
    max_count = max(1, min(int(max_count), nk))
    # each live block goes to slot (live blocks before it): ascending, O(nq * nk), no sort;
    # dead blocks and any past max_count go to a spare slot that is cut off
    cols = torch.arange(nk, device=block_mask.device, dtype=torch.int32).expand_as(live)
    slot = live.cumsum(-1, dtype=torch.int32) - 1
    slot = torch.where(live & (slot < max_count), slot, max_count).long()
    index = torch.full((*live.shape[:-1], max_count + 1), -1, dtype=torch.int32, device=block_mask.device)
    index.scatter_(-1, slot, torch.where(live, cols, -1))
    return index[..., :max_count].contiguous(), count.contiguous()


def index_to_mask(block_index: torch.Tensor, block_count: torch.Tensor, nk: int) -> torch.Tensor:
    """The boolean mask ``[..., nq, nk]`` of the first ``block_count`` entries of each row."""
    valid = torch.arange(block_index.shape[-1], device=block_index.device) < block_count[..., None].long()
    idx = block_index.long()
    valid &= (idx >= 0) & (idx < nk)
    idx = torch.where(valid, idx, torch.full_like(idx, nk))
    out = torch.zeros((*idx.shape[:-1], nk + 1), dtype=torch.bool, device=idx.device)
    out.scatter_(-1, idx, True)
    return out[..., :nk]


def causal_pairs(L: int, block_m: int, block_n: int | None = None) -> list[int]:
    """Per query block, how many key blocks are causally reachable from its last valid row."""
    bn = block_n or block_m
    nq = cdiv(L, block_m)
    return [(min((qb + 1) * block_m, L) - 1) // bn + 1 for qb in range(nq)]


def density(block_count: torch.Tensor, L: int, block_m: int, block_n: int | None = None) -> float:
    """Fraction of the causal (query block, key block) pairs that are computed:
    ``sum(block_count) / (heads x sum over query blocks of the reachable key blocks)``."""
    pairs = causal_pairs(L, block_m, block_n)
    rows = block_count.numel() // max(1, block_count.shape[-1])
    total = rows * sum(pairs)
    return float(block_count.sum()) / total if total else 0.0


def random_block_mask(B: int, H: int, L: int, block_m: int, block_n: int | None = None, *,
                      density: float = 0.1, sinks: int = 1, seed: int = 0,
                      device: torch.device | str | None = None) -> torch.Tensor:
    """``[B, H, nq, nk]`` bool: per (batch, head) a random pattern holding the fraction
    ``density`` of the causal block pairs (at least the forced ones): the diagonal band
    and the first ``sinks`` key blocks are always live, the rest drawn uniformly among the
    other causal pairs. Deterministic for a ``seed`` (drawn on the CPU)."""
    bn = block_n or block_m
    nq, nk = num_blocks(L, block_m, bn)
    causal = reachable(nq, nk, block_m, bn)
    forced = (diagonal(nq, nk, block_m, bn) | (torch.arange(nk)[None, :] < sinks)) & causal
    total = int(causal.sum())
    want = min(total, max(int(forced.sum()), round(density * total)))
    g = torch.Generator().manual_seed(seed)
    score = torch.rand((B, H, nq, nk), generator=g)
    score = torch.where(forced, torch.full_like(score, -1.0), score)  # always taken
    score = torch.where(causal, score, torch.full_like(score, 2.0))  # never taken
    flat = score.reshape(B, H, nq * nk)
    picked = flat.topk(want, dim=-1, largest=False).indices
    mask = torch.zeros_like(flat, dtype=torch.bool).scatter_(-1, picked, True)
    return mask.reshape(B, H, nq, nk).to(device)


def vertical_slash_mask(L: int, block_m: int, block_n: int | None, vertical: torch.Tensor,
                        slash: torch.Tensor) -> torch.Tensor:
    """MInference's vertical-slash pattern at block granularity: ``vertical [..., nv]`` key
    positions (columns every query sees), ``slash [..., ns]`` offsets ``i - j >= 0`` (diagonals).
    Returns ``[..., nq, nk]`` bool with every key block that holds a vertical column or a
    slash token of the query block (a superset of the token pattern), ANDed with causal,
    plus the diagonal band (offset 0) so that no row is empty."""
    bn = block_n or block_m
    nq, nk = num_blocks(L, block_m, bn)
    dev = vertical.device
    lead = vertical.shape[:-1]
    out = torch.zeros((*lead, nq, nk + 1), dtype=torch.bool, device=dev)
    vb = (vertical.long().clamp(0, L - 1) // bn)[..., None, :].expand(*lead, nq, vertical.shape[-1])
    out.scatter_(-1, vb, True)
    # a slash at offset o touches keys [qb*bm - o, (qb+1)*bm - 1 - o] of query block qb
    qb = torch.arange(nq, device=dev)
    o = slash.long().clamp(0, L - 1)[..., None, :]  # [..., 1, ns]
    lo = (qb[:, None] * block_m - o)  # [..., nq, ns]
    hi = ((qb[:, None] + 1) * block_m - 1 - o)
    span = cdiv(block_m, bn) + 1
    for t in range(span):
        kb = torch.div(lo, bn, rounding_mode="floor") + t
        ok = (kb * bn <= hi) & (hi >= 0)
        kb = torch.where(ok & (kb >= 0), kb, torch.full_like(kb, nk)).clamp(max=nk)
        out.scatter_(-1, kb, True)
    mask = out[..., :nk]
    return (mask | diagonal(nq, nk, block_m, bn, dev)) & reachable(nq, nk, block_m, bn, dev)


def streaming_block_mask(L: int, block_m: int, block_n: int | None = None, *, sinks: int, window: int,
                         device: torch.device | str | None = None) -> torch.Tensor:
    """``[1, 1, nq, nk]`` bool: the key blocks holding a sink (``j < sinks``) or a key that the
    window of some row of the query block reaches (``0 <= i - j < window``), i.e. every block
    with a pair that ``block_sparse_attention(..., sinks=sinks, window=window)`` keeps; the
    tokens inside the boundary blocks are masked by the kernel, not here."""
    bn = block_n or block_m
    nq, nk = num_blocks(L, block_m, bn)
    qb = torch.arange(nq, device=device)[:, None]
    kb = torch.arange(nk, device=device)[None, :]
    first_row = qb * block_m
    band = kb * bn + bn - 1 > first_row - window  # the block's last key is within the window of the first row
    sink = kb * bn < sinks
    return ((band | sink) & reachable(nq, nk, block_m, bn, device))[None, None]


def streaming_max_count(L: int, block_m: int, block_n: int | None = None, *, sinks: int, window: int) -> int:
    """An upper bound on the blocks per query block of ``streaming_block_mask`` (no host sync)."""
    bn = block_n or block_m
    nk = cdiv(L, bn)
    return max(1, min(nk, cdiv(min(sinks, L), bn) + cdiv(block_m + window - 1, bn) + 1))


def streaming_block_index(L: int, block_m: int, block_n: int | None = None, *, sinks: int, window: int,
                          device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernel's lists of ``streaming_block_mask`` (``[1, 1, nq, max_k]``, ``[1, 1, nq]``)."""
    bn = block_n or block_m
    mask = streaming_block_mask(L, block_m, bn, sinks=sinks, window=window, device=device)
    return mask_to_index(mask, block_m, bn, max_count=streaming_max_count(L, block_m, bn, sinks=sinks, window=window))


def vertical_slash_block_mask(columns: torch.Tensor, diagonals: torch.Tensor, block_m: int,
                              block_n: int | None = None) -> torch.Tensor:
    """``columns``/``diagonals [..., L]`` bool (key column ``j`` chosen; diagonal ``o = i - j``
    chosen) -> ``[..., nq, nk]`` bool: exactly the (query block, key block) pairs holding a
    causal pair ``(i, j)`` of a chosen column or diagonal (the token pattern's blocks; a
    superset of its pairs). Prefix sums over the flags, on the device, no host sync. A row
    that no chosen line reaches has no live block (include diagonal 0 to avoid that)."""
    bn = block_n or block_m
    L = columns.shape[-1]
    nq, nk = num_blocks(L, block_m, bn)
    dev = columns.device
    zero = torch.zeros((*columns.shape[:-1], 1), dtype=torch.int32, device=dev)
    col_sum = torch.cat([zero, columns.cumsum(-1, dtype=torch.int32)], -1)  # [..., L + 1]
    diag_sum = torch.cat([zero, diagonals.cumsum(-1, dtype=torch.int32)], -1)
    qb = torch.arange(nq, device=dev)[:, None]
    kb = torch.arange(nk, device=dev)[None, :]
    i0, i1 = qb * block_m, torch.clamp((qb + 1) * block_m, max=L) - 1  # rows of the query block
    j0, j1 = kb * bn, torch.clamp((kb + 1) * bn, max=L) - 1  # keys of the key block
    # columns j0 .. min(j1, i1): [j0, hi) in prefix-sum terms
    c_hi = (torch.minimum(j1, i1) + 1).clamp(min=j0)
    # offsets i - j over the block pair: max(0, i0 - j1) .. i1 - j0 (empty when i1 < j0)
    d_lo = (i0 - j1).clamp(min=0)
    d_hi = (i1 - j0 + 1).clamp(min=0).clamp(max=L)
    d_lo = torch.minimum(d_lo, d_hi)

    def count(prefix: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        flat = lambda t: t.expand(nq, nk).reshape(-1)  # noqa: E731
        lead = prefix.shape[:-1]
        hi_v = prefix.gather(-1, flat(hi).expand(*lead, -1))
        lo_v = prefix.gather(-1, flat(lo).expand(*lead, -1))
        return (hi_v - lo_v).view(*lead, nq, nk)

    live = (count(col_sum, j0.expand(nq, nk), c_hi) > 0) | (count(diag_sum, d_lo, d_hi) > 0)
    return live & reachable(nq, nk, block_m, bn, dev)
