"""Magnitude pruning: zero the weights with the smallest |W| (no calibration data)."""

from __future__ import annotations

import torch

from ..layerwise import InputStats
from .scored import ScoredPruning


class Magnitude(ScoredPruning):
    name = "magnitude"
    description = "Zero the smallest-|W| weights, per output row or per layer; unstructured or N:M."
    paper = "https://arxiv.org/abs/1506.02626"
    needs_calibration = False

    def score(self, weight: torch.Tensor, stats: InputStats | None) -> torch.Tensor:
        return weight.abs()
