"""Launch configuration of the Triton paged decode attention (pure Python, no triton import).

``DecodeConfig``: ``block_n`` keys per step (whole pages: ``block_n / page_size`` pages are
gathered per step), ``num_warps``, ``num_stages`` (software pipelining of the gathers),
``programs`` (the programs to aim for through split-K; 0 = ``per_sm`` per SM),
``min_steps`` (the fewest steps one split walks), ``fused_merge`` (1: the last split of a row
to finish merges the row's partials, no combine launch). Spec strings: ``"bn=64,w=4,s=3,p=0"``;
``SPARSEBENCH_DECODE_CONFIG`` sets the default of every call without ``config``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..launch import cdiv, is_pow2, parse_int_label

ENV = "SPARSEBENCH_DECODE_CONFIG"
_KEYS = {"bn": "block_n", "w": "num_warps", "s": "num_stages", "p": "programs", "ms": "min_steps",
         "fm": "fused_merge"}
PER_SM = 4


@dataclass(frozen=True)
class DecodeConfig:
    block_n: int = 64
    num_warps: int = 4
    num_stages: int = 3
    programs: int = 0
    min_steps: int = 2
    fused_merge: int = 0

    def __post_init__(self) -> None:
        for name in ("block_n", "num_warps"):
            v = getattr(self, name)
            if not is_pow2(v):
                raise ValueError(f"{name} must be a power of two, got {v}")
        if self.num_stages < 1 or self.programs < 0 or self.min_steps < 1:
            raise ValueError(f"bad stages/programs/min_steps in {self}")
        if self.fused_merge not in (0, 1):
            raise ValueError(f"fused_merge must be 0 or 1, got {self.fused_merge}")

    def label(self) -> str:
        return (f"bn={self.block_n},w={self.num_warps},s={self.num_stages},p={self.programs}"
                + (f",ms={self.min_steps}" if self.min_steps != 2 else "")
                + (",fm=1" if self.fused_merge else ""))

    @classmethod
    def parse(cls, spec: str) -> DecodeConfig:
        return parse_int_label(cls, spec, _KEYS, f"{ENV}=")


DEFAULT = DecodeConfig()
SWEEP = tuple(DecodeConfig.parse(s) for s in (
    "bn=64,w=4,s=3", "bn=64,w=4,s=2", "bn=128,w=4,s=2", "bn=128,w=8,s=3", "bn=32,w=4,s=4",
    "bn=64,w=4,s=3,p=264", "bn=64,w=4,s=3,p=1056", "bn=128,w=4,s=3,p=528",
))


def default_config() -> DecodeConfig:
    spec = os.environ.get(ENV, "").strip()
    return DecodeConfig.parse(spec) if spec else DEFAULT


@dataclass(frozen=True)
class SplitPlan:
    """How the entries (selected pages) of each row are cut into splits."""

    pages_per_step: int
    per_split: int  # entries per split, a multiple of pages_per_step
    splits: int


def plan(n_entries: int, rows: int, page_size: int, sm_count: int, cfg: DecodeConfig) -> SplitPlan:
    """Split-K geometry for ``rows`` programs' worth of rows over ``n_entries`` pages each."""
    pps = max(1, cfg.block_n // page_size)
    target = cfg.programs or PER_SM * sm_count
    max_splits = max(1, cdiv(n_entries, pps * cfg.min_steps))
    splits = max(1, min(max_splits, cdiv(target, max(rows, 1))))
    per_split = cdiv(cdiv(n_entries, splits), pps) * pps
    return SplitPlan(pages_per_step=pps, per_split=per_split, splits=cdiv(n_entries, per_split))
