"""Reference int4 weight-only matmul: the definition the fast path must reproduce.

``y = x @ W^T`` with ``W[n, k] = q[n, k] * scale[n, k // G] + offset[n, k // G]`` (the last
group may be shorter than ``G``), the 4-bit
codes ``q`` packed two per byte along ``k`` (even ``k`` in the low nibble), computed in fp32
and returned in ``x``'s dtype.
"""

from __future__ import annotations

import torch


def unpack_int4(qweight: torch.Tensor) -> torch.Tensor:
    """``[N, K/2]`` uint8 -> ``[N, K]`` uint8 codes."""
    lo = qweight & 0x0F
    hi = qweight >> 4
    return torch.stack((lo, hi), dim=-1).reshape(qweight.shape[0], -1)


def dequantize_int4(qweight: torch.Tensor, scales: torch.Tensor, offsets: torch.Tensor, group: int) -> torch.Tensor:
    """fp32 ``[N, K]`` weight from packed codes and per-group ``[N, ceil(K/G)]`` scale/offset."""
    q = unpack_int4(qweight).float()
    k = q.shape[1]
    return (q * scales.float().repeat_interleave(group, 1)[:, :k]
            + offsets.float().repeat_interleave(group, 1)[:, :k])


def int4_matmul(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, offsets: torch.Tensor,
                group: int) -> torch.Tensor:
    w = dequantize_int4(qweight, scales, offsets, group)
    return (x.reshape(-1, x.shape[-1]).float() @ w.t()).to(x.dtype).reshape(*x.shape[:-1], w.shape[0])
