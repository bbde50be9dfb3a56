"""The definition of the dense GEMV: ``y = x @ W^T (+ bias)`` accumulated in fp32, rounded
to ``x``'s dtype. ``W`` is ``[N, K]`` row-major, as ``nn.Linear`` stores it."""

from __future__ import annotations

import torch


def dense_gemv_ref(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    n, k = weight.shape
    if x.shape[-1] != k:
        raise ValueError(f"x has {x.shape[-1]} inputs but the weight is [{n}, {k}]")
    y = x.reshape(-1, k).float() @ weight.float().t()
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype).reshape(*x.shape[:-1], n)
