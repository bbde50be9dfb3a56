"""Score-based pruning: a score per weight, a mask from the scores, weights zeroed in place."""

from __future__ import annotations

import torch

from ..layerwise import InputStats
from .base import MaskPruning
from .masks import mask_from_score


class ScoredPruning(MaskPruning):
    """Base for methods whose only difference is the score (magnitude, Wanda)."""

    def score(self, weight: torch.Tensor, stats: InputStats | None) -> torch.Tensor:
        raise NotImplementedError

    def prune_weight(self, weight: torch.Tensor, stats: InputStats | None, sparsity: float) -> torch.Tensor:
        mask = mask_from_score(self.score(weight, stats), sparsity, self.config.pattern, self.config.comparison)
        return weight * mask
