"""Launch configurations of the dense GEMV (pure Python: records describe them without
compiling anything).

A config is ``bn`` (weight rows per program), ``bk`` (columns per loop step), ``w`` (warps),
``s`` (software-pipeline stages of the loop: asynchronous copies in flight), ``pf`` (1: under
programmatic dependent launch, each program asks the L2 for all its rows before it waits
for the kernel that writes x, so the weight stream does not pause while that kernel
drains; 0: only the first tile is loaded before the wait). There is no
split-K: decode's projections have N >= 1024 outputs, hundreds of row tiles already.
``SPARSEBENCH_DENSE_GEMV_CONFIG="bn=8,bk=512,w=4,s=3"`` sets one for every shape (keys
left out keep the defaults).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..launch import cdiv, is_pow2, next_pow2, spec_fields

ENV = "SPARSEBENCH_DENSE_GEMV_CONFIG"
_KEYS = {"bn": "block_n", "bk": "block_k", "w": "num_warps", "s": "num_stages", "pf": "prefetch"}


@dataclass(frozen=True)
class DenseGemvConfig:
    block_n: int = 8
    block_k: int = 512
    num_warps: int = 4
    num_stages: int = 3
    prefetch: int = 0

    def __post_init__(self) -> None:
        for name in ("block_n", "block_k", "num_warps"):
            if not is_pow2(getattr(self, name)):
                raise ValueError(f"{name} must be a power of two, got {getattr(self, name)}")
        if self.num_stages < 1:
            raise ValueError(f"num_stages must be >= 1, got {self.num_stages}")
        if self.prefetch not in (0, 1):
            raise ValueError(f"prefetch (pf) must be 0 or 1, got {self.prefetch}")

    def label(self) -> str:
        return (f"bn={self.block_n},bk={self.block_k},w={self.num_warps},s={self.num_stages}"
                + (f",pf={self.prefetch}" if self.prefetch else ""))

    @classmethod
    def parse(cls, spec: str) -> DenseGemvConfig:
        try:
            return cls(**spec_fields(spec, _KEYS))
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"dense GEMV config {spec!r}: expected e.g. '{cls().label()}' ({exc})") from None


# The config whose time summed over one 8B decode step's GEMVs was least in the H200 sweep of
# 2026-12-01 (results/kernels/20261201T164553-dense_gemv-*): 3.86 ms; the best per shape
# was within 2% of it on every shape.
DEFAULT = DenseGemvConfig(block_n=4, block_k=256, num_warps=2, num_stages=4)


def default_config() -> DenseGemvConfig:
    """The config a call without ``config=`` uses, for every shape (the environment's, else ``DEFAULT``)."""
    spec = os.environ.get(ENV, "").strip()
    return DenseGemvConfig.parse(spec) if spec else DEFAULT


def describe_defaults() -> str:
    return default_config().label()


PREFETCH_ALIGN = 16  # bytes: a bulk L2 prefetch takes 16-byte aligned addresses and sizes


def prefetch_chunks(block_n: int, num_warps: int, k: int, row_stride: int, elem: int) -> int:
    """Pieces each weight row of a program is prefetched in (one per thread when they
    divide evenly, else whole rows), or 0 when the rows are not 16-byte aligned."""
    if (row_stride * elem) % PREFETCH_ALIGN or (k * elem) % PREFETCH_ALIGN:
        return 0
    chunks = max(1, (32 * num_warps) // block_n)
    while chunks > 1 and (k * elem) % (chunks * PREFETCH_ALIGN):
        chunks //= 2
    return chunks


def effective(cfg: DenseGemvConfig, n: int, k: int) -> tuple[int, int, int]:
    """(block_n, block_k, programs): tiles no larger than the problem needs."""
    block_n = min(cfg.block_n, next_pow2(n))
    block_k = min(cfg.block_k, max(16, next_pow2(k)))
    return block_n, block_k, cdiv(n, block_n)
