"""2:4 semi-structured sparse linear layers: ``ref`` (definition) and ``cusparselt`` (fast path).

``linear(x, weight, impl=...)`` is the functional form (it compresses ``weight`` on every
call: for tests); ``SemiStructuredLinear.from_linear(lin)`` replaces a 2:4-pruned
``nn.Linear`` once and keeps only the compressed weight.
"""

from __future__ import annotations

import torch
from torch import nn

from ..dispatch import choose_impl
from . import cusparselt
from .ref import check_2to4, is_2to4, semi_structured_linear

FAST = ("cusparselt",)

__all__ = ["SemiStructuredLinear", "SemiStructuredUnsupported", "is_2to4", "linear"]


class SemiStructuredUnsupported(ValueError):
    """The layer cannot run through the 2:4 kernel (pattern, dtype, shape or device)."""


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, impl: str = "auto") -> torch.Tensor:
    """``x @ weight^T (+ bias)`` for a 2:4 ``weight``."""
    which = choose_impl(impl, x, FAST)
    if which == "ref":
        return semi_structured_linear(x, weight, bias)
    check_2to4(weight)
    reason = cusparselt.unsupported_reason(weight)
    if reason:
        raise SemiStructuredUnsupported(reason)
    y = cusparselt.matmul(x.reshape(-1, x.shape[-1]), cusparselt.compress(weight))
    if bias is not None:
        y = y + bias
    return y.reshape(*x.shape[:-1], weight.shape[0])


class SemiStructuredLinear(nn.Module):
    """A 2:4 linear layer stored compressed for cuSPARSELt (values + metadata, ~56% of dense).

    The configuration (B layout, fused transpose, alg id, split-K) is looked up per
    (shape, M bucket); an unseen M bucket is tuned on first use unless a CUDA graph is being
    captured (then the default fused-transpose alg 0 runs, and is what the graph keeps).
    """

    def __init__(self, packed: torch.Tensor, in_features: int, out_features: int,
                 bias: torch.Tensor | None, dtype: torch.dtype, zeros: int, autotune: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight_dtype = dtype
        self.autotune = autotune
        self._zeros = zeros
        self.register_buffer("packed", packed)
        self.register_buffer("bias", bias)
        self.tuning_log: list[str] = []

    @classmethod
    def from_linear(cls, lin: nn.Linear, autotune: bool = True) -> SemiStructuredLinear:
        w = lin.weight.detach()
        reason = cusparselt.unsupported_reason(w)
        if reason:
            raise SemiStructuredUnsupported(reason)
        try:
            check_2to4(w)
        except ValueError as exc:
            raise SemiStructuredUnsupported(str(exc)) from None
        zeros = int((w == 0).sum())
        bias = None if lin.bias is None else lin.bias.detach().clone()
        return cls(cusparselt.compress(w), lin.in_features, lin.out_features, bias, w.dtype, zeros, autotune)

    def weight_zero_count(self) -> tuple[int, int]:
        """(exact zeros, total) of the weight this layer holds, counted when it was packed."""
        return self._zeros, self.in_features * self.out_features

    def config_for(self, m: int) -> cusparselt.CsltConfig:
        cfg = cusparselt.lookup(self.out_features, self.in_features, self.weight_dtype, m)
        if cfg is not None:
            return cfg
        if not self.autotune or torch.cuda.is_current_stream_capturing():
            return cusparselt.DEFAULT
        return cusparselt.tune(self.packed, self.out_features, self.in_features, m, self.weight_dtype, self.tuning_log)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2 = x.reshape(-1, self.in_features)
        cfg = self.config_for(x2.shape[0])
        try:
            y = cusparselt.matmul(x2, self.packed, cfg)
        except RuntimeError as exc:
            # An alg id tuned on another M of the same bucket can be out of range for this
            # problem (cuSPARSELt refuses it on the host: "invalid value ... ALG_CONFIG_ID").
            if cfg == cusparselt.DEFAULT or torch.cuda.is_current_stream_capturing():
                raise
            self.tuning_log.append(f"M={x2.shape[0]}: {cfg.describe()} refused ({str(exc)[:80]}); using alg 0")
            cusparselt.remember(self.out_features, self.in_features, self.weight_dtype, x2.shape[0], cusparselt.DEFAULT)
            y = cusparselt.matmul(x2, self.packed, cusparselt.DEFAULT)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, 2:4 cuSPARSELt"
