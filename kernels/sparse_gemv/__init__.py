"""Thresholded sparse GEMV: ``y = W[:, keep] @ x[keep]`` with ``keep = |x| > threshold``.

The public entry point of the op (definition in ``ref.py``, fast paths in ``triton.py`` and
``cuda.py`` / ``sparse_gemv.cu``).
The weight is passed transposed, ``w_t [K, N]`` contiguous (``linear.weight.t().contiguous()``),
so the fast path reads one contiguous row per surviving input.

``impl``: ``ref`` (the definition), ``triton`` (the GEMV kernels for up to ``MAX_ROWS`` rows,
configured per shape class in ``config.py``; more rows, as in a prefill, are a GEMM: the
inputs are masked and multiplied densely by cuBLAS, where skipping single columns cannot
pay), ``cuda`` (``sparse_gemv.cu`` compiled with NVRTC, bf16/fp16, N a multiple of 8; the
same masked GEMM for more rows), ``auto`` (on CUDA the fast path ``fast_impl()`` names:
cuda unless ``SPARSEBENCH_SPARSE_GEMV_IMPL=triton``, and triton where the CUDA kernel
refuses a shape or NVRTC is missing; else ref).
"""

from __future__ import annotations

import os

import torch

from ..dispatch import choose_impl
from .ref import keep_mask, sparse_gemv_ref

MAX_ROWS = 8
FAST = ("triton", "cuda")  # the fast paths impl= may name
IMPL_ENV = "SPARSEBENCH_SPARSE_GEMV_IMPL"


def fast_impl() -> str:
    """The fast path ``auto`` takes on a GPU (and the methods' ``kernel: fast``): ``cuda``
    (1.49-1.64x over cuBLAS at 50% on the H200 against Triton's 1.11-1.39x; Triton where
    NVRTC is missing or the shape is refused) unless ``SPARSEBENCH_SPARSE_GEMV_IMPL=triton``."""
    value = os.environ.get(IMPL_ENV, "").strip() or "cuda"
    if value not in FAST:
        raise ValueError(f"{IMPL_ENV}={value!r}: expected one of {', '.join(FAST)}")
    return value


def fast_order() -> tuple[str, ...]:
    """The fast paths in the order they are tried: the CUDA kernel falls back to Triton."""
    return ("cuda", "triton") if fast_impl() == "cuda" else ("triton",)


__all__ = ["FAST", "IMPL_ENV", "MAX_ROWS", "describe", "fast_impl", "fast_order", "keep_mask", "masked_matmul", "sparse_gemv", "sparse_gemv_ref"]


def masked_matmul(x: torch.Tensor, w_t: torch.Tensor, threshold: float | torch.Tensor,
                  bias: torch.Tensor | None = None) -> torch.Tensor:
    """Many rows: zero the dropped inputs, then one dense GEMM in the input dtype."""
    xm = torch.where(keep_mask(x, threshold), x, torch.zeros((), dtype=x.dtype, device=x.device))
    y = xm @ w_t
    return y + bias if bias is not None else y


def sparse_gemv(x: torch.Tensor, w_t: torch.Tensor, threshold: float | torch.Tensor,
                impl: str = "auto", bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x [..., K]``, ``w_t [K, N]``, ``threshold`` a float or a ``[K]`` tensor -> ``[..., N]``."""
    path = _path(impl, x)
    if path == "ref":
        return sparse_gemv_ref(x, w_t, threshold, bias)
    rows = x.numel() // max(x.shape[-1], 1)
    if rows > MAX_ROWS:
        return masked_matmul(x, w_t, threshold, bias)
    if path == "cuda":
        from . import cuda

        why = cuda.why_not(rows, w_t.shape[1], w_t.shape[0], x.dtype, x.device)
        if not why:
            return cuda.sparse_gemv_cuda_op(x, w_t, threshold, bias)
        if impl == "cuda":
            raise ValueError(f"impl='cuda': {why}")
    from .triton import sparse_gemv_op

    return sparse_gemv_op(x, w_t, threshold, bias)


def _path(impl: str, x: torch.Tensor) -> str:
    """``auto``: ref off the GPU (or triton under the interpreter), ``fast_impl()`` on it."""
    if impl == "auto":  # the named fast path first, where it can run (cuda needs NVRTC)
        return choose_impl(impl, x, fast_order())
    return choose_impl(impl, x, FAST)


def describe(impl: str, device: str) -> str:
    """What runs for ``impl`` on ``device``, for a record's ``kernels`` field."""
    path = _path(impl, torch.empty(0, device=device))
    if path == "ref":
        return "sparse_gemv ref (PyTorch, fp32 accumulation)"
    if path == "cuda":
        from .config import SHAPE_CLASSES
        from .cuda import default_config

        examples = {"narrow": (1024, 4096), "square": (4096, 4096), "wide": (14336, 4096), "deep": (4096, 14336)}
        per_class = "; ".join(f"{c}: {default_config(*examples[c]).label()}" for c in SHAPE_CLASSES)
        return (f"sparse_gemv cuda (sparse_gemv.cu via NVRTC; {per_class}; s=0: K split over a cluster "
                f"from the SM count; <= {MAX_ROWS} rows); masked cuBLAS GEMM for more rows")
    from .config import SHAPE_CLASSES, default_config_for_class

    per_class = "; ".join(f"{c}: {default_config_for_class(c).label()}" for c in SHAPE_CLASSES)
    return f"sparse_gemv triton ({per_class}; <= {MAX_ROWS} rows); masked cuBLAS GEMM for more rows"
