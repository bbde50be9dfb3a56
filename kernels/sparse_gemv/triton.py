"""Triton thresholded sparse GEMV for decode (a few rows of activations).

Layout: the weight is stored transposed, ``w_t [K, N]`` contiguous, so a surviving input
``j`` means reading one contiguous row of ``N`` weights and a dropped input means reading
nothing: the loads of dead rows are masked off, and masked lanes issue no memory traffic.

Grid: ``(N tiles, K splits)``. Each program walks its share of the inputs in blocks of
``BLOCK_K``: it loads those inputs, applies the threshold (fused: ``|x| > t``, a scalar or
one value per input), skips the block entirely when no input in it survives, otherwise
loads only the surviving weight rows of its ``BLOCK_N`` columns and accumulates in fp32.
With one split the program writes ``y`` directly; with several, each split writes fp32
partial sums and a second small kernel adds them (deterministic, no atomics), adds the
bias and casts to the output dtype.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from . import MAX_ROWS


@triton.jit
def _sparse_gemv_kernel(x_ptr, w_ptr, t_ptr, t_scalar, bias_ptr, out_ptr,
                        M, N, K, k_per_split, stride_xm, stride_wk,
                        PER_CHANNEL: tl.constexpr, HAS_BIAS: tl.constexpr,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    n_ok = offs_n < N
    m_ok = offs_m < M
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    # one row: products accumulate elementwise and are reduced over K once after the loop
    # (a reduction per block of inputs would cross warps through shared memory every step)
    acc_k = tl.zeros((BLOCK_K, BLOCK_N), dtype=tl.float32)
    k_lo = pid_k * k_per_split
    k_hi = tl.minimum(k_lo + k_per_split, K)
    for k0 in range(k_lo, k_hi, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_ok = offs_k < k_hi
        if PER_CHANNEL:
            t = tl.load(t_ptr + offs_k, mask=k_ok, other=0.0)
        if BLOCK_M == 1:
            x = tl.load(x_ptr + offs_k, mask=k_ok, other=0.0).to(tl.float32)
            if PER_CHANNEL:
                live = (tl.abs(x) > t) & k_ok
            else:
                live = (tl.abs(x) > t_scalar) & k_ok
            if tl.max(live.to(tl.int32), axis=0) > 0:  # skip blocks where nothing survives
                w = tl.load(w_ptr + offs_k[:, None] * stride_wk + offs_n[None, :],
                            mask=live[:, None] & n_ok[None, :], other=0.0).to(tl.float32)
                xk = tl.where(live, x, 0.0)
                acc_k += xk[:, None] * w
        else:
            ok = m_ok[:, None] & k_ok[None, :]
            x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :], mask=ok, other=0.0).to(tl.float32)
            if PER_CHANNEL:
                keep = (tl.abs(x) > t[None, :]) & ok
            else:
                keep = (tl.abs(x) > t_scalar) & ok
            live = tl.max(keep.to(tl.int32), axis=0) > 0  # input k survives in some row
            if tl.max(live.to(tl.int32), axis=0) > 0:
                w = tl.load(w_ptr + offs_k[:, None] * stride_wk + offs_n[None, :],
                            mask=live[:, None] & n_ok[None, :], other=0.0).to(tl.float32)
                xk = tl.where(keep, x, 0.0)
                acc += tl.sum(xk[:, :, None] * w[None, :, :], axis=1)
    if BLOCK_M == 1:
        acc += tl.sum(acc_k, axis=0)[None, :]
    out_mask = m_ok[:, None] & n_ok[None, :]
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    out = out_ptr + pid_k * M * N + offs_m[:, None] * N + offs_n[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=out_mask)


@triton.jit
def _sum_splits_kernel(part_ptr, bias_ptr, y_ptr, MN, N, SPLITS,
                       HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < MN
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for s in range(SPLITS):
        acc += tl.load(part_ptr + s * MN + offs, mask=ok, other=0.0)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs % N, mask=ok, other=0.0).to(tl.float32)
    tl.store(y_ptr + offs, acc.to(y_ptr.dtype.element_ty), mask=ok)


@dataclass(frozen=True)
class GemvConfig:
    """Tile sizes and split-K of one launch. ``programs``: how many programs to aim for
    (0: two per streaming multiprocessor). ``SPARSEBENCH_GEMV_CONFIG="bn=256,bk=32,w=4,p=0"``
    overrides the default (e.g. with the best configuration of the kernel benchmark's sweep)."""

    block_n: int = 256
    block_k: int = 32
    programs: int = 0
    num_warps: int = 4
    min_k_blocks: int = 2  # a split walks at least this many blocks of inputs

    def label(self) -> str:
        return f"bn={self.block_n},bk={self.block_k},w={self.num_warps},p={self.programs}"

    @classmethod
    def from_env(cls) -> GemvConfig:
        spec = os.environ.get("SPARSEBENCH_GEMV_CONFIG", "").strip()
        if not spec:
            return cls()
        keys = {"bn": "block_n", "bk": "block_k", "w": "num_warps", "p": "programs"}
        try:
            return cls(**{keys[k.strip()]: int(v) for k, v in (part.split("=") for part in spec.split(","))})
        except (KeyError, ValueError):
            raise ValueError(f"SPARSEBENCH_GEMV_CONFIG={spec!r}: expected e.g. 'bn=256,bk=32,w=4,p=0'") from None


DEFAULT_CONFIG = GemvConfig.from_env()


_SM_COUNT: dict[int, int] = {}


def _sm_count(device: torch.device) -> int:
    if device.type != "cuda":
        return 4  # interpreter: keep the grid small but still split
    idx = device.index if device.index is not None else torch.cuda.current_device()
    if idx not in _SM_COUNT:
        _SM_COUNT[idx] = torch.cuda.get_device_properties(idx).multi_processor_count
    return _SM_COUNT[idx]


def plan(m: int, n: int, k: int, device: torch.device, cfg: GemvConfig) -> tuple[int, int, int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K, k_per_split, splits) for an ``[m, k] x [k, n]`` launch."""
    block_m = triton.next_power_of_2(m)
    block_n = min(cfg.block_n, max(16, triton.next_power_of_2(n)))
    block_k = cfg.block_k if block_m == 1 else max(8, min(cfg.block_k, 2048 // (block_m * 16)))
    block_k = min(block_k, max(8, triton.next_power_of_2(k)))
    n_tiles = triton.cdiv(n, block_n)
    target = cfg.programs or 2 * _sm_count(device)
    max_splits = max(1, triton.cdiv(k, block_k * cfg.min_k_blocks))
    splits = max(1, min(max_splits, triton.cdiv(target, n_tiles)))
    k_per_split = triton.cdiv(triton.cdiv(k, splits), block_k) * block_k
    splits = triton.cdiv(k, k_per_split)
    return block_m, block_n, block_k, k_per_split, splits


def sparse_gemv_triton(x: torch.Tensor, w_t: torch.Tensor, threshold: float | torch.Tensor,
                       bias: torch.Tensor | None = None, config: GemvConfig | None = None) -> torch.Tensor:
    k, n = w_t.shape
    if x.shape[-1] != k:
        raise ValueError(f"x has {x.shape[-1]} inputs but w_t has {k} rows")
    if w_t.stride(1) != 1:
        raise ValueError("w_t must be [K, N] with contiguous rows (store the weight transposed)")
    x2 = x.reshape(-1, k)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    m = x2.shape[0]
    if not 1 <= m <= MAX_ROWS:
        raise ValueError(f"the sparse GEMV takes 1..{MAX_ROWS} rows, got {m}")
    cfg = config or DEFAULT_CONFIG
    block_m, block_n, block_k, k_per_split, splits = plan(m, n, k, x.device, cfg)
    per_channel = isinstance(threshold, torch.Tensor)
    t_vec = threshold.float().contiguous() if per_channel else x2  # unused pointer when scalar
    if per_channel and t_vec.numel() != k:
        raise ValueError(f"a per-input threshold needs {k} values, got {t_vec.numel()}")
    t_scalar = 0.0 if per_channel else float(threshold)
    y = torch.empty((m, n), dtype=x.dtype, device=x.device)
    has_bias = bias is not None
    b = bias if has_bias else y
    out = y if splits == 1 else torch.empty((splits, m, n), dtype=torch.float32, device=x.device)
    grid = (triton.cdiv(n, block_n), splits)
    _sparse_gemv_kernel[grid](
        x2, w_t, t_vec, t_scalar, b, out, m, n, k, k_per_split, x2.stride(0), w_t.stride(0),
        PER_CHANNEL=per_channel, HAS_BIAS=has_bias and splits == 1,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=cfg.num_warps)
    if splits > 1:
        block = 1024
        _sum_splits_kernel[(triton.cdiv(m * n, block),)](
            out, b, y, m * n, n, splits, HAS_BIAS=has_bias, BLOCK=block, num_warps=4)
    return y.reshape(*x.shape[:-1], n)
