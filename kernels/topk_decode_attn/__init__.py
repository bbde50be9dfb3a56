"""Decode attention over a paged KV cache, restricted to the top-k pages (Quest).

The public entry points of the op (definitions in ``ref.py``, fast paths in ``triton.py``,
the layout and the per-page metadata in ``paging.py``):

* ``page_metadata(k_pages, page_table, seq_lens)`` -> ``(kmin, kmax)`` per page and KV head;
* ``select_pages(q, kmin, kmax, page_table, seq_lens, k, page_size=...)`` -> ``[B, S, k]``
  logical pages (Quest upper bound, top-k, the last page always kept);
* ``topk_decode_attention(q, k_pages, v_pages, page_table, seq_lens, selected)`` -> ``[B, Hq, D]``
  (``selected=None``: every page, the dense paged decode; also ``paged_decode_attention``).

``impl``: ``ref``, ``triton`` (page scores in a Triton kernel + ``torch.topk``; the split-K
decode kernel), ``auto`` (triton on CUDA, else ref).
"""

from __future__ import annotations

import torch

from ..dispatch import choose_impl
from .config import DecodeConfig, default_config
from .paging import all_pages, budget_pages, page_metadata, paged_from_dense, pages_used
from .ref import page_scores_ref, select_pages_ref, topk_decode_attention_ref, topk_from_scores

__all__ = [
    "DecodeConfig", "all_pages", "budget_pages", "default_config", "describe", "page_metadata", "page_scores",
    "page_scores_ref", "paged_decode_attention", "paged_from_dense", "pages_used", "select_pages",
    "select_pages_ref", "topk_decode_attention", "topk_decode_attention_ref", "topk_from_scores",
]


def page_scores(q: torch.Tensor, kmin: torch.Tensor, kmax: torch.Tensor, page_table: torch.Tensor,
                seq_lens: torch.Tensor, *, page_size: int, per: str = "head", impl: str = "auto") -> torch.Tensor:
    """Quest upper bounds ``[B, Hq, max_pages]`` (``per="kv"``: summed per KV group, ``[B, Hkv, max_pages]``)."""
    if choose_impl(impl, q) == "ref":
        return page_scores_ref(q, kmin, kmax, page_table, seq_lens, page_size, per)
    from .triton import page_scores_triton

    return page_scores_triton(q, kmin, kmax, page_table, seq_lens, page_size, per)


def select_pages(q: torch.Tensor, kmin: torch.Tensor, kmax: torch.Tensor, page_table: torch.Tensor,
                 seq_lens: torch.Tensor, k: int, *, page_size: int, per: str = "head",
                 impl: str = "auto") -> torch.Tensor:
    """The ``k`` pages with the highest Quest bound per query head (``per="kv"``: per KV
    head), always including each sequence's last page: ``[B, Hq or Hkv, k]`` int32 logical
    page numbers ascending, ``-1`` padding. No host synchronisation."""
    return topk_from_scores(page_scores(q, kmin, kmax, page_table, seq_lens, page_size=page_size, per=per,
                                        impl=impl), k)


def topk_decode_attention(q: torch.Tensor, k_pages: torch.Tensor, v_pages: torch.Tensor, page_table: torch.Tensor,
                          seq_lens: torch.Tensor, selected_pages: torch.Tensor | None = None, *,
                          scale: float | None = None, impl: str = "auto", out: torch.Tensor | None = None,
                          config: DecodeConfig | None = None, positions: bool = False) -> torch.Tensor:
    """One new token per sequence ``q [B, Hq, D]`` attending the tokens of ``selected_pages``
    (``[B, S, k]`` logical pages with S = Hq, Hkv or 1; ``-1`` skipped; None = all pages).
    ``seq_lens``: ``[B]`` integers, or ``[B, L]`` bool rows whose count of True is the length
    (an attention mask's last row); with ``positions``, ``[B]`` positions of the new tokens
    (length = position + 1). The Triton kernel reads either form itself."""
    if choose_impl(impl, q) == "ref":
        if positions:
            seq_lens = seq_lens.to(torch.int32) + 1
        elif seq_lens.dtype == torch.bool:
            seq_lens = seq_lens.sum(-1, dtype=torch.int32)
        return topk_decode_attention_ref(q, k_pages, v_pages, page_table, seq_lens, selected_pages, scale)
    from .triton import topk_decode_attention_triton

    return topk_decode_attention_triton(q, k_pages, v_pages, page_table, seq_lens, selected_pages, scale=scale,
                                        out=out, config=config, positions=positions)


def paged_decode_attention(q: torch.Tensor, k_pages: torch.Tensor, v_pages: torch.Tensor, page_table: torch.Tensor,
                           seq_lens: torch.Tensor, *, scale: float | None = None, impl: str = "auto",
                           out: torch.Tensor | None = None, config: DecodeConfig | None = None) -> torch.Tensor:
    """Dense paged decode attention (every page): the baseline of the top-k path."""
    return topk_decode_attention(q, k_pages, v_pages, page_table, seq_lens, None, scale=scale, impl=impl, out=out,
                                 config=config)


def describe(impl: str, device: str) -> str:
    path = choose_impl(impl, torch.empty(0, device=device))
    if path == "ref":
        return "topk_decode_attn ref (PyTorch gather, fp32 softmax)"
    return f"topk_decode_attn triton (Quest scores kernel + torch.topk; split-K decode {default_config().label()})"
