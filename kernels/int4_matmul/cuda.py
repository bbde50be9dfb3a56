"""Launch ``w4_mma.cu``: int4 weight-only matmul on tensor cores for M <= 16 (CUDA, via NVRTC).

Why CUDA here: the Triton kernels spend 3.7-3.8 instructions per weight at M = 1 (their
layouts go through conversions a hand-placed fragment layout does not need), and stop at
1.1-1.6x over cuBLAS bf16; the bandwidth ceiling is 4x. ``w4_mma.cu`` spends about 1.9,
with every 16-byte load feeding four mma k-tiles directly (``tc_layout.py``).

The weight is repacked once into that layout (``tc_layout.pack``) and kept beside the
stored one for as long as the stored tensors live and are not modified in place; the first
call for a weight must happen outside CUDA-graph capture (warm-ups and the tuner's eager
call do that). With ``SPARSEBENCH_PDL=1`` (``launch.pdl``) it launches with programmatic
dependent launch: its weight loads overlap the previous kernel's tail. ``Config`` is what the
tuner varies: warps per block, chunks per stage, the cp.async ring, L2 hints, ``sx`` (sum(x)
per group from a prologue instead of a second mma) and ``tiles`` (16-row tiles a block works
through in turn).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import cuda_rtc, launch
from . import tc_layout

SOURCE_PATH = Path(__file__).with_name("w4_mma.cu")
MAX_M = 16
SX_GROUPS = (64, 128, 256)  # group sizes the sx variant sums x by
TILES = (1, 2, 4, 8)  # tiles a block may work through
SMEM_LIMIT = 227 << 10  # a block's shared memory on sm_90 (sm_80: 163 KB; the launch reports it)


@dataclass(frozen=True)
class Config:
    warps: int = 8
    stage: int = 4  # 64-column chunks loaded together
    pipe: int = 0  # 0: next stage in registers; D >= 2: a D-stage cp.async ring in shared memory
    l2: bool = False  # cp.async with the L2 256-byte prefetch hint
    prefetch: bool = False  # each warp bulk-prefetches its chunks into the L2 first (sm_90)
    sx: bool = False  # sum(x) per group from a prologue, not a second mma per k-tile (group 64/128/256)
    tiles: int = 1  # 16-row tiles a block works through in turn (> 1: register pipeline only)

    def __post_init__(self) -> None:
        if self.tiles not in TILES or (self.tiles > 1 and self.pipe):
            raise ValueError(f"{self}: tiles is one of {', '.join(map(str, TILES))}, and more than 1 only "
                             "with pipe 0")

    def threads_limit(self, m: int) -> int:
        """The most threads per block the compiled variant allows (its register budget)."""
        return 512 if self.stage <= 4 and m <= 8 else 256


def why_not(m: int, n: int, k: int, group: int, dtype: torch.dtype, device: torch.device) -> str | None:
    """Why the kernel cannot run this problem here, or None."""
    if device.type != "cuda":
        return "the CUDA int4 kernel needs a CUDA tensor"
    if m > MAX_M:
        return f"the CUDA int4 kernel takes at most {MAX_M} rows of x, got M={m}"
    why = tc_layout.check(n, k, group, dtype)
    if why:
        return why
    ok, why = cuda_rtc.available()
    if not ok:
        return why
    major, _ = torch.cuda.get_device_capability(device)
    return None if major >= 8 else f"mma.sync bf16 needs compute capability 8.0 or newer, got {major}.x"




def defines(dtype: torch.dtype, mt: int, config: Config, cpg: int, even: bool, threads: int,
            group: int) -> dict[str, int]:
    """The -D values of one compiled variant (no GPU needed: the compile tests use them too)."""
    return {"W4_BF16": int(dtype == torch.bfloat16), "W4_MT": mt, "W4_S": config.stage, "W4_CPG": cpg,
            "W4_EVEN": int(even), "W4_THREADS": threads, "W4_PIPE": config.pipe, "W4_L2": int(config.l2),
            "W4_PF": int(config.prefetch), "W4_SX": int(config.sx), "W4_SXG": group if config.sx else 128,
            "W4_T": config.tiles}


def _function(dtype: torch.dtype, mt: int, config: Config, cpg: int, even: bool, threads: int, group: int,
              device: torch.device) -> cuda_rtc.RtcFunction:
    defs = defines(dtype, mt, config, cpg, even, threads, group)
    return cuda_rtc.variant(SOURCE_PATH, defs).function("w4_mma", device)


@dataclass
class _Packed:
    ref: weakref.ref
    stamp: tuple
    words: torch.Tensor
    sc: torch.Tensor


_packed: dict[tuple[int, torch.dtype, int], _Packed] = {}
_writes = [0]  # repacks and zero rows made so far: a call that made one launches without PDL
_by_address: dict[tuple[int, torch.dtype, int], tuple[int, torch.dtype, int]] = {}


def _stamp(*ts: torch.Tensor) -> tuple:
    return tuple((t.data_ptr(), t._version, tuple(t.shape)) for t in ts)


def packed(qweight: torch.Tensor, scales: torch.Tensor, offsets: torch.Tensor, group: int,
           dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The weight in ``tc_layout``, repacked on first use and kept while ``qweight`` lives.

    Found by the tensor object, or by its address while the tensor packed from it is alive
    (a compiled graph may hand the op another tensor object for the same parameter; a live
    tensor's memory cannot have been handed to another weight)."""
    stamp = _stamp(qweight, scales, offsets)
    for key in ((id(qweight), dtype, group), _by_address.get((qweight.data_ptr(), dtype, group))):
        hit = _packed.get(key) if key is not None else None
        if hit is not None and hit.ref() is not None and hit.stamp == stamp:
            return hit.words, hit.sc
    if torch.cuda.is_current_stream_capturing():
        raise RuntimeError("the CUDA int4 kernel repacks a weight on its first call; make that call before "
                           "capturing a CUDA graph")
    words, sc = tc_layout.pack(qweight, scales, offsets, group, dtype)
    _writes[0] += 1
    key = (id(qweight), dtype, group)
    _packed[key] = _Packed(weakref.ref(qweight), stamp, words, sc)
    _by_address[(qweight.data_ptr(), dtype, group)] = key
    weakref.finalize(qweight, _forget, key, (qweight.data_ptr(), dtype, group))
    return words, sc


def _forget(key: tuple, address: tuple) -> None:
    _packed.pop(key, None)
    if _by_address.get(address) == key:
        del _by_address[address]


_zeros: dict[tuple, torch.Tensor] = {}


def _zero_row(k: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """K zeros the kernel's unused token lanes read (kept per device and dtype, grown as needed)."""
    key = (device, dtype)
    z = _zeros.get(key)
    if z is None or z.numel() < k:
        if torch.cuda.is_current_stream_capturing():
            raise RuntimeError("the CUDA int4 kernel's zero row is made on its first call; make that call "
                               "before capturing a CUDA graph")
        z = torch.zeros(max(k, 16384), dtype=dtype, device=device)
        _writes[0] += 1
        _zeros[key] = z
    return z


def run(x2: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, offsets: torch.Tensor, group: int,
        config: Config = Config()) -> torch.Tensor:
    """``x2 [M, K] @ W^T`` for M <= 16; returns ``[M, N]`` in ``x2.dtype``."""
    m, k = x2.shape
    n = qweight.shape[0]
    why = why_not(m, n, k, group, x2.dtype, x2.device)
    if why:
        raise ValueError(why)
    threads = 32 * config.warps
    if config.warps < 1 or threads > config.threads_limit(m):
        raise ValueError(f"{config}: at most {config.threads_limit(m) // 32} warps for this variant")
    if config.pipe == 1 or config.pipe < 0:
        raise ValueError(f"{config}: pipe is 0 (registers) or a ring of at least 2 stages")
    if x2.stride(-1) != 1 or x2.stride(0) % 8 or x2.data_ptr() % 16:
        x2 = x2.contiguous()  # rows of 16-byte aligned loads
    made = _writes[0]
    words, sc = packed(qweight, scales, offsets, group, x2.dtype)
    zeros = _zero_row(k, x2.dtype, x2.device)
    groups, cpg = k // group, group // tc_layout.CHUNK
    mt = 1 if m <= 8 else 2
    even = groups % config.warps == 0 and (groups // config.warps * cpg) % config.stage == 0
    static_cpg = cpg if cpg in (1, 2, 4, 8) and config.stage % cpg == 0 else 0
    if config.sx and group not in SX_GROUPS:
        raise ValueError(f"{config}: sums x by groups of {', '.join(map(str, SX_GROUPS))}, got group {group}")
    smem = groups * 16 * 8 + config.warps * mt * 512 + config.warps * config.pipe * config.stage * 512
    smem += groups * 8 * mt * 4 if config.sx else 0
    if smem > SMEM_LIMIT:
        raise ValueError(f"{config} needs {smem} bytes of shared memory for K={k}, group {group}; at most {SMEM_LIMIT}")
    fn = _function(x2.dtype, mt, config, static_cpg, even, config.threads_limit(m), group, x2.device)
    y = torch.empty((m, n), dtype=x2.dtype, device=x2.device)
    # PDL lets the kernel read weights before the previous kernel ends: not if that one may
    # be this call's repack or zeroing (then it is an ordinary launch)
    fresh = _writes[0] != made
    tiles = n // 16
    fn.launch((-(-tiles // config.tiles),), (threads,),
              [x2, zeros, words, sc, y, m, k, cpg, x2.stride(0), y.stride(0), tiles], smem=smem,
              stream=torch.cuda.current_stream(x2.device).cuda_stream, pdl=launch.pdl(x2.device) and not fresh)
    return y
