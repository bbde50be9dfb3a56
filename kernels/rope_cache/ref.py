"""The definition of one decode step's rotary embedding and KV-cache write.

For one new token per sequence: q and k rotated by (cos, sin) in the half-split convention
of Llama (``x * cos + rotate_half(x) * sin``, ``rotate_half(x) = [-x2, x1]``), computed in
fp32 and rounded once to the input dtype; the rotated k and the plain v written into slot
``position`` of ``[B, Hkv, L, D]`` caches; the rotated q returned as ``[B, Hq, 1, D]``.
"""

from __future__ import annotations

import torch


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``x [..., D]`` rotated in fp32 (cos and sin broadcast against it)."""
    half = x.shape[-1] // 2
    xf = x.float()
    rot = torch.cat((-xf[..., half:], xf[..., :half]), dim=-1)
    return xf * cos.float() + rot * sin.float()


def rope_cache_ref(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                   k_cache: torch.Tensor, v_cache: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    """``q [B, Hq*D]``, ``k``/``v [B, Hkv*D]``, ``cos``/``sin [B, D]``, caches ``[B, Hkv, L, D]``,
    ``position``: a one-element integer tensor (the slot all sequences write). Writes the
    caches in place; returns the rotated q, ``[B, Hq, 1, D]``."""
    B, hkv, _, D = k_cache.shape
    c = cos.reshape(B, 1, D)
    s = sin.reshape(B, 1, D)
    q_rot = rotate(q.reshape(B, -1, D), c, s).to(q.dtype)
    k_rot = rotate(k.reshape(B, hkv, D), c, s).to(k_cache.dtype)
    slot = position.reshape(1).long()
    k_cache.index_copy_(2, slot, k_rot.unsqueeze(2))
    v_cache.index_copy_(2, slot, v.reshape(B, hkv, 1, D).to(v_cache.dtype))
    return q_rot.unsqueeze(2)
