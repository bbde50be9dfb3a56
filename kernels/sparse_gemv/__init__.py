"""Thresholded sparse GEMV: ``y = W[:, keep] @ x[keep]`` with ``keep = |x| > threshold``.

The public entry point of the op (definition in ``ref.py``, fast path in ``triton.py``).
The weight is passed transposed, ``w_t [K, N]`` contiguous (``linear.weight.t().contiguous()``),
so the fast path reads one contiguous row per surviving input.

``impl``: ``ref`` (the definition), ``triton`` (the GEMV kernels for up to ``MAX_ROWS`` rows,
configured per shape class in ``config.py``; more rows, as in a prefill, are a GEMM: the
inputs are masked and multiplied densely by cuBLAS, where skipping single columns cannot
pay), ``auto`` (triton on CUDA, else ref).
"""

from __future__ import annotations

import torch

from ..dispatch import choose_impl
from .ref import keep_mask, sparse_gemv_ref

MAX_ROWS = 8

__all__ = ["MAX_ROWS", "describe", "keep_mask", "masked_matmul", "sparse_gemv", "sparse_gemv_ref"]


def masked_matmul(x: torch.Tensor, w_t: torch.Tensor, threshold: float | torch.Tensor,
                  bias: torch.Tensor | None = None) -> torch.Tensor:
    """Many rows: zero the dropped inputs, then one dense GEMM in the input dtype."""
    xm = torch.where(keep_mask(x, threshold), x, torch.zeros((), dtype=x.dtype, device=x.device))
    y = xm @ w_t
    return y + bias if bias is not None else y


def sparse_gemv(x: torch.Tensor, w_t: torch.Tensor, threshold: float | torch.Tensor,
                impl: str = "auto", bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x [..., K]``, ``w_t [K, N]``, ``threshold`` a float or a ``[K]`` tensor -> ``[..., N]``."""
    path = choose_impl(impl, x)
    if path == "ref":
        return sparse_gemv_ref(x, w_t, threshold, bias)
    if x.numel() // max(x.shape[-1], 1) > MAX_ROWS:
        return masked_matmul(x, w_t, threshold, bias)
    from .triton import sparse_gemv_op

    return sparse_gemv_op(x, w_t, threshold, bias)


def describe(impl: str, device: str) -> str:
    """What runs for ``impl`` on ``device``, for a record's ``kernels`` field."""
    path = choose_impl(impl, torch.empty(0, device=device))
    if path == "ref":
        return "sparse_gemv ref (PyTorch, fp32 accumulation)"
    from .config import SHAPE_CLASSES, default_config_for_class

    per_class = "; ".join(f"{c}: {default_config_for_class(c).label()}" for c in SHAPE_CLASSES)
    return f"sparse_gemv triton ({per_class}; <= {MAX_ROWS} rows); masked cuBLAS GEMM for more rows"
