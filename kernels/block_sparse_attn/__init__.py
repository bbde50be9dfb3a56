"""Block-sparse causal prefill attention: each query block attends only its listed key blocks.

The public entry point of the op (definition in ``ref.py``, fast path in ``triton.py``, the
pattern helpers in ``layout.py``). Layout: ``q [B, Hq, L, D]``, ``k``/``v [B, Hkv, L, D]``
(GQA: ``Hq`` a multiple of ``Hkv``); the pattern per (batch, query head, query block of
``block_m`` rows) is a list of key blocks of ``block_n`` keys, ``block_index [B, Hq, nq, max_k]``
int32 ascending with ``block_count [B, Hq, nq]`` (``mask_to_index`` makes them from a
boolean block mask; leading dims broadcast). The diagonal block is causally masked inside.

``sinks``/``window`` (optional) restrict the listed blocks at token level, StreamingLLM's
pattern: key ``j`` is visible to query ``i`` iff ``j <= i`` and (``j < sinks`` or
``i - j < window``); ``streaming_block_index`` lists the blocks that pattern touches.

``impl``: ``ref`` (the definition), ``triton`` (the FlashAttention-2 style kernel that loops
over the listed key blocks only), ``auto`` (triton on CUDA, else ref).
"""

from __future__ import annotations

import torch

from ..dispatch import choose_impl
from .config import BsaConfig, default_config
from .layout import (
    causal_block_mask,
    density,
    diagonal,
    index_to_mask,
    mask_to_index,
    num_blocks,
    random_block_mask,
    reachable,
    streaming_block_index,
    streaming_block_mask,
    streaming_max_count,
    vertical_slash_block_mask,
    vertical_slash_mask,
)
from .ref import block_sparse_attention_ref, check_window

__all__ = [
    "BsaConfig", "block_sparse_attention", "block_sparse_attention_ref", "causal_block_mask", "default_config",
    "density", "describe", "diagonal", "index_to_mask", "mask_to_index", "num_blocks", "random_block_mask",
    "reachable", "streaming_block_index", "streaming_block_mask", "streaming_max_count", "unsupported_reason",
    "vertical_slash_block_mask", "vertical_slash_mask",
]

DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def unsupported_reason(head_dim: int, dtype: torch.dtype | None = None) -> str | None:
    """Why the Triton kernel cannot take this head dim / dtype, or None when it can."""
    if head_dim < 16 or head_dim > 256 or head_dim & (head_dim - 1):
        return f"the Triton kernel takes head dims 16..256, powers of two; got {head_dim}"
    if dtype is not None and dtype not in DTYPES:
        return f"the Triton kernel takes fp16/bf16/fp32, got {dtype}"
    return None


def block_sparse_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_index: torch.Tensor,
                           block_count: torch.Tensor | None = None, *, block_m: int = 128,
                           block_n: int | None = None, scale: float | None = None, impl: str = "auto",
                           out: torch.Tensor | None = None, config: BsaConfig | None = None,
                           sinks: int = 0, window: int | None = None) -> torch.Tensor:
    """Causal attention of ``q`` over the key blocks listed per query block -> ``[B, Hq, L, D]``.

    ``block_index``/``block_count``: the lists (``mask_to_index``); or pass a boolean block mask
    ``[B, Hq, nq, nk]`` as ``block_index`` with ``block_count=None`` (converted here, one host
    synchronisation). ``block_n`` defaults to ``block_m``. ``sinks``/``window``: token-level
    sink + sliding-window mask inside the listed blocks (``window=None``: none; ``sinks``
    then has no effect). ``out``/``config``: triton only."""
    check_window(sinks, window)
    bn = block_n or block_m
    path = choose_impl(impl, q)
    if path == "ref":
        return block_sparse_attention_ref(q, k, v, block_index, block_count, block_m=block_m, block_n=bn,
                                          scale=scale, sinks=sinks, window=window)
    if block_count is None:
        block_index, block_count = mask_to_index(block_index, block_m, bn)
    from .triton import block_sparse_attention_triton

    return block_sparse_attention_triton(q, k, v, block_index, block_count, block_m=block_m, block_n=bn,
                                         scale=scale, out=out, config=config, sinks=sinks, window=window)


def describe(impl: str, device: str, head_dim: int = 128, block_m: int = 128, block_n: int | None = None) -> str:
    """What runs for ``impl`` on ``device``, for a record's ``kernels`` field."""
    path = choose_impl(impl, torch.empty(0, device=device))
    if path == "ref":
        return "block_sparse_attn ref (PyTorch, fp32, token mask)"
    from .triton import launch_config

    cfg = launch_config(head_dim, block_m, block_n or block_m, device=torch.device(device))
    return f"block_sparse_attn triton (blocks {block_m}x{block_n or block_m}; {cfg.label()})"
