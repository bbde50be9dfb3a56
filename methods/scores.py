"""Attention scores ``q @ k^T`` in fp32 from low-precision operands, shared by the attention
families that need explicit probabilities (KV-cache votes, MInference's estimate)."""

from __future__ import annotations

import torch


def scores_fp32(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``[..., m, d] x [..., n, d] -> [..., m, n]`` in fp32. On CUDA with fp16/bf16 operands
    the product comes straight from them (fp32 accumulate and output, no fp32 copy of the
    keys); elsewhere through fp32 copies."""
    *lead, m, d = q.shape
    n = k.shape[-2]
    if q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and k.dtype == q.dtype:
        out = torch.bmm(q.reshape(-1, m, d), k.reshape(-1, n, d).transpose(1, 2), out_dtype=torch.float32)
        return out.view(*lead, m, n)
    return q.float() @ k.float().transpose(-1, -2)
