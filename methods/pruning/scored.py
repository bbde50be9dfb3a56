"""Score-based pruning: a score per weight, a mask from the scores, weights zeroed in place."""

from __future__ import annotations

import torch
from torch import nn

from sparsebench.api import ApplyContext, Method, MethodResult, Metric

from ..layerwise import Block, InputStats, block_linears, decoder_blocks, process_layerwise
from .config import PruningConfig
from .fast import use_sparse_kernels_
from .masks import mask_from_score, parse_pattern


class ScoredPruning(Method):
    """Base for methods whose only difference is the score (magnitude, Wanda)."""

    family = "pruning"
    Config = PruningConfig
    config: PruningConfig

    def score(self, weight: torch.Tensor, stats: InputStats | None) -> torch.Tensor:
        raise NotImplementedError

    def check_model(self, model: nn.Module) -> None:
        """Refuse N:M patterns a layer's width cannot hold, before anything is modified."""
        nm = parse_pattern(self.config.pattern)
        if nm is None:
            return
        for i, block in enumerate(decoder_blocks(model)):
            for name, lin in block_linears(block).items():
                if lin.in_features % nm[1]:
                    raise ValueError(
                        f"pattern {self.config.pattern} needs every input width to be a multiple "
                        f"of {nm[1]}, but layers.{i}.{name} has {lin.in_features}"
                    )

    def apply_(self, model: nn.Module, ctx: ApplyContext) -> MethodResult:
        cfg = self.config
        self.check_model(model)
        pruned = 0

        def prune_block(block: Block) -> None:
            nonlocal pruned
            for name, lin in block.linears.items():
                w = lin.weight
                score = self.score(w.detach().float(), block.stats[name] if block.stats else None)
                mask = mask_from_score(score, cfg.sparsity, cfg.pattern, cfg.comparison)
                with torch.no_grad():
                    w.mul_(mask.to(w.dtype))
                pruned += 1

        process_layerwise(model, ctx, prune_block, needs_activations=self.needs_calibration)
        kernels, notes = use_sparse_kernels_(model, cfg.pattern, ctx.kernel)
        return MethodResult(metrics={"pruned_linear_layers": Metric(value=pruned)}, kernels=kernels, notes=notes)
