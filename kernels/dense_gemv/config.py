"""Launch configurations of the dense GEMV (pure Python: records describe them without
compiling anything).

A config is ``bn`` (weight rows per program), ``bk`` (columns per loop step), ``w`` (warps),
``s`` (software-pipeline stages of the loop: asynchronous copies in flight). There is no
split-K: decode's projections have N >= 1024 outputs, hundreds of row tiles already.
``SPARSEBENCH_DENSE_GEMV_CONFIG="bn=8,bk=512,w=4,s=3"`` sets one for every shape (keys
left out keep the defaults).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..launch import cdiv, is_pow2, next_pow2, parse_int_label

ENV = "SPARSEBENCH_DENSE_GEMV_CONFIG"
_KEYS = {"bn": "block_n", "bk": "block_k", "w": "num_warps", "s": "num_stages"}


@dataclass(frozen=True)
class DenseGemvConfig:
    block_n: int = 8
    block_k: int = 512
    num_warps: int = 4
    num_stages: int = 3

    def __post_init__(self) -> None:
        for name in ("block_n", "block_k", "num_warps"):
            if not is_pow2(getattr(self, name)):
                raise ValueError(f"{name} must be a power of two, got {getattr(self, name)}")
        if self.num_stages < 1:
            raise ValueError(f"num_stages must be >= 1, got {self.num_stages}")

    def label(self) -> str:
        return f"bn={self.block_n},bk={self.block_k},w={self.num_warps},s={self.num_stages}"

    @classmethod
    def parse(cls, spec: str) -> DenseGemvConfig:
        return parse_int_label(cls, spec, _KEYS, "dense GEMV config ")


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


def effective(cfg: DenseGemvConfig, n: int, k: int) -> tuple[int, int, int]:
    """(block_n, block_k, programs): tiles no larger than the problem needs."""
    block_n = min(cfg.block_n, next_pow2(n))
    block_k = min(cfg.block_k, max(16, next_pow2(k)))
    return block_n, block_k, cdiv(n, block_n)
