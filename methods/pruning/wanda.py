"""Wanda (Sun et al., 2023): prune by |W_ij| * ||X_j||_2, compared within each output row.

``||X_j||_2`` is the L2 norm of input feature j over all calibration tokens, collected
block by block with the pruned blocks' outputs feeding the next block.
"""

from __future__ import annotations

import torch

from ..layerwise import InputStats
from .scored import ScoredPruning


class Wanda(ScoredPruning):
    name = "wanda"
    description = "Pruning by weights and activations: |W| x input-activation L2 norm, per output row."
    paper = "https://arxiv.org/abs/2306.11695"
    needs_calibration = True

    def score(self, weight: torch.Tensor, stats: InputStats | None) -> torch.Tensor:
        if stats is None:
            raise ValueError("wanda needs input activation statistics")
        return weight.abs() * stats.l2.to(weight.device).unsqueeze(0)
