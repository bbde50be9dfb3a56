"""The definition of block-sparse causal attention (pure PyTorch, fp32 accumulation).

For query row ``i`` and key ``j`` of one (batch, query head):

    live(i, j) = block_mask[i // block_m, j // block_n]  and  j <= i
                 and (window is None  or  j < sinks  or  i - j < window)
    out[i]     = softmax_j(scale * q[i] . k[j] over live j) @ v       (fp32)

with ``k``/``v`` of the query head's KV head (GQA: query head ``h`` reads KV head
``h // (Hq // Hkv)``) and ``scale = 1/sqrt(D)`` by default. A row with no live key
(possible only when its diagonal block is left out) is zero. The output has q's dtype.
With every causal block live this is ordinary causal attention (SDPA ``is_causal=True``).
``sinks``/``window`` (StreamingLLM at token granularity): with a ``window``, key ``j`` stays
visible to query ``i`` only when it is one of the first ``sinks`` keys or one of the last
``window`` keys up to and including ``i``; ``window >= L`` changes nothing.
"""

from __future__ import annotations

import math

import torch

from .layout import index_to_mask, num_blocks

# scores held at once by the reference (elements): it works in chunks of query rows
_CHUNK_ELEMENTS = 1 << 26


def check_window(sinks: int, window: int | None) -> None:
    """Refuse a window < 1 or negative sinks (``ValueError`` naming the value)."""
    if window is not None and (isinstance(window, bool) or int(window) != window or window < 1):
        raise ValueError(f"window must be an integer >= 1 (keys up to and including the query) or None, got {window!r}")
    if isinstance(sinks, bool) or int(sinks) != sinks or sinks < 0:
        raise ValueError(f"sinks must be an integer >= 0, got {sinks!r}")


def expand_mask(block_index: torch.Tensor, block_count: torch.Tensor | None, B: int, H: int, L: int,
                block_m: int, block_n: int) -> torch.Tensor:
    """The block pattern as a ``[B, H, nq, nk]`` boolean mask (from a mask or from lists)."""
    nq, nk = num_blocks(L, block_m, block_n)
    if block_count is None:
        mask = block_index.bool()
    else:
        mask = index_to_mask(block_index, block_count, nk)
    if mask.shape[-2:] != (nq, nk):
        raise ValueError(f"pattern has {tuple(mask.shape[-2:])} blocks, L={L} with blocks "
                         f"{block_m}x{block_n} needs ({nq}, {nk})")
    return mask.broadcast_to(B, H, nq, nk)


def block_sparse_attention_ref(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_index: torch.Tensor,
                               block_count: torch.Tensor | None = None, *, block_m: int, block_n: int | None = None,
                               scale: float | None = None, rows: tuple[int, int] | None = None,
                               sinks: int = 0, window: int | None = None) -> torch.Tensor:
    """``q [B, Hq, L, D]``, ``k``/``v [B, Hkv, L, D]``; the pattern as lists (``block_index``,
    ``block_count``) or as a boolean ``block_mask`` (``block_count=None``). ``rows=(r0, r1)``
    computes only query rows ``r0..r1-1`` (a check of a long sequence) -> ``[B, Hq, r1-r0, D]``.
    ``sinks``/``window``: the token-level sink + sliding-window restriction (module docstring)."""
    check_window(sinks, window)
    bn = block_n or block_m
    B, H, L, D = q.shape
    hkv = k.shape[1]
    if k.shape != (B, hkv, L, D) or v.shape != k.shape or H % hkv:
        raise ValueError(f"q {tuple(q.shape)} and k/v {tuple(k.shape)}/{tuple(v.shape)} do not match (GQA needs Hq % Hkv == 0)")
    group = H // hkv
    scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
    mask = expand_mask(block_index, block_count, B, H, L, block_m, bn)
    r0, r1 = rows or (0, L)
    out = torch.zeros((B, H, r1 - r0, D), dtype=torch.float32, device=q.device)
    dev = q.device
    for hk in range(hkv):
        heads = slice(hk * group, (hk + 1) * group)
        kf = k[:, hk].float()
        vf = v[:, hk].float()
        step = max(1, _CHUNK_ELEMENTS // max(1, B * group * r1))
        for c0 in range(r0, r1, step):
            c1 = min(c0 + step, r1)
            qi = torch.arange(c0, c1, device=dev)
            kj = torch.arange(0, c1, device=dev)
            tok = mask[:, heads][:, :, qi // block_m][..., kj // bn] & (kj[None, :] <= qi[:, None])
            if window is not None:
                tok = tok & ((kj[None, :] < sinks) | (qi[:, None] - kj[None, :] < window))
            s = torch.einsum("bgid,bjd->bgij", q[:, heads, c0:c1].float(), kf[:, :c1]) * scale
            s = s.masked_fill(~tok, float("-inf"))
            p = torch.softmax(s, dim=-1)
            p = torch.where(tok.any(-1, keepdim=True), p, torch.zeros((), device=dev))
            out[:, heads, c0 - r0:c1 - r0] = torch.einsum("bgij,bjd->bgid", p, vf[:, :c1])
    return out.to(q.dtype)
