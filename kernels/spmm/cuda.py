"""Launch ``spmm_decode.cu``: the bitmask-tile SpMM for 1..8 rows in CUDA (via NVRTC).

Why CUDA here: the Triton SpMM places every nonzero with its own gathered global load and is
bound by the L1/TEX pipe (0.29-0.49x of dense on an H200); a vector-load-and-``tl.gather``
variant was 4x slower still, since Triton routes the gather through shared memory with layout
conversions (benchmarks/NOTES.md). In CUDA each block streams its rows' contiguous runs into a
shared-memory ring with 16-byte ``cp.async`` and decodes from there (see the .cu header).

``Config``: weight rows per block, warps, ring stages. Host-side parts (``defines``,
``smem_bytes``, ``chunk_bounds``, ``why_not_shape``) need no GPU.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import cuda_rtc
from ..launch import parse_int_label, pdl
from .ref import PackedWeight

SOURCE_PATH = Path(__file__).with_name("spmm_decode.cu")
MAX_ROWS = 8  # rows of x
TILE_K = 128  # the kernel's lanes own 4 columns each of a 128-column k-tile
SMEM_LIMIT = 227 << 10
_KEYS = {"r": "rows", "w": "warps", "k": "kw", "d": "stages"}


@dataclass(frozen=True)
class Config:
    # defaults: the best single configuration over the Llama-3-8B shapes at M = 1 on an H200
    # (results/kernels/20261204T203458-spmm-59fcca.json)
    rows: int = 16  # weight rows a block owns
    warps: int = 8
    kw: int = 1  # k-tiles a stage holds, one per group of warps (their sums meet at the end)
    stages: int = 8  # ring stages: stages - 1 in flight

    def __post_init__(self) -> None:
        if self.rows not in (4, 8, 16, 32, 64):
            raise ValueError(f"rows must be 4, 8, 16, 32 or 64, got {self.rows}")
        if self.warps not in (1, 2, 4, 8, 16):
            raise ValueError(f"warps must be 1, 2, 4, 8 or 16, got {self.warps}")
        if self.kw not in (1, 2, 4, 8) or self.warps % self.kw:
            raise ValueError(f"kw (k-tiles a stage) must be 1, 2, 4 or 8 and divide warps ({self.warps}), got {self.kw}")
        if (self.rows * self.kw) % self.warps:
            raise ValueError(f"the {self.warps // self.kw} warps a k-tile must divide rows ({self.rows})")
        if 2 * self.rows > 32 * self.warps:  # one thread a row copies its mask words, another its start
            raise ValueError(f"{self.rows} rows need at least {self.rows // 16} warps, got {self.warps}")
        if not 2 <= self.stages <= 12:
            raise ValueError(f"stages must be 2..12, got {self.stages}")

    def label(self) -> str:
        return f"r={self.rows},w={self.warps},k={self.kw},d={self.stages}"

    @classmethod
    def parse(cls, spec: str) -> Config:
        """``"r=16,w=4,k=1,d=6"`` -> config (keys left out keep the defaults)."""
        return parse_int_label(cls, spec, _KEYS, "CUDA SpMM config ")


def compiled_rows(m: int) -> int:
    """Rows of x a variant is compiled for (1, 2, 4, 8); fewer actual rows are an argument."""
    return next(r for r in (1, 2, 4, 8) if r >= m)


def defines(config: Config, dtype: torch.dtype, m: int) -> dict[str, int]:
    return {"SP_BF16": int(dtype == torch.bfloat16), "SP_M": compiled_rows(m), "SP_ROWS": config.rows,
            "SP_WARPS": config.warps, "SP_KW": config.kw, "SP_D": config.stages}


def slot_bytes(config: Config, m: int) -> int:
    """One ring slot, as the .cu lays it out: mask words, row starts, x, the values run."""
    rs = (config.rows * 4 + 15) & ~15
    return config.rows * 16 + rs + compiled_rows(m) * TILE_K * 2 + (config.rows * TILE_K + 16) * 2


def smem_bytes(config: Config, m: int, n_ktiles: int) -> int:
    return config.stages * config.kw * slot_bytes(config, m) + 8 * n_ktiles


def chunk_bounds(p: PackedWeight, rows: int) -> torch.Tensor:
    """int32 ``[N_pad / rows, n_ktiles, 2]``: where the run of block b (rows ``b * rows ...``)
    in k-tile t starts in ``values``, and where it ends. ``values`` holds tile after tile and,
    inside a tile, row after row, so a run ends where the next one in that order starts."""
    np_, kt = p.row_start.shape
    if p.tile_n % rows:
        raise ValueError(f"rows per block ({rows}) must divide the format's tile_n ({p.tile_n})")
    groups = p.tile_n // rows
    first = p.row_start.reshape(np_ // p.tile_n, groups, rows, kt)[:, :, 0, :]  # [n_tiles, groups, kt]
    order = first.permute(0, 2, 1).reshape(-1)  # stream order: tile row, k-tile, group
    ends = torch.cat([order[1:], torch.full((1,), p.values.numel(), dtype=order.dtype, device=order.device)])
    both = torch.stack([order, ends], -1).reshape(np_ // p.tile_n, kt, groups, 2)
    return both.permute(0, 2, 1, 3).reshape(np_ // rows, kt, 2).contiguous()


def why_not_shape(m: int, n: int, k: int, dtype: torch.dtype, p: PackedWeight | None = None,
                  config: Config | None = None) -> str | None:
    """What in the problem itself the kernel cannot take (no device needed), or None."""
    cfg = config or Config()
    if dtype not in (torch.bfloat16, torch.float16):
        return f"the CUDA SpMM takes bf16 or fp16 operands, got {dtype}"
    if not 1 <= m <= MAX_ROWS:
        return f"the CUDA SpMM takes 1..{MAX_ROWS} rows of x, got M={m}"
    if p is not None:
        if p.tile_k != TILE_K:
            return f"the CUDA SpMM decodes {TILE_K}-column k-tiles, the weight was packed with tile_k={p.tile_k}"
        if p.tile_n % cfg.rows:
            return f"{cfg.label()}: rows per block must divide the format's tile_n={p.tile_n}"
        if p.values.numel() >= 2**31:
            return "the CUDA SpMM indexes values in 32 bits"
    n_ktiles = -(-k // TILE_K)
    if smem_bytes(cfg, m, n_ktiles) > SMEM_LIMIT:
        return f"{cfg.label()} needs {smem_bytes(cfg, m, n_ktiles)} bytes of shared memory at M={m}, K={k}"
    return None


def why_not(x: torch.Tensor, p: PackedWeight, config: Config | None = None) -> str | None:
    """Why the kernel cannot run this problem here, or None."""
    if x.device.type != "cuda":
        return "the CUDA SpMM needs CUDA tensors"
    ok, why = cuda_rtc.available()
    if not ok:
        return why
    if torch.cuda.get_device_capability(x.device)[0] < 8:
        return "the CUDA SpMM needs compute capability 8.0 or newer (cp.async)"
    n, k = p.shape
    return why_not_shape(x.reshape(-1, k).shape[0], n, k, x.dtype, p, config)


def _function(defs: dict[str, int], device: torch.device) -> cuda_rtc.RtcFunction:
    return cuda_rtc.variant(SOURCE_PATH, defs).function("spmm_decode", device)


def spmm_cuda(x: torch.Tensor, p: PackedWeight, bias: torch.Tensor | None = None, config: Config | None = None,
              bounds: torch.Tensor | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """``x [..., K]`` (1..8 rows) ``@ W^T (+ bias)`` -> ``[..., N]`` in x's dtype, fp32 accumulation."""
    n, k = p.shape
    if x.shape[-1] != k:
        raise ValueError(f"x has {x.shape[-1]} inputs but the weight has {k}")
    cfg = config or Config()
    why = why_not(x, p, cfg)
    if why:
        raise ValueError(why)
    if p.values.dtype != x.dtype:
        raise TypeError(f"x is {x.dtype} but the packed weight holds {p.values.dtype}")
    x2 = x.reshape(-1, k)
    m = x2.shape[0]
    if x2.stride(-1) != 1 or x2.stride(0) % 8 or x2.data_ptr() % 16:  # the kernel copies x's rows in 16 bytes
        x2 = torch.nn.functional.pad(x2, (0, -k % 8)) if k % 8 else x2.clone(memory_format=torch.contiguous_format)
    values = p.values if p.values.data_ptr() % 16 == 0 else p.values.clone()
    if bias is not None and (bias.numel() != n or bias.dtype != x.dtype):
        raise ValueError(f"bias must be {n} values of {x.dtype}")
    if out is None:
        out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    elif out.shape != (m, n) or out.dtype != x.dtype or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous [{m}, {n}] {x.dtype} tensor")
    if bounds is None:  # a module keeps its table (SparseLinear); a one-off call builds it
        bounds = chunk_bounds(p, cfg.rows)
    elif bounds.shape != (p.bits.shape[0] // cfg.rows, p.row_start.shape[1], 2):
        raise ValueError(f"bounds has shape {tuple(bounds.shape)}, not the table of {cfg.rows} rows a block")
    n_ktiles = p.row_start.shape[1]
    fn = _function(defines(cfg, x.dtype, m), x.device)
    null = ctypes.c_void_p(0)
    fn.launch((p.bits.shape[0] // cfg.rows,), (32 * cfg.warps,),
              [x2, x2.stride(0), m, values, values.numel(), p.bits, p.bits.shape[1], p.row_start, bounds, n_ktiles,
               bias.contiguous() if bias is not None else null, out, out.stride(0), n, k],
              smem=smem_bytes(cfg, m, n_ktiles), stream=torch.cuda.current_stream(x.device).cuda_stream,
              pdl=pdl(x.device))
    return out.reshape(*x.shape[:-1], n)
