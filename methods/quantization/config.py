"""Config shared by the weight quantization methods, with the checks that need no model."""

from __future__ import annotations

from pydantic import Field, field_validator

from sparsebench.api import MethodConfig

from .grid import Grid

SUPPORTED_BITS = (2, 3, 4, 8)


class QuantConfig(MethodConfig):
    """``bits``: 2, 3, 4 or 8. ``group_size``: input columns sharing one scale/offset
    (32, 64, 128, ...; 0 = one per output channel). ``symmetric``: zero exactly on the grid."""

    bits: int = Field(4, description="bits per weight: 2, 3, 4 or 8")
    group_size: int = Field(128, description="columns per scale/offset group (multiple of 8), 0 = per channel")
    symmetric: bool = Field(False, description="symmetric grid (zero exact) instead of min/max")

    @field_validator("bits")
    @classmethod
    def _bits(cls, v: int) -> int:
        if v not in SUPPORTED_BITS:
            raise ValueError(f"bits must be one of {', '.join(map(str, SUPPORTED_BITS))} (the packed formats "
                             f"there are), got {v}")
        return v

    @field_validator("group_size")
    @classmethod
    def _group(cls, v: int) -> int:
        if v < 0 or (v and v % 8):
            raise ValueError(f"group_size must be 0 (per channel) or a positive multiple of 8, got {v}")
        return v

    @property
    def grid(self) -> Grid:
        return Grid(self.bits, self.group_size, self.symmetric)
