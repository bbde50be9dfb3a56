"""The heavy attention calls, one small function per pattern: the seam where kernels plug in.

Each function has a kernel-like signature (tensors and ints only). ``masked_attention``,
the definition of them all, computes ``softmax(q k^T * scale)`` over the explicit mask in
float32, a chunk of query rows at a time, and returns the output in the query's dtype. It
computes every score (a reference, not a speed-up); a kernel computes only the pattern.

``block_sparse_prefill`` calls the op ``sparsebench.kernels.block_sparse_attn`` when it
imports (``impl``: its ``ref``, ``auto`` or ``triton``), else the local reference.
``streaming_prefill`` (a fresh causal prefill of the sinks + window pattern) and MInference's
vertical-slash heads (``vertical_slash_blocks``, then ``block_sparse_prefill``) use the same
kernel when the run's kernel choice gives ``triton``; their CPU/``ref`` paths stay the masked
definitions below. The decode patterns run the local reference (``kernels.topk_decode_attn``
takes a paged KV layout; the model's cache is contiguous, so it is not wired yet).

Shapes: ``q`` ``[b, hq, nq, d]``; ``k``, ``v`` ``[b, hkv, n, d]`` with ``hkv`` dividing
``hq`` (GQA: query head ``i`` reads key head ``i // (hq / hkv)``); outputs ``[b, hq, nq, d]``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from sparsebench.kernels.dispatch import choose_impl

from . import patterns as P

#: score elements computed at once by the reference (bounds its memory: 64 MiB of fp32)
CHUNK_ELEMENTS = 1 << 24
#: query/key block edge of the streaming kernel path (its tiles divide it)
STREAM_BLOCK = 128
#: on the kernel path, a block mask holding this fraction of the causal blocks or more runs as
#: dense causal SDPA: on an H200 the kernel's dense rate is 0.8x cuDNN's at 128-token blocks
#: (``results/kernels/20261201T144921-block_sparse_attn-*``) and below that at 64, so above
#: this fraction dense is the faster way to compute (a superset of) the listed pairs
DENSE_FROM = 0.8

Rows = Callable[[int, int], torch.Tensor]


def expand_kv(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``[b, hkv, n, d]`` -> ``[b, heads, n, d]`` (each key head repeated for its query heads)."""
    b, hkv, n, d = x.shape
    if hkv == heads:
        return x
    return x[:, :, None].expand(b, hkv, heads // hkv, n, d).reshape(b, heads, n, d)


def masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rows: Rows, scale: float) -> torch.Tensor:
    """The definition: ``rows(start, end)`` gives the bool mask of query rows ``[start, end)``
    (broadcastable to ``[b, hq, end - start, n]``, True = computed); every row must hold at
    least one True (each pattern keeps the query's own key)."""
    b, hq, nq, _ = q.shape
    n = k.shape[2]
    kf = expand_kv(k, hq).float()
    vf = expand_kv(v, hq).float()
    out = torch.empty(b, hq, nq, v.shape[-1], dtype=q.dtype, device=q.device)
    step = max(1, CHUNK_ELEMENTS // max(1, b * hq * n))
    for s in range(0, nq, step):
        e = min(nq, s + step)
        scores = (q[:, :, s:e].float() @ kf.transpose(-1, -2)) * scale
        scores = scores.masked_fill(~rows(s, e), float("-inf"))
        out[:, :, s:e] = (torch.softmax(scores, -1) @ vf).to(q.dtype)
    return out


def _causal(start: int, end: int, n: int, device: torch.device) -> torch.Tensor:
    """Rows ``[start, end)`` of the top-left causal mask of ``n`` keys."""
    return torch.arange(n, device=device)[None, :] <= torch.arange(start, end, device=device)[:, None]


def streaming_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_pos: torch.Tensor,
                        sinks: int, window: int, scale: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Sinks + sliding window, prefill or decode: the query at ``q_pos`` (``[b|1, nq]``, cache
    indices) attends keys ``j <= p`` with ``j < sinks`` or ``p - j < window``; ``mask``
    (``[b|1, 1, nq, n]`` bool, the model's) is applied on top when given."""
    n = k.shape[2]

    def rows(s: int, e: int) -> torch.Tensor:
        allowed = P.streaming_allowed(q_pos[:, s:e], n, sinks, window)[:, None]
        return allowed if mask is None else allowed & mask[:, :, s:e]

    return masked_attention(q, k, v, rows, scale)


def block_sparse_kernel() -> Any:
    """The ``block_sparse_attn`` kernel package, or None when it is missing or broken."""
    try:
        from sparsebench.kernels import block_sparse_attn
    except Exception:  # a kernel that does not import must not take the method down
        return None
    return block_sparse_attn


def describe_block_sparse(impl: str, device: str, head_dim: int, block_size: int) -> str:
    kernel = block_sparse_kernel()
    if kernel is None:
        return "block_sparse_prefill: local masked reference (kernels.block_sparse_attn unavailable)"
    return kernel.describe(impl, device, head_dim=head_dim, block_m=block_size)


def causal_block_fraction(block_mask: torch.Tensor) -> float:
    """The fraction of causal (lower-triangle) blocks a square block mask ``[.., nb, nb]`` holds,
    over all its heads (one host sync)."""
    nb = block_mask.shape[-1]
    lower = torch.ones(nb, nb, dtype=torch.bool, device=block_mask.device).tril()
    live = (block_mask & lower).sum(dtype=torch.float64)
    return float(live / (lower.sum() * (block_mask.numel() // (nb * nb))))


def runs_dense(block_mask: torch.Tensor, impl: str, q: torch.Tensor) -> bool:
    """Whether ``block_sparse_prefill`` runs this mask as dense causal SDPA: on the kernel path,
    when it holds ``DENSE_FROM`` or more of the causal blocks."""
    kernel = block_sparse_kernel()
    if kernel is None or choose_impl(impl, q) == "ref":
        return False
    return causal_block_fraction(block_mask) >= DENSE_FROM


def block_sparse_prefill(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask: torch.Tensor,
                         block_size: int, scale: float, impl: str = "ref", dense: bool | None = None) -> torch.Tensor:
    """Causal prefill (``nq == n``) over the ``block_size`` blocks set in ``block_mask``
    (``[b|1, hq|1, nb, nb]`` bool, query block x key block); causal inside diagonal blocks.
    The kernel's lists are made with room for every key block. On the kernel path a mask that
    holds ``DENSE_FROM`` of the causal blocks or more runs as dense causal SDPA instead (all
    blocks: the same result; fewer: a superset of the pairs, as blocks are of the pattern's),
    at the fastest exact backend's rate. ``dense``: that decision, when the caller made it
    (``runs_dense``), else made here."""
    kernel = block_sparse_kernel()
    if kernel is not None:
        if choose_impl(impl, q) == "ref":
            return kernel.block_sparse_attention(q, k, v, block_mask, None, block_m=block_size, scale=scale,
                                                 impl="ref")
        if runs_dense(block_mask, impl, q) if dense is None else dense:
            return torch.nn.functional.scaled_dot_product_attention(
                q, k, v, is_causal=True, scale=scale, enable_gqa=q.shape[1] != k.shape[1])
        idx, cnt = kernel.mask_to_index(block_mask, block_size, block_size, max_count=block_mask.shape[-1])
        return kernel.block_sparse_attention(q.contiguous(), k.contiguous(), v.contiguous(), idx, cnt,
                                             block_m=block_size, scale=scale, impl=impl)
    n = k.shape[2]

    def rows(s: int, e: int) -> torch.Tensor:
        return P.block_mask_rows(block_mask, s, e, n, block_size) & _causal(s, e, n, q.device)

    return masked_attention(q, k, v, rows, scale)


@functools.lru_cache(maxsize=16)
def _streaming_lists(n: int, sinks: int, window: int, block: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    kernel = block_sparse_kernel()
    return kernel.streaming_block_index(n, block, block, sinks=sinks, window=window, device=device)


def streaming_prefill(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sinks: int, window: int, scale: float,
                      impl: str = "triton", block: int | None = None) -> torch.Tensor:
    """A fresh causal prefill (``nq == n``) of the sinks + window pattern through the
    block-sparse kernel: the sink blocks and the band of blocks the window touches (the lists
    are made once per length), the token-exact edges masked inside the kernel
    (``sinks``/``window``). Same pairs as ``streaming_attention`` with ``q_pos = 0..n-1``.
    ``block``: default ``STREAM_BLOCK``."""
    kernel = block_sparse_kernel()
    if kernel is None:
        raise RuntimeError("streaming_prefill needs sparsebench.kernels.block_sparse_attn")
    block = block or STREAM_BLOCK
    idx, cnt = _streaming_lists(k.shape[2], sinks, window, block, str(q.device))
    return kernel.block_sparse_attention(q.contiguous(), k.contiguous(), v.contiguous(), idx, cnt, block_m=block,
                                         scale=scale, impl=impl, sinks=sinks, window=window)


def vertical_slash_blocks(columns: torch.Tensor, diagonals: torch.Tensor, block_size: int) -> torch.Tensor:
    """``[b, h, nb, nb]`` bool: the blocks that hold a causal pair of a chosen column or diagonal
    (``columns``/``diagonals`` ``[b, h, n]``; a superset of the token pattern's pairs)."""
    kernel = block_sparse_kernel()
    if kernel is None:
        raise RuntimeError("vertical_slash_blocks needs sparsebench.kernels.block_sparse_attn")
    return kernel.vertical_slash_block_mask(columns, diagonals, block_size)


def kernel_unsupported(head_dim: int) -> str | None:
    """Why the block-sparse kernel cannot serve this head dim (or that it is missing), else None."""
    kernel = block_sparse_kernel()
    if kernel is None:
        return "kernels.block_sparse_attn unavailable"
    return kernel.unsupported_reason(head_dim)


def vertical_slash_prefill(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, columns: torch.Tensor,
                           diagonals: torch.Tensor, scale: float) -> torch.Tensor:
    """Causal prefill (``nq == n``) over the key columns ``j`` and diagonals ``o = p - j`` set in
    ``columns`` / ``diagonals`` (``[b, hq, n]`` bool)."""
    n = k.shape[2]

    def rows(s: int, e: int) -> torch.Tensor:
        return P.vertical_slash_rows(columns, diagonals, s, e) & _causal(s, e, n, q.device)

    return masked_attention(q, k, v, rows, scale)


def sparse_decode(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keep: torch.Tensor,
                  scale: float) -> torch.Tensor:
    """One query per sequence (``nq == 1``) attending the keys set in ``keep`` ``[b, hq, n]``
    (the selection already restricted to valid cache entries)."""
    return masked_attention(q, k, v, lambda s, e: keep[:, :, None, :], scale)


def page_decode(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, page_keep: torch.Tensor, page_size: int,
                scale: float, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Top-k page decode: the query attends the valid keys (``valid`` ``[b|1, n]``) of the
    pages set in ``page_keep`` ``[b, hq, P]`` of ``page_size`` tokens each."""
    keep = P.pages_to_tokens(page_keep, page_size, k.shape[2])
    if valid is not None:
        keep = keep & valid[:, None, :]
    return sparse_decode(q, k, v, keep, scale)
