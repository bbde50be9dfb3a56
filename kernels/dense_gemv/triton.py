"""Triton dense GEMV: one program per ``BLOCK_N`` weight rows, streaming them along K.

Each step loads a ``[BLOCK_N, BLOCK_K]`` tile of the weight (16-byte vectors along K, the
rows' contiguous direction) and multiplies it into an fp32 ``[BLOCK_N, BLOCK_K]``
accumulator, so the loop has no reduction in it; the rows are summed once at the end. The
loop is software-pipelined (``num_stages`` tiles in flight as asynchronous copies), which is
what keeps enough bytes in flight per SM for the weight stream to approach the bandwidth.
Rows past N are clamped to row 0 (read, never stored), so the weight loads need no row mask.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .config import DenseGemvConfig, default_config, effective

__all__ = ["dense_gemv_op", "dense_gemv_triton"]


@triton.jit
def _dense_gemv_kernel(x_ptr, w_ptr, b_ptr, y_ptr, N, K, stride_wn,
                       HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                       EVEN_K: tl.constexpr, NUM_STAGES: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    r_ok = rows < N
    rows_safe = tl.where(r_ok, rows, 0)
    cols = tl.arange(0, BLOCK_K)
    w_ptrs = w_ptr + rows_safe.to(tl.int64)[:, None] * stride_wn + cols[None, :]
    acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    for k0 in tl.range(0, K, BLOCK_K, num_stages=NUM_STAGES):
        if EVEN_K:
            xk = tl.load(x_ptr + k0 + cols)
            w = tl.load(w_ptrs + k0, eviction_policy="evict_first")
        else:
            k_ok = k0 + cols < K
            xk = tl.load(x_ptr + k0 + cols, mask=k_ok, other=0.0)
            w = tl.load(w_ptrs + k0, mask=k_ok[None, :], other=0.0, eviction_policy="evict_first")
        acc += w.to(tl.float32) * xk.to(tl.float32)[None, :]
    y = tl.sum(acc, axis=1)
    if HAS_BIAS:
        y += tl.load(b_ptr + rows, mask=r_ok, other=0.0).to(tl.float32)
    tl.store(y_ptr + rows, y.to(y_ptr.dtype.element_ty), mask=r_ok)


def _check(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x as a contiguous ``[K]`` vector (raises on shapes the kernel does not take)."""
    n, k = weight.shape
    if x.shape[-1] != k:
        raise ValueError(f"x has {x.shape[-1]} inputs but the weight is [{n}, {k}]")
    if x.numel() != k:
        raise ValueError(f"the dense GEMV takes one row of x, got {x.numel() // max(k, 1)}")
    if weight.stride(1) != 1:
        raise ValueError("the weight must be [N, K] with contiguous rows")
    xv = x.reshape(k)
    return xv if xv.stride(0) == 1 else xv.contiguous()


def dense_gemv_triton(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                      config: DenseGemvConfig | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """``x [..., K]`` holding one row, ``weight [N, K]`` with contiguous rows -> ``[..., N]``."""
    n, k = weight.shape
    xv = _check(x, weight)
    y = out if out is not None else torch.empty(n, dtype=x.dtype, device=x.device)
    if y.numel() != n or y.dtype != x.dtype or not y.is_contiguous():
        raise ValueError(f"out must be a contiguous tensor of {n} {x.dtype} values")
    cfg = config or default_config()
    block_n, block_k, programs = effective(cfg, n, k)
    _dense_gemv_kernel[(programs,)](
        xv, weight, bias if bias is not None else y, y, n, k, weight.stride(0),
        HAS_BIAS=bias is not None, BLOCK_N=block_n, BLOCK_K=block_k, EVEN_K=k % block_k == 0,
        NUM_STAGES=cfg.num_stages, num_warps=cfg.num_warps)
    return y.reshape(*x.shape[:-1], n)


@torch.library.custom_op("sparsebench::dense_gemv", mutates_args=())
def _dense_gemv_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, block_n: int, block_k: int,
                   num_warps: int, num_stages: int) -> torch.Tensor:
    cfg = DenseGemvConfig(block_n=block_n, block_k=block_k, num_warps=num_warps, num_stages=num_stages)
    return dense_gemv_triton(x, weight, bias, config=cfg)


@_dense_gemv_op.register_fake
def _(x, weight, bias, block_n, block_k, num_warps, num_stages):
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


def dense_gemv_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                  config: DenseGemvConfig | None = None) -> torch.Tensor:
    """The same product as a registered op (``torch.ops.sparsebench.dense_gemv``): an opaque
    call that ``torch.compile`` keeps in its graph (no graph break, nothing fused into it)."""
    cfg = config or default_config()
    return _dense_gemv_op(x, weight, bias, cfg.block_n, cfg.block_k, cfg.num_warps, cfg.num_stages)
