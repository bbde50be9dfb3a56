"""Decode attention read straight out of a contiguous ``[B, Hkv, L, D]`` KV cache (the layout
of transformers' ``StaticCache``), by the paged split-K decode kernel, with no copy.

The cache viewed as pages: page ``p`` of sequence ``b`` and head ``h`` starts at element
``((b * Hkv + h) * L + p * ps) * D``, which is physical page ``b * (Hkv * L / ps) + p`` of an
``as_strided`` view with strides ``(ps * D, L * D, D, 1)``. Only tokens below each sequence's
length are read, so the unfilled end of a static cache never is. GQA heads read their
group's keys in place (no per-query-head copy, which SDPA with a mask makes).

``static_decode_attention`` is also registered as ``torch.ops.sparsebench.static_decode_attention``
(opaque to ``torch.compile``); ``static_decode`` is the plugin object the suite's decode path
finds through the ``sparsebench.attention_kernels`` entry point.
"""

from __future__ import annotations

import os

import torch

from .config import ENV, DecodeConfig

PAGE_SIZES = (32, 16, 8, 4, 2, 1)
# Over a static cache of a few hundred to a few thousand slots the long-cache default (64 keys
# a step, two steps a split, then a combine launch) leaves the kernel latency-bound: one step
# a split, and the row's last split merging the partials (no combine launch). Timed on an H200
# (benchmarks/static_decode_attention.py, 8B heads, 32 caches back to back), us per call:
# 544 slots 7.28 (with a combine launch 8.73, long-cache default 10.05, SDPA with a mask 27.8);
# 2080 slots 13.2 (17.1, 17.6, 59.2); 8224 slots 27.0 (45.8, 43.7, 189).
# ``SPARSEBENCH_DECODE_CONFIG`` overrides it.
STATIC_DEFAULT = DecodeConfig(block_n=64, num_warps=8, num_stages=3, min_steps=1, fused_merge=1)


def static_config() -> DecodeConfig:
    """The config the static-cache path launches with (the environment's, else ``STATIC_DEFAULT``)."""
    spec = os.environ.get(ENV, "").strip()
    return DecodeConfig.parse(spec) if spec else STATIC_DEFAULT


def page_size_for(length: int) -> int:
    """The largest page size in ``PAGE_SIZES`` that divides the cache length."""
    return next(p for p in PAGE_SIZES if length % p == 0)


def cache_pages(cache: torch.Tensor, page_size: int) -> torch.Tensor:
    """``[B, Hkv, L, D]`` contiguous -> the strided page view ``[P, Hkv, page_size, D]``."""
    if not cache.is_contiguous():
        raise ValueError("the KV cache must be contiguous [B, Hkv, L, D]")
    B, hkv, L, D = cache.shape
    if L % page_size:
        raise ValueError(f"page size {page_size} does not divide the cache length {L}")
    n_pages = L // page_size
    physical = (B - 1) * hkv * n_pages + n_pages
    return cache.as_strided((physical, hkv, page_size, D), (page_size * D, L * D, D, 1))


_TABLES: dict[tuple, torch.Tensor] = {}


def page_table(B: int, hkv: int, n_pages: int, device: torch.device) -> torch.Tensor:
    """``[B, n_pages]`` int32: logical page ``p`` of sequence ``b`` -> ``b * hkv * n_pages + p``
    (kept per shape: a captured CUDA graph keeps pointing at it)."""
    key = (B, hkv, n_pages, device)
    if key not in _TABLES:
        b = torch.arange(B, device=device, dtype=torch.int32)[:, None] * (hkv * n_pages)
        _TABLES[key] = (b + torch.arange(n_pages, device=device, dtype=torch.int32)[None, :]).contiguous()
    return _TABLES[key]


def static_decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, seq_lens: torch.Tensor,
                            scale: float | None = None, impl: str = "auto",
                            config: DecodeConfig | None = None, positions: bool = False) -> torch.Tensor:
    """``q [B, Hq, 1, D]`` (one new token per sequence) over the first ``seq_lens[b]`` tokens of
    ``k``/``v [B, Hkv, L, D]`` -> ``[B, Hq, D]``. ``seq_lens`` may also be ``[B, L]`` bool (an
    attention mask's last row, one allowed prefix per sequence): the kernel counts it; with
    ``positions``, ``[B]`` positions of the new tokens (any stride: a column of position ids)."""
    from . import topk_decode_attention

    B, hq, one, D = q.shape
    if one != 1:
        raise ValueError(f"decode attention takes one query token per sequence, got {one}")
    if k.shape != v.shape or k.shape[0] != B or k.shape[-1] != D or hq % k.shape[1]:
        raise ValueError(f"q {tuple(q.shape)} does not match the cache {tuple(k.shape)} / {tuple(v.shape)}")
    ps = page_size_for(k.shape[2])
    table = page_table(B, k.shape[1], k.shape[2] // ps, k.device)
    return topk_decode_attention(q[:, :, 0], cache_pages(k, ps), cache_pages(v, ps), table, seq_lens, None,
                                 scale=scale, impl=impl, config=config or static_config(), positions=positions)


@torch.library.custom_op("sparsebench::static_decode_attention", mutates_args=())
def _static_decode_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, seq_lens: torch.Tensor,
                      scale: float, positions: bool) -> torch.Tensor:
    return static_decode_attention(q, k, v, seq_lens, scale, positions=positions)


@_static_decode_op.register_fake
def _(q, k, v, seq_lens, scale, positions):
    return q.new_empty((q.shape[0], q.shape[1], q.shape[3]))


class StaticDecode:
    """The ``sparsebench.attention_kernels`` plugin: ``(q, k, v, seq_lens, scale, positions=False)``
    -> ``[B, Hq, D]`` for one query token over a contiguous cache, and ``describe()`` for the record."""

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, seq_lens: torch.Tensor,
                 scale: float, positions: bool = False) -> torch.Tensor:
        return _static_decode_op(q, k, v, seq_lens, float(scale), positions)

    def describe(self) -> str:
        return f"topk_decode_attn split-K paged kernel over the static cache, every page ({static_config().label()})"


static_decode = StaticDecode()
