"""Launch ``sparse_gemv.cu``: the thresholded sparse GEMV for 1..8 rows in CUDA (via NVRTC).

Why CUDA here: the Triton kernels reach 1.24-1.39x over cuBLAS at 50% sparsity on an H200
(issue #6 asks for 1.8x); the gather of live weight rows wants every lane's 16-byte loads
in flight at once and the split-K partials summed without a global workspace, arrival
atomics or a second launch. ``sparse_gemv.cu`` packs the live inputs per block in shared
memory and sums a K split over the blocks of a thread-block cluster (sm_90) through
distributed shared memory; without clusters (sm_80) a block walks all of K.

``Config`` is what a sweep varies: warps per block, lanes across N (the column tile is
``8 * lanes_n``), loads in flight per lane, and the K split (0: from the SM count).
Host-side parts (``plan``, ``defines``, ``why_not_shape``) need no GPU. With
``SPARSEBENCH_PDL=1`` (``launch.pdl``, Hopper+) it launches with programmatic dependent
launch: its launch and set-up overlap the previous kernel's drain, and it waits for that
kernel's results before its first global read.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import cuda_rtc
from ..launch import cdiv, parse_int_label, pdl, sm_count
from .registered import register

SOURCE_PATH = Path(__file__).with_name("sparse_gemv.cu")
MAX_ROWS = 8
MAX_K = 1 << 16  # list entries of one row hold the input index in 16 bits
SMEM_LIMIT = 227 << 10  # a block's shared memory on sm_90 (sm_80: 163 KB; the launch reports it)
SPLITS = (1, 2, 4, 8)  # cluster sizes (8: the portable limit)
_KEYS = {"w": "warps", "ln": "lanes_n", "u": "unroll", "s": "split", "loc": "local"}


@dataclass(frozen=True)
class Config:
    warps: int = 8
    lanes_n: int = 16  # lanes across N: a block owns 8 * lanes_n columns
    unroll: int = 8  # 16-byte weight loads in flight per lane
    split: int = 0  # K split over a cluster of blocks; 0: auto (1 without clusters)
    local: int = 0  # 1: each warp gathers its own slice's live rows (one scan pass, no block barrier)

    def __post_init__(self) -> None:
        if self.warps not in (1, 2, 4, 8, 16):
            raise ValueError(f"warps must be 1, 2, 4, 8 or 16, got {self.warps}")
        if self.lanes_n not in (4, 8, 16, 32):
            raise ValueError(f"lanes_n must be 4, 8, 16 or 32, got {self.lanes_n}")
        if not 1 <= self.unroll <= 16:
            raise ValueError(f"unroll must be 1..16, got {self.unroll}")
        if self.split and self.split not in SPLITS:
            raise ValueError(f"split must be 0 (auto) or one of {SPLITS}, got {self.split}")
        if self.local not in (0, 1):
            raise ValueError(f"local must be 0 or 1, got {self.local}")

    @property
    def tile_n(self) -> int:
        return 8 * self.lanes_n

    def label(self) -> str:
        return f"w={self.warps},ln={self.lanes_n},u={self.unroll},s={self.split}" + (",loc=1" if self.local else "")

    @classmethod
    def parse(cls, spec: str) -> Config:
        """``"w=8,ln=16,u=8,s=0"`` -> config (keys left out keep the defaults)."""
        return parse_int_label(cls, spec, _KEYS, "CUDA sparse GEMV config ")


def default_config(n: int, k: int) -> Config:
    """Narrow layers (k/v, N <= 2048) take 64-column tiles so that the grid fills the GPU;
    wider ones four loads in flight a lane. H200, 50% sparsity, over cuBLAS
    (``results/kernels/20261203T104340-sparse_gemv-5137fe.json``): gate/up 1.64x with
    ``u=4`` against 1.34x with ``u=8`` (ahead at every sparsity 0-90%), q/o 1.49 / 1.47x,
    down 1.61 / 1.62x; k/v ``ln=8`` 1.47x (``ln=4`` 1.50x, behind it from 70%)."""
    return Config(lanes_n=8) if n <= 2048 else Config(unroll=4)


def compiled_rows(m: int) -> int:
    """Rows a variant is compiled for (1, 2, 4, 8); fewer actual rows are an argument."""
    return next(r for r in (1, 2, 4, 8) if r >= m)


def defines(config: Config, dtype: torch.dtype, m: int, split: int) -> dict[str, int]:
    return {"SG_BF16": int(dtype == torch.bfloat16), "SG_M": compiled_rows(m), "SG_WARPS": config.warps,
            "SG_LN": config.lanes_n, "SG_U": config.unroll, "SG_SPLIT": split, "SG_LOCAL": config.local}


@dataclass(frozen=True)
class Plan:
    n_tiles: int
    split: int
    kb: int  # inputs per block
    smem: int  # dynamic shared memory (bytes)
    threads: int

    @property
    def grid(self) -> tuple[int, int]:
        return (self.n_tiles, self.split)


def list_entries(config: Config, kb: int) -> int:
    """Room in the live list: kb entries, or (``local``) one whole-step slice per warp."""
    if not config.local:
        return kb
    return config.warps * ((cdiv(kb, config.warps) + 31) & ~31)


def smem_bytes(config: Config, m: int, kb: int) -> int:
    """The live list or the warps' partial sums, whichever is larger."""
    rows = compiled_rows(m)
    xw = {1: 0, 2: 1, 4: 2, 8: 4}[rows]
    cap = list_entries(config, kb)
    lst = 4 * cap if rows == 1 else 4 * (((cap + 3) & ~3) + cap * xw)
    red = 4 * config.warps * rows * config.tile_n
    return max(lst, red)


def plan(m: int, n: int, k: int, config: Config, sms: int, clusters: bool) -> Plan:
    """Tiles and K split for ``[m, k] x [k, n]`` on ``sms`` SMs (``clusters``: sm_90+).
    Auto split: the smallest cluster size giving at least two blocks per SM, while each
    block keeps at least 32 inputs per warp."""
    n_tiles = cdiv(n, config.tile_n)
    if config.split:
        split = config.split
    elif not clusters:
        split = 1
    else:
        split = next((s for s in SPLITS if n_tiles * s >= 2 * sms), SPLITS[-1])
        while split > 1 and cdiv(k, split) < 32 * config.warps:
            split //= 2
    kb = cdiv(k, split)
    return Plan(n_tiles=n_tiles, split=split, kb=kb, smem=smem_bytes(config, m, kb), threads=32 * config.warps)


def why_not_shape(m: int, n: int, k: int, dtype: torch.dtype, config: Config | None = None,
                  clusters: bool = True) -> str | None:
    """What in the problem itself the kernel cannot take (no device needed), or None."""
    if dtype not in (torch.bfloat16, torch.float16):
        return f"the CUDA sparse GEMV takes bf16 or fp16 operands, got {dtype}"
    if not 1 <= m <= MAX_ROWS:
        return f"the CUDA sparse GEMV takes 1..{MAX_ROWS} rows of x, got M={m}"
    if n % 8:
        return f"the CUDA sparse GEMV reads the weight in 16-byte segments: N must be a multiple of 8, got N={n}"
    if not 1 <= k <= MAX_K:
        return f"the CUDA sparse GEMV keeps input indices in 16 bits: K must be 1..{MAX_K}, got K={k}"
    if k * n >= 2**31:
        return f"the CUDA sparse GEMV uses 32-bit row offsets: K*N must be below 2^31, got {k}*{n}"
    cfg = config or default_config(n, k)
    if cfg.split > 1 and not clusters:
        return f"split={cfg.split} needs thread-block clusters (compute capability 9.0 or newer)"
    p = plan(m, n, k, cfg, 132, clusters)
    if p.smem > SMEM_LIMIT:
        return (f"{cfg.label()} needs {p.smem} bytes of shared memory at M={m}, K={k} (at most {SMEM_LIMIT}); "
                "split K further")
    return None


def why_not(m: int, n: int, k: int, dtype: torch.dtype, device: torch.device,
            config: Config | None = None) -> str | None:
    """Why the kernel cannot run this problem here, or None."""
    if device.type != "cuda":
        return "the CUDA sparse GEMV needs CUDA tensors"
    ok, why = cuda_rtc.available()
    if not ok:
        return why
    major, _ = torch.cuda.get_device_capability(device)
    if major < 8:
        return f"the CUDA sparse GEMV needs compute capability 8.0 or newer, got {major}.x"
    return why_not_shape(m, n, k, dtype, config, clusters=major >= 9)


def _function(defs: dict[str, int], device: torch.device) -> cuda_rtc.RtcFunction:
    return cuda_rtc.variant(SOURCE_PATH, defs).function("sparse_gemv", device)


_PLANS: dict[tuple, Plan] = {}


def launch_plan(m: int, n: int, k: int, config: Config, device: torch.device) -> Plan:
    key = (m, n, k, config, device.index)
    found = _PLANS.get(key)
    if found is None:
        clusters = torch.cuda.get_device_capability(device)[0] >= 9
        found = _PLANS[key] = plan(m, n, k, config, sm_count(device), clusters)
    return found


def sparse_gemv_cuda(x: torch.Tensor, w_t: torch.Tensor, threshold: float | torch.Tensor,
                     bias: torch.Tensor | None = None, config: Config | None = None,
                     out: torch.Tensor | None = None) -> torch.Tensor:
    """``x [..., K]`` (1..8 rows), ``w_t [K, N]`` contiguous rows -> ``[..., N]`` in x's dtype."""
    k, n = w_t.shape
    if x.shape[-1] != k:
        raise ValueError(f"x has {x.shape[-1]} inputs but w_t has {k} rows")
    x2 = x.reshape(-1, k)
    m = x2.shape[0]
    cfg = config or default_config(n, k)
    why = why_not(m, n, k, x.dtype, x.device, cfg)
    if why:
        raise ValueError(why)
    if w_t.dtype != x.dtype:
        raise ValueError(f"w_t is {w_t.dtype} but x is {x.dtype}")
    if w_t.stride(1) != 1 or w_t.stride(0) % 8 or w_t.data_ptr() % 16:
        raise ValueError("w_t must be [K, N] with contiguous, 16-byte aligned rows (store the weight transposed)")
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    per_channel = isinstance(threshold, torch.Tensor)
    if per_channel:
        t_vec = threshold.to(device=x.device, dtype=torch.float32).contiguous()
        if t_vec.numel() != k:
            raise ValueError(f"a per-input threshold needs {k} values, got {t_vec.numel()}")
    if bias is not None:
        if bias.numel() != n or bias.dtype != x.dtype:
            raise ValueError(f"bias must be {n} values of {x.dtype}")
        bias = bias.contiguous()
    if out is None:
        out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    elif out.shape != (m, n) or out.dtype != x.dtype or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous [{m}, {n}] {x.dtype} tensor")
    p = launch_plan(m, n, k, cfg, x.device)
    fn = _function(defines(cfg, x.dtype, m, p.split), x.device)
    null = ctypes.c_void_p(0)
    fn.launch(p.grid, (p.threads,),
              [x2, x2.stride(0), m, w_t, w_t.stride(0), t_vec if per_channel else null,
               ctypes.c_float(0.0 if per_channel else float(threshold)),
               bias if bias is not None else null, out, n, k, p.kb],
              smem=p.smem, stream=torch.cuda.current_stream(x.device).cuda_stream, pdl=pdl(x.device))
    return out.reshape(*x.shape[:-1], n)


sparse_gemv_cuda_op = register("sparse_gemv_cuda", sparse_gemv_cuda)
