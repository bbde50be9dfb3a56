"""DSnoT, after "Dynamic Sparse No Training" (Zhang et al., 2023): training-free refinement of
a pruning mask by swaps that lower the layer's expected reconstruction error.

Start from a Wanda (default) or magnitude mask. For output row ``r`` the pruned weights
leave the error ``e_r = sum_{j pruned} w_rj x_j`` on each token. With input column means
``mu_j`` and variances ``s_j^2`` (independent columns assumed), its expected square is

    E[e_r^2] = (sum_{j pruned} w_rj mu_j)^2 + sum_{j pruned} w_rj^2 s_j^2.

Each cycle, every row still improving makes one swap: it *grows* back the pruned weight
whose return lowers ``E[e_r^2]`` the most, then *prunes* the kept weight whose removal
raises it the least (in the same group of M for N:M patterns), and keeps the swap only if
the pair lowers ``E[e_r^2]`` by more than ``update_threshold`` of its current value. A row
stops at its first rejected swap; all stop after ``max_cycles``. Each swap grows one and
prunes one weight in the same row (and group), so the sparsity and N:M structure stay exact.

The paper grows by the mean error and prunes by a variance-aware Wanda score with a sign
rule; this implementation scores both steps with the one expected squared error above.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from ..layerwise import InputStats
from .base import MaskPruning
from .config import PruningConfig
from .masks import mask_from_score, parse_pattern


class DSnoTConfig(PruningConfig):
    """Pruning config plus the starting mask (``init``), the most swaps per row (``max_cycles``)
    and the smallest relative gain a swap must bring (``update_threshold``)."""

    init: Literal["wanda", "magnitude"] = Field("wanda", description="score of the starting mask")
    max_cycles: int = Field(50, ge=0, description="most swaps per output row")
    update_threshold: float = Field(
        0.001, ge=0.0, description="a swap must lower the row's expected squared error by this fraction")


def expected_row_error(weight: torch.Tensor, keep: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """``E[e_r^2]`` per row for the mask ``keep`` (True = kept), under independent inputs."""
    gone = (~keep).to(weight.dtype)
    bias = (weight * mean * gone).sum(1)
    return bias.pow(2) + (weight.pow(2) * var * gone).sum(1)


def dsnot_refine(
    weight: torch.Tensor,
    keep: torch.Tensor,
    mean: torch.Tensor,
    var: torch.Tensor,
    pattern: str = "unstructured",
    max_cycles: int = 50,
    update_threshold: float = 0.001,
) -> tuple[torch.Tensor, int]:
    """Refine mask ``keep`` (rows x cols, True = kept) by grow/prune swaps; returns it and the
    number of swaps made."""
    nm = parse_pattern(pattern)
    w = weight.float()
    keep = keep.clone()
    rows, cols = w.shape
    a = w * mean.float().unsqueeze(0)  # each weight's share of the mean error
    v = w.pow(2) * var.float().unsqueeze(0)  # and of its variance
    active = torch.ones(rows, dtype=torch.bool, device=w.device)
    row_idx = torch.arange(rows, device=w.device)
    col_group = torch.arange(cols, device=w.device) // (nm[1] if nm else cols)
    swaps = 0
    for _ in range(max_cycles):
        gone = (~keep).float()
        bias = (a * gone).sum(1)
        error = bias.pow(2) + (v * gone).sum(1)
        # grow j: error change  (bias - a_j)^2 - bias^2 - v_j   (negative is good)
        grow = (a - 2 * bias.unsqueeze(1)) * a - v
        grow = grow.masked_fill(keep, torch.inf)
        j = grow.argmin(1)
        bias_after = bias - a[row_idx, j]
        # prune k: error change  (bias' + a_k)^2 - bias'^2 + v_k
        prune = (a + 2 * bias_after.unsqueeze(1)) * a + v
        allowed = keep.clone()
        if nm is not None:
            allowed &= col_group.unsqueeze(0) == col_group[j].unsqueeze(1)
        prune = prune.masked_fill(~allowed, torch.inf)
        k = prune.argmin(1)
        change = grow[row_idx, j] + prune[row_idx, k]
        ok = active & torch.isfinite(change) & (change < -update_threshold * error)
        if not ok.any():
            break
        r = row_idx[ok]
        keep[r, j[ok]] = True
        keep[r, k[ok]] = False
        swaps += int(ok.sum())
        active = ok
    return keep, swaps


class DSnoT(MaskPruning):
    name = "dsnot"
    description = ("Training-free mask refinement: from a Wanda or magnitude mask, grow/prune swaps per "
                   "row that lower the expected reconstruction error (input mean and variance).")
    paper = "https://arxiv.org/abs/2310.08915"
    Config = DSnoTConfig
    config: DSnoTConfig
    needs_calibration = True

    def initial_mask(self, weight: torch.Tensor, stats: InputStats, sparsity: float) -> torch.Tensor:
        score = weight.abs()
        if self.config.init == "wanda":
            score = score * stats.l2.to(weight.device).unsqueeze(0)
        return mask_from_score(score, sparsity, self.config.pattern, self.config.comparison)

    def prune_weight(self, weight: torch.Tensor, stats: InputStats | None, sparsity: float) -> torch.Tensor:
        if stats is None:
            raise ValueError("dsnot needs input activation statistics")
        cfg = self.config
        keep = self.initial_mask(weight, stats, sparsity)
        keep, _ = dsnot_refine(weight, keep, stats.mean.to(weight.device), stats.var.to(weight.device),
                               cfg.pattern, cfg.max_cycles, cfg.update_threshold)
        return weight * keep
