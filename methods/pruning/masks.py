"""Pruning masks from scores: unstructured (per output row or per layer) and N:M.

Conventions: a mask is ``True`` where the weight is KEPT. ``sparsity`` is the fraction of
weights set to zero. ``N:M`` keeps the N largest-scoring weights in every group of M
consecutive input columns of each row (so 2:4 is 50% sparse), as sparse tensor cores need.
"""

from __future__ import annotations

import re
from typing import Literal

import torch

_NM = re.compile(r"^(\d+):(\d+)$")


def parse_pattern(pattern: str) -> tuple[int, int] | None:
    """``"unstructured"`` -> None, ``"2:4"`` -> (2, 4); raises ``ValueError`` otherwise."""
    if pattern == "unstructured":
        return None
    m = _NM.match(pattern)
    if not m:
        raise ValueError(f"pattern must be 'unstructured' or 'N:M' such as '2:4', got {pattern!r}")
    n, mm = int(m.group(1)), int(m.group(2))
    if not 0 < n < mm:
        raise ValueError(
            f"N:M pattern needs 0 < N < M (N weights kept in every M), got {pattern!r}"
        )
    return n, mm


def unstructured_mask(
    score: torch.Tensor, sparsity: float, comparison: Literal["row", "layer"] = "row"
) -> torch.Tensor:
    """Zero the ``sparsity`` fraction of lowest scores, per output row or over the whole layer.

    Ties are broken by position (stable sort), so the mask is deterministic.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    mask = torch.ones_like(score, dtype=torch.bool)
    if comparison == "row":
        k = int(score.shape[1] * sparsity)
        if k:
            idx = torch.sort(score, dim=1, stable=True).indices[:, :k]
            mask.scatter_(1, idx, False)
    elif comparison == "layer":
        k = int(score.numel() * sparsity)
        if k:
            idx = torch.sort(score.flatten(), stable=True).indices[:k]
            mask.view(-1)[idx] = False
    else:
        raise ValueError(f"comparison must be 'row' or 'layer', got {comparison!r}")
    return mask


def nm_mask(score: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the ``n`` highest scores in every group of ``m`` consecutive columns of each row."""
    rows, cols = score.shape
    if cols % m:
        raise ValueError(f"an N:M pattern with M={m} needs the input width to be a multiple of {m}, got {cols}")
    groups = score.reshape(rows, cols // m, m)
    # lowest (m - n) of each group are pruned; stable sort makes ties deterministic
    idx = torch.sort(groups, dim=-1, stable=True).indices[..., : m - n]
    mask = torch.ones_like(groups, dtype=torch.bool)
    mask.scatter_(-1, idx, False)
    return mask.reshape(rows, cols)


def mask_from_score(
    score: torch.Tensor, sparsity: float, pattern: str, comparison: Literal["row", "layer"] = "row"
) -> torch.Tensor:
    nm = parse_pattern(pattern)
    if nm is None:
        return unstructured_mask(score, sparsity, comparison)
    return nm_mask(score, *nm)
