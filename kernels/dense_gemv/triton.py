"""Triton dense GEMV: one program per ``BLOCK_N`` weight rows, streaming them along K.

Each step loads a ``[BLOCK_N, BLOCK_K]`` tile of the weight (16-byte vectors along K, the
rows' contiguous direction) and multiplies it into an fp32 ``[BLOCK_N, BLOCK_K]``
accumulator, so the loop has no reduction in it; the rows are summed once at the end. The
loop is software-pipelined (``num_stages`` tiles in flight as asynchronous copies), which is
what keeps enough bytes in flight per SM for the weight stream to approach the bandwidth.
Rows past N are clamped to row 0 (read, never stored), so the weight loads need no row mask.

Launched with programmatic dependent launch (``kernels.launch.pdl``), a program loads its
first weight tile, lets the next kernel launch, and only then waits for the kernel before
it (which writes x): the weight stream starts while that kernel drains.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..launch import cdiv, pdl
from .config import DenseGemvConfig, default_config, effective

__all__ = ["dense_gemv_op", "dense_gemv_triton"]


@triton.jit
def _x_tile(x_ptr, g_ptr, ks, k_ok, EVEN: tl.constexpr, NORM: tl.constexpr):
    """x[ks] in fp32 (times the norm weight with NORM) and its squares (for the RMS)."""
    if EVEN:
        x = tl.load(x_ptr + ks).to(tl.float32)
    else:
        x = tl.load(x_ptr + ks, mask=k_ok, other=0.0).to(tl.float32)
    sq = x * x
    if NORM:
        if EVEN:
            x = x * tl.load(g_ptr + ks).to(tl.float32)
        else:
            x = x * tl.load(g_ptr + ks, mask=k_ok, other=0.0).to(tl.float32)
    return x, sq


@triton.jit
def _dense_gemv_kernel(x_ptr, w_ptr, b_ptr, g_ptr, y_ptr, N, K, stride_wn, eps,
                       HAS_BIAS: tl.constexpr, NORM: tl.constexpr, BLOCK_N: tl.constexpr,
                       BLOCK_K: tl.constexpr, EVEN_K: tl.constexpr, NUM_STAGES: tl.constexpr,
                       PDL: tl.constexpr, GLU: tl.constexpr):
    pid = tl.program_id(0)
    if GLU:  # tile row i: output pid * BLOCK_N / 2 + i // 2, its gate row (even i) or up row (odd i)
        i = tl.arange(0, BLOCK_N)
        outs = pid * (BLOCK_N // 2) + i // 2
        r_ok = outs < N // 2
        rows = outs + (i % 2) * (N // 2)
    else:
        rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
        r_ok = rows < N
    rows_safe = tl.where(r_ok, rows, 0)
    cols = tl.arange(0, BLOCK_K)
    w_ptrs = w_ptr + rows_safe.to(tl.int64)[:, None] * stride_wn + cols[None, :]
    ss = tl.zeros((BLOCK_K,), dtype=tl.float32)  # sum of x^2 (NORM), by column of the tile
    if PDL:  # first tile peeled: its weight load is issued before waiting for x's writer
        k_ok0 = cols < K
        w = tl.load(w_ptrs, mask=k_ok0[None, :], other=0.0, eviction_policy="evict_first")
        tl.extra.cuda.gdc_launch_dependents()
        tl.extra.cuda.gdc_wait()
        xk, sq = _x_tile(x_ptr, g_ptr, cols, k_ok0, False, NORM)
        acc = w.to(tl.float32) * xk[None, :]
        ss += sq
        k_start = BLOCK_K
    else:
        acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
        k_start = 0
    for k0 in tl.range(k_start, K, BLOCK_K, num_stages=NUM_STAGES):
        k_ok = k0 + cols < K
        xk, sq = _x_tile(x_ptr, g_ptr, k0 + cols, k_ok, EVEN_K, NORM)
        if EVEN_K:
            w = tl.load(w_ptrs + k0, eviction_policy="evict_first")
        else:
            w = tl.load(w_ptrs + k0, mask=k_ok[None, :], other=0.0, eviction_policy="evict_first")
        acc += w.to(tl.float32) * xk[None, :]
        ss += sq
    y = tl.sum(acc, axis=1)
    if NORM:  # W (g * x * r) = r * (W (g * x)), r = 1 / sqrt(mean(x^2) + eps): one scalar per call
        y = y * tl.math.rsqrt(tl.sum(ss, axis=0) / K + eps)
    if HAS_BIAS:
        y += tl.load(b_ptr + rows, mask=r_ok, other=0.0).to(tl.float32)
    if GLU:
        # silu(gate) * up rounded as the unfused step rounds it: each product to the output
        # dtype, the SiLU computed in fp32 and rounded, then the product of the two, rounded
        dt = y_ptr.dtype.element_ty
        gate, up = tl.split(tl.reshape(y.to(dt).to(tl.float32), (BLOCK_N // 2, 2)))
        act = (gate / (1.0 + tl.exp(-gate))).to(dt).to(tl.float32) * up
        o = pid * (BLOCK_N // 2) + tl.arange(0, BLOCK_N // 2)
        tl.store(y_ptr + o, act.to(dt), mask=o < N // 2)
    else:
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
                      config: DenseGemvConfig | None = None, out: torch.Tensor | None = None,
                      norm_weight: torch.Tensor | None = None, eps: float = 1e-6,
                      glu: bool = False) -> torch.Tensor:
    """``x [..., K]`` holding one row, ``weight [N, K]`` with contiguous rows -> ``[..., N]``.
    With ``norm_weight`` (``[K]``) x goes through an RMSNorm first: ``W (g * x / rms(x)) + b``,
    ``rms(x) = sqrt(mean(x^2) + eps)``, computed on the fly (no normalised copy of x).
    With ``glu`` the weight is a fused gate/up pair (gate rows first) and the result is
    ``silu(gate) * up``, ``[..., N / 2]`` (``ref.dense_gemv_swiglu_ref``): each program
    computes matching gate and up rows, so the activation costs no kernel of its own."""
    n, k = weight.shape
    xv = _check(x, weight)
    if glu and n % 2:
        raise ValueError(f"a fused gate/up weight has an even number of rows, got {n}")
    n_out = n // 2 if glu else n
    y = out if out is not None else torch.empty(n_out, dtype=x.dtype, device=x.device)
    if y.numel() != n_out or y.dtype != x.dtype or not y.is_contiguous():
        raise ValueError(f"out must be a contiguous tensor of {n_out} {x.dtype} values")
    g = y
    if norm_weight is not None:
        if norm_weight.shape != (k,):
            raise ValueError(f"norm_weight must be [{k}], got {tuple(norm_weight.shape)}")
        g = norm_weight if norm_weight.is_contiguous() else norm_weight.contiguous()
    cfg = config or default_config()
    block_n, block_k, programs = effective(cfg, n, k)
    if glu:  # a program's tile: block_n / 2 gate rows and their up rows
        block_n = max(block_n, 2)
        programs = cdiv(n_out, block_n // 2)
    use_pdl = pdl(x.device)
    _dense_gemv_kernel[(programs,)](
        xv, weight, bias if bias is not None else y, g, y, n, k, weight.stride(0), float(eps),
        HAS_BIAS=bias is not None, NORM=norm_weight is not None, BLOCK_N=block_n, BLOCK_K=block_k,
        EVEN_K=k % block_k == 0, NUM_STAGES=cfg.num_stages, PDL=use_pdl, GLU=glu, num_warps=cfg.num_warps,
        **({"launch_pdl": True} if use_pdl else {}))
    return y.reshape(*x.shape[:-1], n_out)


@torch.library.custom_op("sparsebench::dense_gemv", mutates_args=())
def _dense_gemv_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                   norm_weight: torch.Tensor | None, eps: float, block_n: int, block_k: int,
                   num_warps: int, num_stages: int, glu: bool) -> torch.Tensor:
    cfg = DenseGemvConfig(block_n=block_n, block_k=block_k, num_warps=num_warps, num_stages=num_stages)
    return dense_gemv_triton(x, weight, bias, config=cfg, norm_weight=norm_weight, eps=eps, glu=glu)


@_dense_gemv_op.register_fake
def _(x, weight, bias, norm_weight, eps, block_n, block_k, num_warps, num_stages, glu):
    return x.new_empty((*x.shape[:-1], weight.shape[0] // 2 if glu else weight.shape[0]))


def dense_gemv_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                  config: DenseGemvConfig | None = None, norm_weight: torch.Tensor | None = None,
                  eps: float = 1e-6, glu: bool = False) -> torch.Tensor:
    """The same product as a registered op (``torch.ops.sparsebench.dense_gemv``): an opaque
    call that ``torch.compile`` keeps in its graph (no graph break, nothing fused into it)."""
    cfg = config or default_config()
    return _dense_gemv_op(x, weight, bias, norm_weight, float(eps), cfg.block_n, cfg.block_k,
                          cfg.num_warps, cfg.num_stages, glu)
