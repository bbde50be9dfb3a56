"""Dense GEMV for decode: ``y = x @ W^T`` for one row of ``x`` and a row-major ``W [N, K]``
(``nn.Linear``'s layout), streaming the weight as close to the memory bandwidth as the
launch allows.

Why an op of its own: at batch 1 a decode step is the weight stream, and how fast the
baseline streams decides every method's speed-up. The definition is ``ref.py``; the fast
path is ``triton.py`` (one row only; more rows are a GEMM and go to cuBLAS).

``impl``: ``ref``, ``triton``, ``auto`` (triton on CUDA for one row, else ref).
"""

from __future__ import annotations

import torch

from ..dispatch import choose_impl
from .ref import dense_gemv_ref, dense_gemv_swiglu_ref

__all__ = ["OneRowLinear", "dense_gemv", "dense_gemv_ref", "dense_gemv_swiglu_ref", "describe", "one_row_linear"]


def dense_gemv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
               impl: str = "auto") -> torch.Tensor:
    """``x [..., K]``, ``weight [N, K]`` -> ``[..., N]`` in ``x``'s dtype."""
    path = choose_impl(impl, x)
    rows = x.numel() // max(x.shape[-1], 1)
    if path == "ref":
        return dense_gemv_ref(x, weight, bias)
    if rows != 1:
        return torch.nn.functional.linear(x, weight, bias)
    from .triton import dense_gemv_triton

    return dense_gemv_triton(x, weight, bias)


def describe(impl: str, device: str) -> str:
    """What runs for ``impl`` on ``device``, for a record's ``kernels`` field."""
    path = choose_impl(impl, torch.empty(0, device=device))
    if path == "ref":
        return "dense_gemv ref (PyTorch, fp32 accumulation)"
    from .config import describe_defaults

    return f"dense_gemv triton ({describe_defaults()}; one row); cuBLAS for more rows"


class OneRowLinear:
    """The ``sparsebench.linear_kernels`` plugin: ``(x, weight, bias)`` for one row of x
    (the caller checks that), and ``describe()`` for the record. Calls the registered op,
    which ``torch.compile`` keeps in its graph."""

    def __call__(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        from .triton import dense_gemv_op

        return dense_gemv_op(x, weight, bias)

    def normed(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, norm_weight: torch.Tensor,
               eps: float) -> torch.Tensor:
        """The product of the RMS-normalised row (``ref.dense_gemv_ref`` with ``norm_weight``):
        the norm costs no kernel of its own."""
        from .triton import dense_gemv_op

        return dense_gemv_op(x, weight, bias, norm_weight=norm_weight, eps=eps)

    def swiglu(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
               norm_weight: torch.Tensor | None = None, eps: float = 1e-6) -> torch.Tensor:
        """``silu(gate) * up`` of a fused gate/up weight (gate rows first), normalised first
        with ``norm_weight`` (``ref.dense_gemv_swiglu_ref``): the activation costs no kernel."""
        from .triton import dense_gemv_op

        return dense_gemv_op(x, weight, bias, norm_weight=norm_weight, eps=eps, glu=True)

    def describe(self) -> str:
        from .config import describe_defaults

        return f"dense_gemv triton ({describe_defaults()})"


one_row_linear = OneRowLinear()
