"""SparseGPT (Frantar & Alistarh, 2023): prune each layer and reconstruct what it loses.

For a linear layer ``W`` (rows x cols) with calibration inputs ``X``, the layer-wise loss
``||W X - Ŵ X||^2`` has Hessian ``H = 2 X^T X / n`` (collected by the shared layer-wise
calibration). Columns are visited left to right. Zeroing weight ``w_rj`` while the columns
right of ``j`` are still free is an Optimal-Brain-Surgeon step restricted to those columns;
with ``U`` the upper Cholesky factor of ``H^-1`` (``H^-1 = U^T U``) it reads

    err_r = w_rj / U_jj,   w_r,k  -=  err_r * U_jk   for k > j,

which is the exact least-squares correction of the remaining columns. Pruning picks, per
block of ``blocksize`` columns, the weights with the smallest ``w^2 / U_jj^2`` (the OBS
saliency ``w^2 / [H^-1]_jj`` of the weight given the columns already fixed); N:M picks per
group of M columns. Updates inside a block are applied column by column; the rest of the
matrix receives them lazily, once per block, as one matrix product.

``H`` is dampened by ``damp * mean(diag H)`` on its diagonal; inputs that never fire
(``diag H == 0``) carry no information: their weights are zeroed for free.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator

from ..layerwise import InputStats
from .base import MaskPruning
from .config import PruningConfig
from .masks import parse_pattern


class SparseGPTConfig(PruningConfig):
    """Pruning config plus SparseGPT's ``blocksize`` (columns per lazy update and per mask
    choice) and ``damp`` (fraction of the mean Hessian diagonal added to it).

    ``comparison`` chooses how the unstructured mask of each column block is picked: ``row``
    prunes ``sparsity`` of each row's columns in the block, ``layer`` (the paper's choice)
    ranks the whole block (all rows together), so rows may end with different sparsities.
    """

    comparison: Literal["row", "layer"] = Field("layer", description="unstructured ranking group "
                                                "within each column block (layer: all rows, as in the paper)")
    blocksize: int = Field(128, ge=1, description="columns per mask choice and lazy update")
    damp: float = Field(0.01, ge=0.0, description="dampening, fraction of mean diag(H) added to H")

    @model_validator(mode="after")
    def _blocks_hold_groups(self) -> SparseGPTConfig:
        nm = parse_pattern(self.pattern)
        if nm is not None and self.blocksize % nm[1]:
            raise ValueError(f"blocksize {self.blocksize} must be a multiple of M={nm[1]} for pattern "
                             f"{self.pattern}, so no group of M columns straddles two blocks")
        return self


def _inverse_hessian_factor(hessian: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor ``U`` of ``(H + damp * mean(diag H) * I)^-1``."""
    h = hessian.clone()
    diag = torch.diagonal(h)
    mean_diag = diag.mean()
    if mean_diag <= 0:
        mean_diag = torch.ones((), dtype=h.dtype, device=h.device)
    diag.add_(damp * mean_diag)
    chol, info = torch.linalg.cholesky_ex(h)
    if info.item():
        raise ValueError("the dampened Hessian is not positive definite; raise damp (e.g. 0.01)")
    return torch.linalg.cholesky(torch.cholesky_inverse(chol), upper=True)


def sparsegpt_prune(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    sparsity: float,
    pattern: str = "unstructured",
    comparison: str = "layer",
    blocksize: int = 128,
    damp: float = 0.01,
) -> torch.Tensor:
    """Prune ``weight`` (rows x cols) given ``hessian`` (cols x cols); returns the new fp32 weight."""
    nm = parse_pattern(pattern)
    w = weight.detach().float().clone()
    h = hessian.detach().float().to(w.device).clone()
    rows, cols = w.shape
    dead = torch.diagonal(h) == 0
    if dead.any():  # such inputs are always zero: their weights can go at no cost
        h[dead, dead] = 1.0
        w[:, dead] = 0.0
    u = _inverse_hessian_factor(h, damp)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        count = i2 - i1
        w1 = w[:, i1:i2].clone()
        u1 = u[i1:i2, i1:i2]
        d1 = torch.diagonal(u1)
        err1 = torch.zeros_like(w1)
        if nm is None:
            saliency = w1.pow(2) / d1.pow(2).unsqueeze(0)
            prune1 = _lowest(saliency, sparsity, comparison)
        else:
            prune1 = torch.zeros_like(w1, dtype=torch.bool)
        for j in range(count):
            if nm is not None and j % nm[1] == 0:
                group = w1[:, j:j + nm[1]].pow(2) / d1[j:j + nm[1]].pow(2).unsqueeze(0)
                low = torch.sort(group, dim=1, stable=True).indices[:, : nm[1] - nm[0]]
                prune1[:, j:j + nm[1]].scatter_(1, low, True)
            col = w1[:, j]
            kept = torch.where(prune1[:, j], torch.zeros_like(col), col)
            err = (col - kept) / d1[j]
            w1[:, j:] -= err.unsqueeze(1) * u1[j, j:].unsqueeze(0)
            w1[:, j] = kept
            err1[:, j] = err
        w[:, i1:i2] = w1  # pruned entries are exact zeros; later updates touch only columns >= i2
        w[:, i2:] -= err1 @ u[i1:i2, i2:]
    return w


def _lowest(saliency: torch.Tensor, sparsity: float, comparison: str) -> torch.Tensor:
    """True for the ``sparsity`` fraction of lowest saliencies, per row or over the block."""
    out = torch.zeros_like(saliency, dtype=torch.bool)
    if comparison == "row":
        k = int(saliency.shape[1] * sparsity)
        if k:
            out.scatter_(1, torch.sort(saliency, dim=1, stable=True).indices[:, :k], True)
    else:
        k = int(saliency.numel() * sparsity)
        if k:
            out.view(-1)[torch.sort(saliency.flatten(), stable=True).indices[:k]] = True
    return out


class SparseGPT(MaskPruning):
    name = "sparsegpt"
    description = ("OBS-style pruning with reconstruction: the Hessian of calibration inputs updates "
                   "the kept weights of each row to absorb the pruned ones; unstructured or N:M.")
    paper = "https://arxiv.org/abs/2301.00774"
    Config = SparseGPTConfig
    config: SparseGPTConfig
    needs_calibration = True
    needs_hessian = True

    def prune_weight(self, weight: torch.Tensor, stats: InputStats | None, sparsity: float) -> torch.Tensor:
        if stats is None:
            raise ValueError("sparsegpt needs the Hessian of the layer inputs")
        cfg = self.config
        return sparsegpt_prune(weight, stats.hessian(), sparsity, cfg.pattern, cfg.comparison,
                               cfg.blocksize, cfg.damp)
