"""The family's one attention function, registered in transformers' ``AttentionInterface``.

With a ``CompressedCache`` bound to the running forward (``install.py`` binds it), the
keys and values it receives are what the cache layer holds plus the step's new tokens:
every held entry is visible, the new tokens are causal among themselves (bottom-right
alignment). The model-built mask is ignored (the install hook refuses padded masks).
When the layer asks for votes (H2O, SnapKV), the attention probabilities of the step's
last ``n`` queries are computed explicitly in fp32, in query chunks (at most
``CHUNK_ELEMS`` scores at a time), summed over those queries and over the query heads of
each KV head, and handed to the layer; the output then comes from the same probabilities
when every query votes, else from SDPA. GQA keys and values are never repeated per query
head: SDPA reads them in place, and each key head's query heads share one matmul. Without a compressed cache (``use_cache=False``, or
a plain cache passed by the caller) it is exactly transformers' SDPA attention, mask and all.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

from ..scores import scores_fp32
from .cache import CompressedCache, KVLayer

NAME = "sparsebench_kv"
#: attribute set on every attention module: the install's ``Binding`` (``.cache``)
BINDING = "_sparsebench_kv_binding"
#: scores materialized at once when probabilities are needed (64 MiB in fp32)
CHUNK_ELEMS = 1 << 24


def register() -> None:
    """Register the attention function, and SDPA's mask builder under the same name (used
    only on the plain path: the compressed path ignores the mask). Idempotent."""
    AttentionInterface.register(NAME, kv_attention)
    AttentionMaskInterface.register(NAME, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])


def bound_layer(module: Any) -> KVLayer | None:
    binding = getattr(module, BINDING, None)
    cache = None if binding is None else binding.cache
    if not isinstance(cache, CompressedCache):
        return None
    return cache.layer(module.layer_idx)


def _visible(q: int, n: int, rows: torch.Tensor) -> torch.Tensor:
    """Bool ``[len(rows), n]``: query row ``r`` (of ``q`` new tokens) sees key ``j`` iff
    ``j <= n - q + r`` (all held entries, causal among the new ones)."""
    cols = torch.arange(n, device=rows.device)
    return cols.view(1, -1) <= (n - q + rows).view(-1, 1)


def probabilities(query: torch.Tensor, key: torch.Tensor, scale: float, rows: torch.Tensor) -> torch.Tensor:
    """Softmax attention (fp32) of the query rows ``rows`` of ``query`` ``[b, hq, q, d]`` over
    ``key`` ``[b, hkv, n, d]`` (GQA: query head ``i`` reads key head ``i // (hq / hkv)``), as
    ``[b, hkv, groups, len(rows), n]``. Each key head's query heads go through one matmul
    with it, so the keys are read once and never repeated."""
    b, hq, q, d = query.shape
    hkv, n = key.shape[1], key.shape[-2]
    g, r = hq // hkv, len(rows)
    qg = query[:, :, rows].reshape(b * hkv, g * r, d)
    logits = scores_fp32(qg, key.reshape(b * hkv, n, d)).view(b, hkv, g, r, n) * scale
    logits = logits.masked_fill(~_visible(q, n, rows), float("-inf"))
    return logits.softmax(dim=-1)


def _weighted_values(p: torch.Tensor, value: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``p [b, hkv, g, r, n]`` times ``value [b, hkv, n, d]`` -> ``[b, hkv * g, r, d]`` in ``dtype``.
    Low-precision values on CUDA take ``p`` rounded to their dtype (fp32 accumulate), as flash
    attention's second matmul does; elsewhere the product is fp32."""
    b, hkv, g, r, n = p.shape
    d = value.shape[-1]
    v3 = value.reshape(b * hkv, n, d)
    if value.is_cuda and value.dtype in (torch.float16, torch.bfloat16):
        out = torch.bmm(p.reshape(b * hkv, g * r, n).to(value.dtype), v3)
    else:
        out = torch.bmm(p.reshape(b * hkv, g * r, n), v3.float())
    return out.view(b, hkv * g, r, d).to(dtype)


def attend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float,
           n_votes: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Attention output ``[b, hq, q, d]`` of ``query`` over ``key``/``value`` ``[b, hkv, n, d]``
    and, when ``n_votes > 0``, the votes ``[b, hkv, n]``: the probabilities of the last
    ``n_votes`` queries summed over them and over each KV head's query heads."""
    b, hq, q, d = query.shape
    hkv, n = key.shape[1], key.shape[-2]
    every = n_votes >= q
    out = None if every else _sdpa(query, key, value, scale)
    votes = None
    if n_votes > 0:
        votes = torch.zeros(b, hkv, n, dtype=torch.float32, device=query.device)
        parts = []
        step = max(1, CHUNK_ELEMS // max(1, b * hq * n))
        for r0 in range(q - min(n_votes, q), q, step):
            rows = torch.arange(r0, min(q, r0 + step), device=query.device)
            p = probabilities(query, key, scale, rows)
            votes += p.sum(dim=(2, 3))
            if every:
                parts.append(_weighted_values(p, value, query.dtype))
        if every:
            out = torch.cat(parts, dim=2)
    return out, votes


def _sdpa(query: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Exact SDPA; GQA keys are read in place (``enable_gqa``), not repeated per query head."""
    q, n = query.shape[-2], k.shape[-2]
    gqa = query.shape[1] != k.shape[1]
    if q == 1:
        return F.scaled_dot_product_attention(query, k, v, scale=scale, enable_gqa=gqa)
    if q == n:
        return F.scaled_dot_product_attention(query, k, v, is_causal=True, scale=scale, enable_gqa=gqa)
    mask = _visible(q, n, torch.arange(q, device=query.device))
    return F.scaled_dot_product_attention(query, k, v, attn_mask=mask, scale=scale, enable_gqa=gqa)


def kv_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                 attention_mask: torch.Tensor | None, scaling: float | None = None,
                 dropout: float = 0.0, **kwargs: Any) -> tuple[torch.Tensor, None]:
    layer = bound_layer(module)
    if layer is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling,
                                      dropout=dropout, **kwargs)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    out, votes = attend(query, key, value, scale, layer.votes_needed(query.shape[-2]))
    layer.after_attention(votes)
    return out.transpose(1, 2).contiguous(), None
