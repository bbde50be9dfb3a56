"""How far a model's own output moves under another GEMM library.

A check that compares two ways of computing the same forward (a CUDA graph replay against
the eager call, fused projections against separate ones) expects last-bit differences to
stay small. A model with thresholds on random weights (activation sparsity on a shape
model) amplifies them until the outputs decorrelate, so such a check can neither pass nor
fail there. The measure of that: rerun the reference computation with cuBLAS and cuBLASLt
swapped and see how far it moves on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def rel_err(got: Any, ref: Any) -> float:
    """Relative L2 distance of ``got`` from ``ref``, in fp32."""
    return float((got.float() - ref.float()).norm() / ref.float().norm().clamp_min(1e-12))


def other_blas_spread(call: Callable[[], Any], ref: Any, prepare: Callable[[], None] = lambda: None) -> float:
    """Relative distance of ``call()`` from ``ref`` with cuBLAS and cuBLASLt swapped (``prepare``
    restores any state ``call`` changes); 0 where this torch cannot switch (a CPU build):
    callers then stay strict."""
    import torch

    before = torch.backends.cuda.preferred_blas_library()
    other = "cublas" if before == torch._C._BlasBackend.Cublaslt else "cublaslt"
    try:
        torch.backends.cuda.preferred_blas_library(other)
    except Exception:  # a build without the switch
        return 0.0
    try:
        prepare()
        return rel_err(call(), ref)
    finally:
        torch.backends.cuda.preferred_blas_library(before)
