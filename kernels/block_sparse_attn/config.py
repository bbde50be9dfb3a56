"""Launch configurations of the Triton block-sparse attention (pure Python, no triton import).

A ``BsaConfig`` is the kernel's tile and launch shape, independent of the pattern's block
sizes: ``tile_m`` query rows per program (a divisor of ``block_m``: several programs share
one query block's list), ``tile_n`` keys per inner step (a divisor of ``block_n``: a live key
block is walked in ``block_n / tile_n`` steps), ``num_warps``, ``num_stages`` (software
pipelining of the K/V loads), ``tma`` (K/V/Q tiles read through host-made tensor
descriptors, Hopper's TMA; needs contiguous ``[B, H, L, D]`` inputs, else the plain
pointer loads run).

Spec strings (``label``/``parse``): ``"tm=128,tn=64,w=8,s=3,tma=1"``; the environment
variable ``SPARSEBENCH_BSA_CONFIG`` sets one for every call that passes no ``config``.
Defaults are per head dim, for Hopper; D=128 is the winner of the benchmark's sweep on an
H200 (``results/kernels/20261201T144921-block_sparse_attn-*``), the others are untimed
choices (the benchmark times ``SWEEP`` and prints the winner's spec).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from ..launch import is_pow2

ENV = "SPARSEBENCH_BSA_CONFIG"
_KEYS = {"tm": "tile_m", "tn": "tile_n", "w": "num_warps", "s": "num_stages", "tma": "tma"}


@dataclass(frozen=True)
class BsaConfig:
    tile_m: int = 128
    tile_n: int = 64
    num_warps: int = 8
    num_stages: int = 3
    tma: bool = False

    def __post_init__(self) -> None:
        for name in ("tile_m", "tile_n", "num_warps"):
            if not is_pow2(getattr(self, name)):
                raise ValueError(f"{name} must be a power of two, got {getattr(self, name)}")
        if self.tile_m < 16 or self.tile_n < 16 or self.num_stages < 1:
            raise ValueError(f"tiles must be >= 16 (tl.dot) and stages >= 1: {self}")

    def label(self) -> str:
        return f"tm={self.tile_m},tn={self.tile_n},w={self.num_warps},s={self.num_stages},tma={int(self.tma)}"

    @classmethod
    def parse(cls, spec: str) -> BsaConfig:
        values: dict[str, object] = {}
        try:
            for part in filter(None, (p.strip() for p in spec.split(","))):
                key, val = (s.strip() for s in part.split("="))
                name = _KEYS[key]
                values[name] = bool(int(val)) if name == "tma" else int(val)
            return cls(**values)  # type: ignore[arg-type]
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"{ENV}={spec!r}: expected e.g. '{cls().label()}' ({exc})") from None

    def fit(self, block_m: int, block_n: int) -> BsaConfig:
        """The config with tiles no larger than the pattern's blocks (and dividing them)."""
        tm = min(self.tile_m, block_m)
        tn = min(self.tile_n, block_n)
        if block_m % tm or block_n % tn:
            raise ValueError(f"tiles {tm}x{tn} must divide the blocks {block_m}x{block_n}")
        return replace(self, tile_m=tm, tile_n=tn)


# Hopper. D=128: the sweep's winner on an H200 (Triton 3.6) at 16k tokens, dense and at 10%
# density alike: 128x128 tiles, 3 stages, TMA, 4.46 ms dense / 0.59 ms at 10% against
# 6.37 / 0.75 ms for the earlier untimed 128x64 default (0.74x of cuDNN dense instead of
# 0.52x). It needs ~224 KB of shared memory: Hopper only. Other head dims: untimed, chosen
# from what Triton 3.6 builds for sm_90a (ptxas -v: 128x64 at TMA holds no spills).
DEFAULTS: dict[int, BsaConfig] = {
    32: BsaConfig(tile_m=128, tile_n=64, num_warps=4, num_stages=3, tma=True),
    64: BsaConfig(tile_m=128, tile_n=64, num_warps=4, num_stages=3, tma=True),
    128: BsaConfig(tile_m=128, tile_n=128, num_warps=8, num_stages=3, tma=True),
    256: BsaConfig(tile_m=64, tile_n=32, num_warps=4, num_stages=2, tma=True),
}

# Blocks smaller than a default's query tile (MInference's 64): the tile shrinks to the block.
# D=128 at 64x64: 4 warps, 3 stages, pointer loads measured best of the sweep's 64x64 configs
# on the H200 (5.69 ms dense at 16k, against 10.3 ms with TMA at 4 stages); the fitted 8-warp
# default ran MInference's dense-ish blocks at 2.2x cuDNN's time (``minference_stages``)
SMALL_BLOCK_DEFAULTS: dict[int, BsaConfig] = {
    128: BsaConfig(tile_m=64, tile_n=64, num_warps=4, num_stages=3, tma=False),
}

# fp32 inputs take exact (ieee) fp32 dots, which run on CUDA cores: small tiles keep them
# in registers (a correctness path; nothing fast is expected of it)
FP32_DEFAULTS: dict[int, BsaConfig] = {
    32: BsaConfig(tile_m=32, tile_n=16, num_warps=4, num_stages=2, tma=True),
    64: BsaConfig(tile_m=32, tile_n=16, num_warps=4, num_stages=2, tma=True),
    128: BsaConfig(tile_m=64, tile_n=32, num_warps=8, num_stages=2, tma=True),
    256: BsaConfig(tile_m=32, tile_n=16, num_warps=4, num_stages=2, tma=True),
}

# timed by the benchmark (after each matched the reference)
# (D=128 bf16 on sm_90a, Triton 3.6: none spills; 128x128 at 3 stages uses 224 KB of shared memory)
SWEEP = tuple(BsaConfig.parse(s) for s in (
    "tm=128,tn=64,w=8,s=3,tma=1", "tm=128,tn=64,w=8,s=3,tma=0", "tm=128,tn=64,w=8,s=4,tma=1",
    "tm=128,tn=64,w=8,s=2,tma=1", "tm=128,tn=128,w=8,s=2,tma=1", "tm=128,tn=128,w=8,s=3,tma=1",
    "tm=128,tn=128,w=8,s=2,tma=0", "tm=64,tn=64,w=4,s=4,tma=1", "tm=64,tn=64,w=4,s=3,tma=0",
    "tm=64,tn=128,w=4,s=2,tma=1", "tm=128,tn=32,w=4,s=4,tma=0",
))


def default_config(head_dim: int, fp32: bool = False, hopper: bool = True, block_m: int | None = None) -> BsaConfig:
    """The environment's spec, else the table's entry for the smallest listed head dim >= ``head_dim``;
    ``block_m`` smaller than that entry's query tile takes ``SMALL_BLOCK_DEFAULTS`` where it
    lists the head dim; ``hopper=False`` (an older GPU: less shared memory) caps the key tile at 64."""
    spec = os.environ.get(ENV, "").strip()
    if spec and not fp32:
        return BsaConfig.parse(spec)
    table = FP32_DEFAULTS if fp32 else DEFAULTS
    dim = next((d for d in sorted(table) if head_dim <= d), max(table))
    cfg = table[dim]
    if not fp32 and block_m is not None and block_m < cfg.tile_m and dim in SMALL_BLOCK_DEFAULTS:
        cfg = SMALL_BLOCK_DEFAULTS[dim]
    return cfg if hopper else replace(cfg, tile_n=min(cfg.tile_n, 64))
