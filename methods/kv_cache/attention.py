"""The family's one attention function, registered in transformers' ``AttentionInterface``.

With a ``CompressedCache`` bound to the running forward (``install.py`` binds it), the
keys and values it receives are what the cache layer holds plus the step's new tokens:
every held entry is visible, the new tokens are causal among themselves (bottom-right
alignment). The model-built mask is ignored (the install hook refuses padded masks).
When the layer asks for votes (H2O, SnapKV), the attention probabilities of the step's
last ``n`` queries are computed explicitly in fp32, in query chunks (at most
``CHUNK_ELEMS`` scores at a time), summed over those queries and over the query heads of
each KV head, and handed to the layer; the output then comes from the same probabilities
when every query votes, else from SDPA. Without a compressed cache (``use_cache=False``, or
a plain cache passed by the caller) it is exactly transformers' SDPA attention, mask and all.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

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


def _repeat(x: torch.Tensor, groups: int) -> torch.Tensor:
    return x if groups == 1 else x.repeat_interleave(groups, dim=1)


def _visible(q: int, n: int, rows: torch.Tensor) -> torch.Tensor:
    """Bool ``[len(rows), n]``: query row ``r`` (of ``q`` new tokens) sees key ``j`` iff
    ``j <= n - q + r`` (all held entries, causal among the new ones)."""
    cols = torch.arange(n, device=rows.device)
    return cols.view(1, -1) <= (n - q + rows).view(-1, 1)


def probabilities(query: torch.Tensor, key: torch.Tensor, scale: float, rows: torch.Tensor) -> torch.Tensor:
    """Softmax attention (fp32) of the query rows ``rows`` of ``query`` ``[b, hq, q, d]`` over
    ``key`` ``[b, hq, n, d]`` (key heads already repeated): ``[b, hq, len(rows), n]``."""
    q, n = query.shape[-2], key.shape[-2]
    logits = (query[:, :, rows].float() @ key.float().transpose(-1, -2)) * scale
    logits = logits.masked_fill(~_visible(q, n, rows), float("-inf"))
    return logits.softmax(dim=-1)


def attend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float,
           n_votes: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Attention output ``[b, hq, q, d]`` of ``query`` over ``key``/``value`` ``[b, hkv, n, d]``
    and, when ``n_votes > 0``, the votes ``[b, hkv, n]``: the probabilities of the last
    ``n_votes`` queries summed over them and over each KV head's query heads."""
    b, hq, q, d = query.shape
    hkv, n = key.shape[1], key.shape[-2]
    groups = hq // hkv
    k, v = _repeat(key, groups), _repeat(value, groups)
    every = n_votes >= q
    out = None if every else _sdpa(query, k, v, scale)
    votes = None
    if n_votes > 0:
        votes = torch.zeros(b, hkv, n, dtype=torch.float32, device=query.device)
        parts = []
        vf = v.float() if every else None
        step = max(1, CHUNK_ELEMS // max(1, b * hq * n))
        for r0 in range(q - min(n_votes, q), q, step):
            rows = torch.arange(r0, min(q, r0 + step), device=query.device)
            p = probabilities(query, k, scale, rows)
            votes += p.view(b, hkv, groups, len(rows), n).sum(dim=(2, 3))
            if every:
                parts.append((p @ vf).to(query.dtype))
        if every:
            out = torch.cat(parts, dim=2)
    return out, votes


def _sdpa(query: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    q, n = query.shape[-2], k.shape[-2]
    if q == 1:
        return F.scaled_dot_product_attention(query, k, v, scale=scale)
    if q == n:
        return F.scaled_dot_product_attention(query, k, v, is_causal=True, scale=scale)
    mask = _visible(q, n, torch.arange(q, device=query.device))
    return F.scaled_dot_product_attention(query, k, v, attn_mask=mask, scale=scale)


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
