"""Round-to-nearest: every weight to its nearest grid point, no calibration data."""

from __future__ import annotations

from ..layerwise import Block
from .base import Codes, QuantMethod
from .config import QuantConfig
from .grid import quantize_rtn


class RtnConfig(QuantConfig):
    """RTN has only the grid options (bits, group_size, symmetric)."""


class Rtn(QuantMethod):
    name = "rtn"
    description = "Round-to-nearest weight quantization, per group or per channel, symmetric or min/max."
    paper = None  # the baseline of every weight quantization paper
    Config = RtnConfig
    needs_calibration = False

    def quantize_block(self, block: Block) -> dict[str, Codes]:
        return {n: quantize_rtn(lin.weight.detach().float(), self.config.grid) for n, lin in block.linears.items()}
