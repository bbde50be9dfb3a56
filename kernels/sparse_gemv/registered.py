"""One registered-op wrapper for every sparse GEMV fast path.

``torch.compile`` keeps a registered op whole instead of tracing its plan cache and workspace
allocation (graph breaks, and a step that could not be captured in a CUDA graph). The Triton
and CUDA kernels take the same arguments, so both are wrapped here the same way.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

SparseGemv = Callable[..., torch.Tensor]


def register(name: str, kernel: SparseGemv) -> SparseGemv:
    """``kernel(x, w_t, threshold, bias)`` as ``torch.ops.sparsebench.<name>``; the returned
    function takes a float or a ``[K]`` tensor threshold like the kernel itself."""

    def run(x: torch.Tensor, w_t: torch.Tensor, threshold: torch.Tensor | None, t_scalar: float,
            bias: torch.Tensor | None) -> torch.Tensor:
        return kernel(x, w_t, threshold if threshold is not None else t_scalar, bias)

    op = torch.library.custom_op(f"sparsebench::{name}", run, mutates_args=())

    @op.register_fake
    def _(x, w_t, threshold, t_scalar, bias):
        return x.new_empty((*x.shape[:-1], w_t.shape[1]))

    def call(x: torch.Tensor, w_t: torch.Tensor, threshold: float | torch.Tensor,
             bias: torch.Tensor | None = None) -> torch.Tensor:
        if isinstance(threshold, torch.Tensor):
            return op(x, w_t, threshold, 0.0, bias)
        return op(x, w_t, None, float(threshold), bias)

    call.__doc__ = f"``{kernel.__name__}`` as a registered op (``torch.ops.sparsebench.{name}``)."
    return call
