"""The dense baseline: leaves the model as loaded. Every method is compared with it."""

from __future__ import annotations

from typing import Any

from sparsebench.api import ApplyContext, Method, MethodConfig, MethodResult


class DenseConfig(MethodConfig):
    """No options: the baseline is the model as loaded."""


class Dense(Method):
    name = "dense"
    family = "baseline"
    description = "No compression: the reference every method is measured against."
    Config = DenseConfig

    def apply_(self, model: Any, ctx: ApplyContext) -> MethodResult:
        return MethodResult(kernels={"linear": "torch.nn.Linear (dense)"})
