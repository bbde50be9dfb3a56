"""GPTQ (Frantar et al., 2022): quantize columns one by one, feeding each column's rounding
error back into the not-yet-quantized columns through the inverse Hessian of the layer's
calibration inputs, so the layer's output error ``||XW^T - XW_q^T||`` stays small.

Per layer with weight ``W [N, K]`` and ``H = 2 X^T X / n + damp * mean(diag H) * I``:
``U = chol(H^-1)`` (upper). For column ``j``: ``q_j = Q(w_j)``, ``e = (w_j - q_j) / U_jj``,
``w_{j+1:} -= e U_{j, j+1:}``. Columns are processed in blocks of ``block_size``: the
updates inside a block are applied eagerly, those to later columns once per block (lazy
batch). With ``act_order`` columns go in decreasing ``diag(H)`` order; the groups then stay
the contiguous groups of the original order (their parameters are fitted on the weight
before any update), so the packed layout is unchanged.
"""

from __future__ import annotations

import torch
from pydantic import Field

from ..layerwise import Block
from .base import Codes, QuantMethod
from .config import QuantConfig
from .grid import Grid, codes, dequantize, fit


class GptqConfig(QuantConfig):
    """Grid options plus ``damp`` (fraction of the mean Hessian diagonal added to it),
    ``block_size`` (columns per lazy batch) and ``act_order``."""

    damp: float = Field(0.01, ge=0.0, le=1.0, description="dampening: fraction of mean diag(H) added")
    block_size: int = Field(128, ge=1, description="columns per lazy-update block")
    act_order: bool = Field(False, description="quantize columns in decreasing diag(H) order")


def gptq_quantize(w: torch.Tensor, hessian: torch.Tensor, grid: Grid, damp: float = 0.01, block_size: int = 128,
                  act_order: bool = False) -> Codes:
    """Codes, scale and offset for ``w [N, K]`` given ``hessian [K, K]`` (fp32 math)."""
    w = w.detach().float().clone()
    h = hessian.detach().float().clone()
    rows, cols = w.shape
    dead = torch.diagonal(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    group = grid.group_of(cols)
    one_group = Grid(grid.bits, 0, grid.symmetric)
    static = act_order  # parameters fixed up front so groups stay contiguous in the original order
    dev = w.device
    scale = torch.zeros(rows, grid.groups(cols), device=dev)
    offset = torch.zeros_like(scale)
    if static:
        scale, offset = fit(w, grid)
    perm = torch.argsort(torch.diagonal(h), descending=True) if act_order else torch.arange(cols, device=dev)
    w = w[:, perm]
    h = h[perm][:, perm]
    h += damp * torch.diagonal(h).mean() * torch.eye(cols, device=dev)
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    q_out = torch.zeros(rows, cols, dtype=torch.uint8, device=dev)
    order = perm.tolist()
    for b0 in range(0, cols, block_size):
        b1 = min(b0 + block_size, cols)
        wb = w[:, b0:b1].clone()
        err = torch.zeros_like(wb)
        hb = hinv[b0:b1, b0:b1]
        for i in range(b1 - b0):
            j = order[b0 + i]  # original column
            g = j // group
            if not static and j % group == 0:  # first column of a group: fit on the updated weights
                cur = wb[:, i:i + group] if i + group <= b1 - b0 else w_updated(w, wb, b0, i, group)
                s, o = fit(cur, one_group)  # the slice is one group (the last may be short)
                scale[:, g], offset[:, g] = s[:, 0], o[:, 0]
            col = wb[:, i:i + 1]
            q = codes(col, scale[:, g:g + 1], offset[:, g:g + 1], grid)
            deq = dequantize(q, scale[:, g:g + 1], offset[:, g:g + 1], 1)
            q_out[:, j] = q[:, 0]
            e = (col - deq) / hb[i, i]
            wb[:, i:] -= e * hb[i, i:].unsqueeze(0)
            err[:, i:i + 1] = e
        w[:, b1:] -= err @ hinv[b0:b1, b1:]
    return q_out, scale, offset


def w_updated(w: torch.Tensor, wb: torch.Tensor, b0: int, i: int, group: int) -> torch.Tensor:
    """The current weights of a group that starts inside this block and ends beyond it:
    the in-block part with its eager updates, the rest with the updates applied so far."""
    inside = wb[:, i:]
    rest = w[:, b0 + wb.shape[1]: b0 + i + group]
    return torch.cat([inside, rest], dim=1)


class Gptq(QuantMethod):
    name = "gptq"
    description = "GPTQ: column-by-column quantization with inverse-Hessian error feedback."
    paper = "https://arxiv.org/abs/2210.17323"
    Config = GptqConfig
    config: GptqConfig
    needs_calibration = True
    needs_hessian = True

    def quantize_block(self, block: Block) -> dict[str, Codes]:
        assert block.stats is not None
        cfg = self.config
        out = {}
        for name, lin in block.linears.items():
            out[name] = gptq_quantize(lin.weight, block.stats[name].hessian(), cfg.grid, cfg.damp,
                                      cfg.block_size, cfg.act_order)
        return out
