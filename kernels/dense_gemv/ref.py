"""The definition of the dense GEMV: ``y = x @ W^T (+ bias)`` accumulated in fp32, rounded
to ``x``'s dtype. ``W`` is ``[N, K]`` row-major, as ``nn.Linear`` stores it.

With ``norm_weight`` (``g``, ``[K]``) x is RMS-normalised first, in fp32 and not rounded in
between: ``y = W (g * x / sqrt(mean(x^2) + eps)) + b`` (the RMSNorm of Llama-family models
folded into the product that reads its output).

``dense_gemv_swiglu_ref``: for a fused gate/up weight (gate rows first), ``silu(gate) * up``
rounded as the unfused model rounds it: both products to x's dtype, SiLU in fp32 then
rounded, the product of the two rounded."""

from __future__ import annotations

import torch


def dense_gemv_ref(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                   norm_weight: torch.Tensor | None = None, eps: float = 1e-6) -> torch.Tensor:
    n, k = weight.shape
    if x.shape[-1] != k:
        raise ValueError(f"x has {x.shape[-1]} inputs but the weight is [{n}, {k}]")
    xf = x.reshape(-1, k).float()
    if norm_weight is not None:
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * norm_weight.float()
    y = xf @ weight.float().t()
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype).reshape(*x.shape[:-1], n)


def dense_gemv_swiglu_ref(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                          norm_weight: torch.Tensor | None = None, eps: float = 1e-6) -> torch.Tensor:
    if weight.shape[0] % 2:
        raise ValueError(f"a fused gate/up weight has an even number of rows, got {weight.shape[0]}")
    gate, up = dense_gemv_ref(x, weight, bias, norm_weight, eps).chunk(2, dim=-1)
    act = torch.nn.functional.silu(gate.float()).to(x.dtype)
    return (act.float() * up.float()).to(x.dtype)
