"""Triton block-sparse causal prefill attention (FlashAttention-2 style forward).

Grid ``(query tiles, B * Hq)``, heaviest query tiles first (causal: later rows see more
blocks). A program holds ``tile_m`` query rows of one query block ``qb`` in registers and
walks only the key blocks listed for ``qb`` (``block_index[b, h, qb, :block_count]``, each in
``block_n / tile_n`` steps of ``tile_n`` keys) with an online softmax in fp32 (exp2, scale
folded in) and both products on tensor cores (``tl.dot``, fp32 accumulators).

The list ascends, so the key blocks that end before the query block starts come first and
need no mask at all (no causal mask, no bounds: they lie inside the sequence); only the last
few (the diagonal band, at most ``cdiv(block_m, block_n) + 1``, found by looking at the tail
of the list) take the causal mask and the bounds mask of a short last block. Two loops, so
the main one is branch-free and software-pipelined, including the index load that feeds the
K/V addresses. Running max starts at a large finite negative value, so a step whose keys are
all masked adds exactly nothing and a row that never sees a live key ends as zeros.

With ``sinks``/``window`` (``WINDOW``: a window shorter than ``L``) the steps before the
query block split further, by two counts taken from one scan of the list: the steps wholly
inside the sinks and those every row of the tile sees inside its window run unmasked; only
the steps straddling the window edge (and the diagonal band) take the token mask
``j < sinks or i - j < window``.

K/V tiles are read with plain pointer loads (any strides, last dim contiguous) or, with
``tma``, through host-made tensor descriptors over the ``[B * H * L, D]`` view of contiguous
inputs (Hopper TMA; rows past the end read as zero, rows of the next head that a short last
tile reaches are causally masked).
"""

from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

from ..launch import hopper_or_newer
from .config import BsaConfig, default_config
from .layout import cdiv, num_blocks

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
_NEG = tl.constexpr(-1.0e30)  # running-max start: finite, so fully masked steps never make NaN

__all__ = ["block_sparse_attention_triton", "launch_config"]


@triton.jit
def _load_tile(ptr, desc, base, desc_row, n0, offs_n, offs_d, stride_n, L,
               MASKED: tl.constexpr, TMA: tl.constexpr):
    """Rows ``n0 .. n0 + TILE`` of one head's [L, D] matrix (zeros past L when MASKED)."""
    if TMA:
        t = desc.load([desc_row + n0, 0])
    else:
        ptrs = ptr + base + (n0 + offs_n)[:, None] * stride_n + offs_d[None, :]
        if MASKED:
            t = tl.load(ptrs, mask=(n0 + offs_n)[:, None] < L, other=0.0)
        else:
            t = tl.load(ptrs)
    return t


@triton.jit
def _masked(acc, l_i, m_i, qk, v, keep, qk_scale, DOT_F32: tl.constexpr):
    """The online-softmax update of one step with the pairs outside ``keep`` left out."""
    qk = tl.where(keep, qk * qk_scale, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(qk, 1))
    p = tl.math.exp2(qk - m_new[:, None])
    return online_softmax_step(acc, l_i, m_i, m_new, p, v, DOT_F32)


@triton.jit
def online_softmax_step(acc, l_i, m_i, m_new, p, v, DOT_F32: tl.constexpr):
    alpha = tl.math.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None]
    if DOT_F32:
        acc = tl.dot(p, v.to(tl.float32), acc, input_precision="ieee")
    else:
        acc = tl.dot(p.to(v.dtype), v, acc)
    return acc, l_i, m_new


@triton.jit
def _step(acc, l_i, m_i, q, k, v, offs_m, n0, offs_n, qk_scale, sinks, window,
          CAUSAL: tl.constexpr, WIN: tl.constexpr, DOT_F32: tl.constexpr):
    """One online-softmax step over ``tile_n`` keys starting at ``n0``; ``CAUSAL``: mask
    ``j > i`` (and keys >= L for rows < L); ``WIN``: keep only ``j < sinks`` or ``i - j < window``."""
    if DOT_F32:  # the interpreter's bf16 dot is wrong; fp32 inputs need ieee, not tf32
        qk = tl.dot(q.to(tl.float32), tl.trans(k.to(tl.float32)), input_precision="ieee")
    else:
        qk = tl.dot(q, tl.trans(k))
    cols = (n0 + offs_n)[None, :]
    if CAUSAL:
        keep = offs_m[:, None] >= cols
        if WIN:
            keep = keep & ((cols < sinks) | (offs_m[:, None] - cols < window))
        acc, l_i, m_new = _masked(acc, l_i, m_i, qk, v, keep, qk_scale, DOT_F32)
    elif WIN:
        keep = (cols < sinks) | (offs_m[:, None] - cols < window)
        acc, l_i, m_new = _masked(acc, l_i, m_i, qk, v, keep, qk_scale, DOT_F32)
    else:
        m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
        p = tl.math.exp2(qk * qk_scale - m_new[:, None])
        acc, l_i, m_new = online_softmax_step(acc, l_i, m_i, m_new, p, v, DOT_F32)
    return acc, l_i, m_new


@triton.jit
def _walk(acc, l_i, m_i, q, row, lo, hi, k_ptr, k_desc, k_base, v_ptr, v_desc, v_base, kv_row,
          offs_m, offs_n, offs_d, s_kn, s_vn, L, qk_scale, sinks, window,
          SUB: tl.constexpr, BLOCK_N: tl.constexpr, TILE_N: tl.constexpr, PAD: tl.constexpr,
          CAUSAL: tl.constexpr, WIN: tl.constexpr, TMA: tl.constexpr, DOT_F32: tl.constexpr):
    """Steps ``lo .. hi`` of a query block's list (``SUB`` steps of ``TILE_N`` keys per listed
    block): load each K/V tile (``PAD``: keys past ``L`` read as zero) and take one ``_step``
    (``CAUSAL``/``WIN`` masks). One loop, inlined where it is called: each call site is its
    own software-pipelined loop, as when it was written out there."""
    for j in range(lo, hi):
        kb = tl.load(row + j // SUB)
        n0 = kb * BLOCK_N + (j % SUB) * TILE_N
        k = _load_tile(k_ptr, k_desc, k_base, kv_row, n0, offs_n, offs_d, s_kn, L, PAD, TMA)
        v = _load_tile(v_ptr, v_desc, v_base, kv_row, n0, offs_n, offs_d, s_vn, L, PAD, TMA)
        acc, l_i, m_i = _step(acc, l_i, m_i, q, k, v, offs_m, n0, offs_n, qk_scale, sinks, window,
                              CAUSAL, WIN, DOT_F32)
    return acc, l_i, m_i


@triton.jit
def _bsa_fwd_kernel(q_ptr, k_ptr, v_ptr, o_ptr, q_desc, k_desc, v_desc, idx_ptr, cnt_ptr,
                    L, H, HKV, GROUP, qk_scale, sinks, window,
                    s_qb, s_qh, s_qm, s_kb, s_kh, s_kn, s_vb, s_vh, s_vn, s_ob, s_oh, s_om,
                    s_ib, s_ih, s_iq, s_cb, s_ch, s_cq,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, TILE_M: tl.constexpr,
                    TILE_N: tl.constexpr, HEAD_D: tl.constexpr, NDIAG: tl.constexpr,
                    TMA: tl.constexpr, DOT_F32: tl.constexpr, WINDOW: tl.constexpr):
    tile = tl.num_programs(0) - 1 - tl.program_id(0)  # heaviest (last) query tiles first
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    hk = h // GROUP
    m0 = tile * TILE_M
    qb = m0 // BLOCK_M
    offs_m = m0 + tl.arange(0, TILE_M)
    offs_n = tl.arange(0, TILE_N)
    offs_d = tl.arange(0, HEAD_D)
    row_ok = offs_m[:, None] < L
    q_base = b.to(tl.int64) * s_qb + h.to(tl.int64) * s_qh
    k_base = b.to(tl.int64) * s_kb + hk.to(tl.int64) * s_kh
    v_base = b.to(tl.int64) * s_vb + hk.to(tl.int64) * s_vh
    kv_row = (b * HKV + hk) * L  # the head's first row in the [B * HKV * L, D] view (TMA)
    if TMA:
        q = q_desc.load([bh * L + m0, 0])
    else:
        q = tl.load(q_ptr + q_base + offs_m[:, None] * s_qm + offs_d[None, :], mask=row_ok, other=0.0)

    row = idx_ptr + b.to(tl.int64) * s_ib + h.to(tl.int64) * s_ih + qb.to(tl.int64) * s_iq
    cnt = tl.load(cnt_ptr + b.to(tl.int64) * s_cb + h.to(tl.int64) * s_ch + qb.to(tl.int64) * s_cq)
    # key blocks from first_band on reach into this query block: they are the list's tail
    first_band = (qb * BLOCK_M) // BLOCK_N
    n_full = cnt
    for t in tl.static_range(NDIAG):
        pos = cnt - 1 - t
        e = tl.load(row + tl.maximum(pos, 0))  # row[0] exists (max_k >= 1) even when cnt == 0
        n_full -= ((pos >= 0) & (e >= first_band)).to(tl.int32)

    m_i = tl.full([TILE_M], _NEG, dtype=tl.float32)
    l_i = tl.zeros([TILE_M], dtype=tl.float32)
    acc = tl.zeros([TILE_M, HEAD_D], dtype=tl.float32)
    SUB: tl.constexpr = BLOCK_N // TILE_N
    n_steps = n_full * SUB
    if WINDOW:
        # The steps before the query block split at two points, each condition holding on a
        # prefix of the ascending list: steps wholly inside the sinks (no mask), steps holding a
        # key the tile's last row sees past the window edge (window mask), steps every row of
        # the tile sees in its window (no mask). The list is scanned once for the two counts.
        hi_key = m0 + TILE_M - 1 - window  # steps starting at or before it reach past the window
        n_sink = n_full * 0
        n_edge = n_full * 0
        for t in range(0, n_full):
            kb0 = tl.load(row + t) * BLOCK_N
            d_s = sinks - kb0
            c_s = tl.where(d_s >= 0, d_s // TILE_N, 0)
            n_sink += tl.where(c_s > SUB, SUB, c_s)
            d_w = hi_key - kb0
            c_w = tl.where(d_w >= 0, d_w // TILE_N + 1, 0)
            n_edge += tl.where(c_w > SUB, SUB, c_w)
        n_edge = tl.maximum(n_sink, n_edge)
        acc, l_i, m_i = _walk(acc, l_i, m_i, q, row, 0, n_sink, k_ptr, k_desc, k_base, v_ptr, v_desc,
                              v_base, kv_row, offs_m, offs_n, offs_d, s_kn, s_vn, L, qk_scale, sinks, window,
                              SUB, BLOCK_N, TILE_N, False, False, False, TMA, DOT_F32)
        acc, l_i, m_i = _walk(acc, l_i, m_i, q, row, n_sink, n_edge, k_ptr, k_desc, k_base, v_ptr, v_desc,
                              v_base, kv_row, offs_m, offs_n, offs_d, s_kn, s_vn, L, qk_scale, sinks, window,
                              SUB, BLOCK_N, TILE_N, False, False, True, TMA, DOT_F32)
        acc, l_i, m_i = _walk(acc, l_i, m_i, q, row, n_edge, n_steps, k_ptr, k_desc, k_base, v_ptr, v_desc,
                              v_base, kv_row, offs_m, offs_n, offs_d, s_kn, s_vn, L, qk_scale, sinks, window,
                              SUB, BLOCK_N, TILE_N, False, False, False, TMA, DOT_F32)
        # the diagonal band: causal and window masks, keys past L read as zero
        acc, l_i, m_i = _walk(acc, l_i, m_i, q, row, n_steps, cnt * SUB, k_ptr, k_desc, k_base, v_ptr, v_desc,
                              v_base, kv_row, offs_m, offs_n, offs_d, s_kn, s_vn, L, qk_scale, sinks, window,
                              SUB, BLOCK_N, TILE_N, True, True, True, TMA, DOT_F32)
    else:
        # key blocks wholly before the query block: no mask
        acc, l_i, m_i = _walk(acc, l_i, m_i, q, row, 0, n_steps, k_ptr, k_desc, k_base, v_ptr, v_desc,
                              v_base, kv_row, offs_m, offs_n, offs_d, s_kn, s_vn, L, qk_scale, sinks, window,
                              SUB, BLOCK_N, TILE_N, False, False, False, TMA, DOT_F32)
        # the diagonal band: causal mask, keys past L read as zero
        acc, l_i, m_i = _walk(acc, l_i, m_i, q, row, n_steps, cnt * SUB, k_ptr, k_desc, k_base, v_ptr, v_desc,
                              v_base, kv_row, offs_m, offs_n, offs_d, s_kn, s_vn, L, qk_scale, sinks, window,
                              SUB, BLOCK_N, TILE_N, True, True, False, TMA, DOT_F32)

    out = acc / tl.where(l_i > 0.0, l_i, 1.0)[:, None]  # no live key: acc is 0, the row 0
    o_base = b.to(tl.int64) * s_ob + h.to(tl.int64) * s_oh
    tl.store(o_ptr + o_base + offs_m[:, None] * s_om + offs_d[None, :], out.to(o_ptr.dtype.element_ty), mask=row_ok)


def _pattern(t: torch.Tensor, B: int, H: int, nq: int, lists: bool) -> torch.Tensor:
    """``t`` as int32 with leading shape [B, H, nq] (broadcast dims get stride 0, no copy)."""
    name = "block_index" if lists else "block_count"
    if t.dtype != torch.int32:
        t = t.to(torch.int32)
    if t.dim() < (2 if lists else 1) or t.shape[-2 if lists else -1] != nq:
        raise ValueError(f"{name} {tuple(t.shape)} does not have {nq} query blocks")
    shape = (B, H, nq, t.shape[-1]) if lists else (B, H, nq)
    try:
        return t.expand(*shape)
    except RuntimeError:
        raise ValueError(f"{name} {tuple(t.shape)} does not broadcast to {shape}") from None


def launch_config(head_dim: int, block_m: int, block_n: int, config: BsaConfig | None = None,
                  dtype: torch.dtype = torch.bfloat16, device: torch.device | None = None) -> BsaConfig:
    """The config a call would run: ``config`` or the head dim's default (for the device's
    generation: Hopper's tiles need its shared memory), fitted to the blocks."""
    hopper = device is None or device.type != "cuda" or hopper_or_newer(device)
    cfg = config or default_config(head_dim, fp32=dtype == torch.float32, hopper=hopper, block_m=block_m)
    return cfg.fit(block_m, block_n)


def _has_tma(device: torch.device) -> bool:
    """Tensor descriptors: Hopper or newer (and the interpreter, which emulates them)."""
    return INTERPRET if device.type != "cuda" else hopper_or_newer(device)


def _desc(t: torch.Tensor, rows: int, block: list[int]):
    from triton.tools.tensor_descriptor import TensorDescriptor

    return TensorDescriptor.from_tensor(t.view(rows, t.shape[-1]), block)


def block_sparse_attention_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_index: torch.Tensor,
                                  block_count: torch.Tensor, *, block_m: int, block_n: int,
                                  scale: float | None = None, out: torch.Tensor | None = None,
                                  config: BsaConfig | None = None, sinks: int = 0,
                                  window: int | None = None) -> torch.Tensor:
    """``q [B, Hq, L, D]``, ``k``/``v [B, Hkv, L, D]``, lists from ``mask_to_index`` -> ``[B, Hq, L, D]``;
    ``sinks``/``window``: the token-level sink + sliding-window mask (``window=None``: none)."""
    B, H, L, D = q.shape
    hkv = k.shape[1]
    if k.shape != (B, hkv, L, D) or v.shape != k.shape or H % hkv:
        raise ValueError(f"q {tuple(q.shape)} and k/v {tuple(k.shape)}/{tuple(v.shape)} do not match (GQA needs Hq % Hkv == 0)")
    if not (k.dtype == v.dtype == q.dtype) or q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"q, k, v must share one of fp16/bf16/fp32, got {q.dtype}, {k.dtype}, {v.dtype}")
    if D < 16 or D & (D - 1) or D > 256:
        raise ValueError(f"the Triton kernel takes head dims 16..256, powers of two; got {D}")
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    nq, _ = num_blocks(L, block_m, block_n)
    idx = _pattern(block_index, B, H, nq, True)
    cnt = _pattern(block_count, B, H, nq, False)
    cfg = launch_config(D, block_m, block_n, config, q.dtype, q.device)
    if out is None:
        out = torch.empty_like(q, memory_format=torch.contiguous_format)
    elif out.shape != q.shape or out.dtype != q.dtype or out.stride(-1) != 1:
        raise ValueError(f"out must be a {tuple(q.shape)} {q.dtype} tensor with a contiguous last dim")
    scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
    tma = cfg.tma and all(t.is_contiguous() and t.data_ptr() % 16 == 0 for t in (q, k, v)) and _has_tma(q.device)
    if tma:
        q_desc = _desc(q, B * H * L, [cfg.tile_m, D])
        k_desc = _desc(k, B * hkv * L, [cfg.tile_n, D])
        v_desc = _desc(v, B * hkv * L, [cfg.tile_n, D])
    else:
        q_desc, k_desc, v_desc = q, k, v
    ndiag = block_m // block_n if block_m % block_n == 0 else block_m // block_n + 2
    # a window reaching every key (or sinks covering them) masks nothing: the plain kernel runs
    windowed = window is not None and window < L and sinks < L
    grid = (cdiv(L, cfg.tile_m), B * H)
    _bsa_fwd_kernel[grid](
        q, k, v, out, q_desc, k_desc, v_desc, idx, cnt,
        L, H, hkv, H // hkv, scale * 1.4426950408889634, int(sinks) if windowed else 0,
        int(window) if windowed else 0,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1), out.stride(2),
        idx.stride(0), idx.stride(1), idx.stride(2), cnt.stride(0), cnt.stride(1), cnt.stride(2),
        BLOCK_M=block_m, BLOCK_N=block_n, TILE_M=cfg.tile_m, TILE_N=cfg.tile_n, HEAD_D=D, NDIAG=ndiag,
        TMA=tma, DOT_F32=INTERPRET or q.dtype == torch.float32, WINDOW=windowed,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    return out
