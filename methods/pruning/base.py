"""The base of every mask-based pruning method: checks, per-layer sparsity, and the walk
over decoder blocks through the shared layer-wise calibration (``methods/layerwise.py``).

A subclass only says how one linear layer is pruned (``prune_weight``); magnitude, Wanda,
SparseGPT and DSnoT differ in nothing else.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from sparsebench.api import ApplyContext, Method, MethodResult, Metric

from ..layerwise import Block, InputStats, all_linears, process_layerwise
from .config import PruningConfig
from .fast import use_sparse_kernels_
from .masks import parse_pattern


class MaskPruning(Method):
    """Prunes every linear layer of the decoder blocks, block by block, in place."""

    family = "pruning"
    Config: ClassVar[type[PruningConfig]] = PruningConfig
    config: PruningConfig
    #: collect ``X^T X`` per linear layer (SparseGPT); costs width^2 floats per layer
    needs_hessian: ClassVar[bool] = False

    def prune_weight(self, weight: torch.Tensor, stats: InputStats | None, sparsity: float) -> torch.Tensor:
        """Return the pruned fp32 weight (zeros where pruned; kept weights may be updated)."""
        raise NotImplementedError

    def check_model(self, model: nn.Module) -> None:
        """Refuse a config this model cannot take, before anything is modified: an N:M pattern
        on a layer whose input width is not a multiple of M, or layer patterns matching nothing."""
        cfg = self.config
        linears = all_linears(model)
        nm = parse_pattern(cfg.pattern)
        if nm is not None:
            bad = [f"{n} ({lin.in_features})" for n, lin in linears.items() if lin.in_features % nm[1]]
            if bad:
                raise ValueError(
                    f"pattern {cfg.pattern} needs every input width to be a multiple of {nm[1]}, but "
                    f"{len(bad)} layer(s) are not, e.g. {', '.join(bad[:3])}; choose an M that divides "
                    "the widths (2:4 and 4:8 fit most models) or pattern 'unstructured'"
                )
        cfg.check_layer_names(linears)

    def apply_(self, model: nn.Module, ctx: ApplyContext) -> MethodResult:
        self.check_model(model)
        pruned = 0

        def prune_block(block: Block) -> None:
            nonlocal pruned
            for name, lin in block.linears.items():
                stats = block.stats[name] if block.stats else None
                sparsity = self.config.sparsity_of(f"layers.{block.index}.{name}")
                new = self.prune_weight(lin.weight.detach().float(), stats, sparsity)
                with torch.no_grad():
                    lin.weight.copy_(new.to(lin.weight.dtype))
                pruned += 1

        process_layerwise(model, ctx, prune_block, needs_activations=self.needs_calibration,
                          hessian=self.needs_hessian, desc=f"{self.name}: pruning blocks")
        # --kernel fast (auto on CUDA): 2:4 layers to cuSPARSELt, others to the Triton SpMM
        kernels, notes = use_sparse_kernels_(model, self.config.pattern, ctx.kernel)
        return MethodResult(metrics={"pruned_linear_layers": Metric(value=pruned)}, kernels=kernels, notes=notes)
