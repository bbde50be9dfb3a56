"""The quantization grid: per-group scale and offset, codes, and dequantization.

One convention for every bit width and both flavours, so packing and kernels need one
dequantization formula, ``w = q * scale + offset`` with unsigned codes ``q`` in
``[0, 2**bits - 1]``:

- asymmetric: ``offset`` is the group minimum, ``scale = (max - min) / (2**bits - 1)``; the
  group's min and max are represented exactly (as in GGUF's Q4_1).
- symmetric: ``scale = absmax / (2**(bits-1) - 1)`` and ``offset = -2**(bits-1) * scale``,
  i.e. signed codes in ``[-(2**(bits-1) - 1), 2**(bits-1) - 1]`` stored with a bias of
  ``2**(bits-1)``; zero is exactly representable.

A group is ``group_size`` consecutive input columns of one output row (the whole row when
``group_size`` is 0: per-channel). When the width is not a multiple of the group size the
last group is shorter (as in GPTQ's reference code): the default model's 576-wide layers
take groups of 128 as 4 x 128 + 64.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Grid:
    bits: int
    group_size: int  # 0 = per output channel (one group per row)
    symmetric: bool

    def groups(self, in_features: int) -> int:
        g = self.group_of(in_features)
        if g > in_features:
            raise ValueError(f"group size {g} is larger than the input width {in_features}; use group_size 0 "
                             "(per channel) for one group per row")
        return -(-in_features // g)

    def group_of(self, in_features: int) -> int:
        return self.group_size or in_features

    @property
    def qmax(self) -> int:
        return 2**self.bits - 1


def fit(w: torch.Tensor, grid: Grid) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and offset ``[rows, groups]`` (fp32) for the weight ``w`` ``[rows, cols]``."""
    rows, cols = w.shape
    size, n = grid.group_of(cols), grid.groups(cols)
    pad = n * size - cols  # a short last group is padded with copies of its own first column
    wf = w.float()
    if pad:
        wf = torch.cat([wf, wf[:, (n - 1) * size:(n - 1) * size + 1].expand(rows, pad)], dim=1)
    g = wf.reshape(rows, n, size)
    if grid.symmetric:
        half = 2 ** (grid.bits - 1)
        absmax = g.abs().amax(-1)
        scale = absmax / (half - 1) if half > 1 else absmax
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        return scale, -half * scale
    lo, hi = g.amin(-1), g.amax(-1)
    scale = (hi - lo) / grid.qmax
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # constant group: any scale
    return scale, lo


def expand(params: torch.Tensor, cols: int, group: int) -> torch.Tensor:
    """Per-group ``[rows, groups]`` -> per-column ``[rows, cols]`` (``group`` columns each)."""
    if params.shape[1] == cols:
        return params
    return params.repeat_interleave(group, dim=1)[:, :cols]


def codes(w: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, grid: Grid) -> torch.Tensor:
    """Nearest codes (uint8) of ``w`` on the grid (``scale``/``offset`` per group or per column)."""
    cols = w.shape[1]
    group = grid.group_of(cols)
    s, o = expand(scale, cols, group), expand(offset, cols, group)
    lo = 1 if grid.symmetric and grid.bits > 1 else 0
    return torch.clamp(torch.round((w.float() - o) / s), lo, grid.qmax).to(torch.uint8)


def dequantize(q: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, group: int) -> torch.Tensor:
    """``q * scale + offset`` in fp32, parameters given per group of ``group`` columns."""
    cols = q.shape[1]
    return q.float() * expand(scale.float(), cols, group) + expand(offset.float(), cols, group)


def quantize_rtn(w: torch.Tensor, grid: Grid) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Round-to-nearest: (codes, scale, offset)."""
    scale, offset = fit(w, grid)
    return codes(w, scale, offset, grid), scale, offset
