"""Triton kernels of Quest page scoring and of decode attention over selected KV pages.

``_page_score_kernel``: grid ``(page blocks, B * Hkv)``; a program reads the min/max rows
of ``BLOCK_P`` pages of one KV head once (through the page table) and scores them for all
query heads of that KV head (``per="kv"``: their sum). The top-k itself is ``torch.topk``.

``_decode_kernel`` (flash-decoding): grid ``(splits, rows)`` where a row is the query heads
that share one KV head and one selection row (``per="kv"`` or dense: all ``Hq / Hkv`` heads
of a group, padded to 16 rows for ``tl.dot``; ``per="head"``: one head). A split walks its
share of the row's selected pages, ``block_n / page_size`` pages per step, gathering each
page's contiguous ``[page_size, D]`` K and V tiles through the page table; tokens past the
sequence length (the last page's tail) or of ``-1`` entries are masked on load and in the
scores. Online softmax in fp32 (exp2); the running max starts finite, so an empty split
leaves (m, l, acc) = (-1e30, 0, 0). With one split the program writes the output; else each
writes its partial (unnormalised acc, m, l) and the splits of a row are merged in split order
(deterministic), by ``_combine_kernel`` or, with ``fused_merge``, by the row's last split to
finish (one launch less). No host synchronisation: capturable in a CUDA graph.
"""

from __future__ import annotations

import dataclasses
import math
import os

import torch
import triton
import triton.language as tl

from ..block_sparse_attn.triton import online_softmax_step
from ..launch import arrival_counters, is_pow2, pdl, sm_count, workspace
from .config import DecodeConfig, SplitPlan, default_config, plan

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
_NEG = tl.constexpr(-1.0e30)

__all__ = ["launch_plan", "page_scores_triton", "topk_decode_attention_triton"]


@triton.jit
def _page_score_kernel(q_ptr, mn_ptr, mx_ptr, pt_ptr, sl_ptr, out_ptr, max_pages, HKV, GROUP,
                       s_qb, s_qh, s_mp, s_mh, s_mx_p, s_mx_h, s_ptb, s_ob, s_oh,
                       PAGE: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_G: tl.constexpr,
                       HEAD_D: tl.constexpr, BLOCK_D: tl.constexpr, PER_KV: tl.constexpr):
    pid_p = tl.program_id(0)
    pid_r = tl.program_id(1)
    b = pid_r // HKV
    hk = pid_r % HKV
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_g = tl.arange(0, BLOCK_G)
    g_ok = offs_g < GROUP
    seq_len = tl.load(sl_ptr + b)
    n_pages = (seq_len + PAGE - 1) // PAGE
    p_ok = offs_p < n_pages
    phys = tl.load(pt_ptr + b.to(tl.int64) * s_ptb + offs_p, mask=p_ok, other=0).to(tl.int64)
    heads = hk * GROUP + offs_g
    score = tl.zeros([BLOCK_G, BLOCK_P], dtype=tl.float32)
    for d0 in tl.static_range(0, HEAD_D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        q = tl.load(q_ptr + b.to(tl.int64) * s_qb + heads[:, None] * s_qh + offs_d[None, :],
                    mask=g_ok[:, None], other=0.0).to(tl.float32)
        mn = tl.load(mn_ptr + phys[:, None] * s_mp + hk * s_mh + offs_d[None, :], mask=p_ok[:, None],
                     other=0.0).to(tl.float32)
        mx = tl.load(mx_ptr + phys[:, None] * s_mx_p + hk * s_mx_h + offs_d[None, :], mask=p_ok[:, None],
                     other=0.0).to(tl.float32)
        qe = q[:, None, :]
        score += tl.sum(tl.maximum(qe * mn[None, :, :], qe * mx[None, :, :]), axis=2)
    if PER_KV:
        s = tl.sum(tl.where(g_ok[:, None], score, 0.0), axis=0)
        s = tl.where(p_ok, s, float("-inf"))
        s = tl.where(offs_p == n_pages - 1, float("inf"), s)
        tl.store(out_ptr + b.to(tl.int64) * s_ob + hk * s_oh + offs_p, s, mask=offs_p < max_pages)
    else:
        s = tl.where(p_ok[None, :], score, float("-inf"))
        s = tl.where((offs_p == n_pages - 1)[None, :], float("inf"), s)
        tl.store(out_ptr + b.to(tl.int64) * s_ob + heads[:, None] * s_oh + offs_p[None, :], s,
                 mask=g_ok[:, None] & (offs_p < max_pages)[None, :])


@triton.jit
def _decode_kernel(q_ptr, k_ptr, v_ptr, pt_ptr, sl_ptr, sel_ptr, o_ptr, po_ptr, pml_ptr, cnt_ptr,
                   qk_scale, HQ, GROUP, ROWS, SEL_DIV, n_entries, per_split, n_splits, mask_len,
                   s_qb, s_qh, s_kp, s_kh, s_kt, s_vp, s_vh, s_vt, s_ptb, s_sb, s_sh, s_ob, s_oh, s_lb,
                   PAGE: tl.constexpr, PPS: tl.constexpr, BLOCK_H: tl.constexpr, HEAD_D: tl.constexpr,
                   DENSE: tl.constexpr, MERGE: tl.constexpr, DOT_F32: tl.constexpr, PDL: tl.constexpr,
                   LEN_MODE: tl.constexpr):
    """MERGE: 0 one split (the program writes the output), 1 partials merged by ``_combine_kernel``,
    2 partials merged by the row's last split to finish (an integer atomic counts arrivals).
    LEN_MODE: what ``sl_ptr`` holds per sequence (stride ``s_lb``), read here so that no kernel
    of its own turns it into lengths: 0 the lengths, 1 a ``[mask_len]`` 0/1 row whose count of
    ones is the length, 2 the position of the new token (length = position + 1)."""
    if PDL:  # everything read here (q, the cache, the lengths) is written by earlier kernels
        tl.extra.cuda.gdc_launch_dependents()
        tl.extra.cuda.gdc_wait()
    pid_s = tl.program_id(0)
    pid_r = tl.program_id(1)
    rows_per_b = HQ // ROWS
    b = pid_r // rows_per_b
    head0 = (pid_r % rows_per_b) * ROWS
    hk = head0 // GROUP
    srow = head0 // SEL_DIV
    offs_h = tl.arange(0, BLOCK_H)
    offs_d = tl.arange(0, HEAD_D)
    h_ok = offs_h < ROWS
    b64 = b.to(tl.int64)
    q = tl.load(q_ptr + b64 * s_qb + (head0 + offs_h)[:, None] * s_qh + offs_d[None, :], mask=h_ok[:, None], other=0.0)
    if LEN_MODE == 1:
        seq_len = tl.zeros([], dtype=tl.int32)
        for l0 in range(0, mask_len, 1024):
            offs_l = l0 + tl.arange(0, 1024)
            row = tl.load(sl_ptr + b64 * s_lb + offs_l, mask=offs_l < mask_len, other=0)
            seq_len += tl.sum(row.to(tl.int32), axis=0)
    elif LEN_MODE == 2:
        seq_len = tl.load(sl_ptr + b64 * s_lb).to(tl.int32) + 1
    else:
        seq_len = tl.load(sl_ptr + b)
    lo = pid_s * per_split
    hi = tl.minimum(lo + per_split, n_entries)
    if DENSE:
        hi = tl.minimum(hi, (seq_len + PAGE - 1) // PAGE)
    BLOCK_N: tl.constexpr = PPS * PAGE
    tok = tl.arange(0, BLOCK_N)
    tp = tok // PAGE  # page of the step each key slot belongs to
    slot = tok % PAGE
    m_i = tl.full([BLOCK_H], _NEG, dtype=tl.float32)
    l_i = tl.zeros([BLOCK_H], dtype=tl.float32)
    acc = tl.zeros([BLOCK_H, HEAD_D], dtype=tl.float32)
    for e0 in range(lo, hi, PPS):
        ent = e0 + tp
        e_ok = ent < hi
        if DENSE:
            j = ent
        else:
            j = tl.load(sel_ptr + b64 * s_sb + srow * s_sh + ent, mask=e_ok, other=-1)
        valid = e_ok & (j >= 0) & (j * PAGE + slot < seq_len)
        phys = tl.load(pt_ptr + b64 * s_ptb + j, mask=valid, other=0).to(tl.int64)
        k = tl.load(k_ptr + (phys * s_kp + hk * s_kh + slot * s_kt)[:, None] + offs_d[None, :],
                    mask=valid[:, None], other=0.0)
        v = tl.load(v_ptr + (phys * s_vp + hk * s_vh + slot * s_vt)[:, None] + offs_d[None, :],
                    mask=valid[:, None], other=0.0)
        if DOT_F32:
            qk = tl.dot(q.to(tl.float32), tl.trans(k.to(tl.float32)), input_precision="ieee")
        else:
            qk = tl.dot(q, tl.trans(k))
        qk = tl.where(valid[None, :], qk * qk_scale, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        p = tl.math.exp2(qk - m_new[:, None])
        acc, l_i, m_i = online_softmax_step(acc, l_i, m_i, m_new, p, v, DOT_F32)
    if MERGE == 0:
        out = acc / tl.where(l_i > 0.0, l_i, 1.0)[:, None]
        tl.store(o_ptr + b64 * s_ob + (head0 + offs_h)[:, None] * s_oh + offs_d[None, :],
                 out.to(o_ptr.dtype.element_ty), mask=h_ok[:, None])
    else:
        part = pid_r.to(tl.int64) * n_splits + pid_s
        tl.store(po_ptr + (part * BLOCK_H + offs_h[:, None]) * HEAD_D + offs_d[None, :], acc)
        tl.store(pml_ptr + part * 2 * BLOCK_H + offs_h, m_i)
        tl.store(pml_ptr + part * 2 * BLOCK_H + BLOCK_H + offs_h, l_i)
        if MERGE == 2:
            tl.debug_barrier()  # every thread's partial is written before the arrival is counted
            arrived = tl.atomic_add(cnt_ptr + pid_r, 1, sem="acq_rel", scope="gpu")
            if arrived == n_splits - 1:  # the row's last split: every partial is visible
                _merge_splits(po_ptr, pml_ptr, o_ptr, pid_r, b, head0, ROWS, n_splits, s_ob, s_oh,
                              BLOCK_H, HEAD_D)
                tl.atomic_xchg(cnt_ptr + pid_r, 0)  # ready for the next call (or graph replay)


@triton.jit
def _combine_kernel(po_ptr, pml_ptr, o_ptr, HQ, ROWS, n_splits, s_ob, s_oh,
                    BLOCK_H: tl.constexpr, HEAD_D: tl.constexpr, PDL: tl.constexpr):
    """One program per row: ``_merge_splits``."""
    if PDL:
        tl.extra.cuda.gdc_launch_dependents()
        tl.extra.cuda.gdc_wait()
    pid_r = tl.program_id(0)
    rows_per_b = HQ // ROWS
    _merge_splits(po_ptr, pml_ptr, o_ptr, pid_r, pid_r // rows_per_b, (pid_r % rows_per_b) * ROWS, ROWS,
                  n_splits, s_ob, s_oh, BLOCK_H, HEAD_D)


@triton.jit
def _merge_splits(po_ptr, pml_ptr, o_ptr, pid_r, b, head0, ROWS, n_splits, s_ob, s_oh,
                  BLOCK_H: tl.constexpr, HEAD_D: tl.constexpr):
    """Merge one row's split partials in split order: out = sum 2^(m_s - M) acc_s / sum 2^(m_s - M) l_s."""
    offs_h = tl.arange(0, BLOCK_H)
    offs_d = tl.arange(0, HEAD_D)
    m_tot = tl.full([BLOCK_H], _NEG, dtype=tl.float32)
    l_tot = tl.zeros([BLOCK_H], dtype=tl.float32)
    acc = tl.zeros([BLOCK_H, HEAD_D], dtype=tl.float32)
    for s in range(0, n_splits):
        part = pid_r.to(tl.int64) * n_splits + s
        m_s = tl.load(pml_ptr + part * 2 * BLOCK_H + offs_h)
        l_s = tl.load(pml_ptr + part * 2 * BLOCK_H + BLOCK_H + offs_h)
        a_s = tl.load(po_ptr + (part * BLOCK_H + offs_h[:, None]) * HEAD_D + offs_d[None, :])
        m_new = tl.maximum(m_tot, m_s)
        w_old = tl.math.exp2(m_tot - m_new)
        w_new = tl.math.exp2(m_s - m_new)
        acc = acc * w_old[:, None] + a_s * w_new[:, None]
        l_tot = l_tot * w_old + l_s * w_new
        m_tot = m_new
    out = acc / tl.where(l_tot > 0.0, l_tot, 1.0)[:, None]
    tl.store(o_ptr + b.to(tl.int64) * s_ob + (head0 + offs_h)[:, None] * s_oh + offs_d[None, :],
             out.to(o_ptr.dtype.element_ty), mask=(offs_h < ROWS)[:, None])


def page_scores_triton(q: torch.Tensor, kmin: torch.Tensor, kmax: torch.Tensor, page_table: torch.Tensor,
                       seq_lens: torch.Tensor, page_size: int, per: str = "head") -> torch.Tensor:
    """Quest page scores as in ``ref.page_scores_ref`` (fp32 ``[B, Hq or Hkv, max_pages]``)."""
    B, hq, D = q.shape
    hkv = kmin.shape[1]
    if hq % hkv or kmin.shape != kmax.shape or kmin.shape[2] != D or not is_pow2(D):
        raise ValueError(f"q {tuple(q.shape)} and metadata {tuple(kmin.shape)} do not match (pow2 head dim)")
    if per not in ("head", "kv"):
        raise ValueError(f"per must be 'head' or 'kv', got {per!r}")
    q = q if q.stride(-1) == 1 else q.contiguous()
    kmin = kmin if kmin.stride(-1) == 1 else kmin.contiguous()
    kmax = kmax if kmax.stride(-1) == 1 else kmax.contiguous()
    pt = page_table if page_table.dtype == torch.int32 else page_table.to(torch.int32)
    sl = seq_lens.to(device=q.device, dtype=torch.int32)
    max_pages = pt.shape[1]
    g = hq // hkv
    out = torch.empty((B, hkv if per == "kv" else hq, max_pages), dtype=torch.float32, device=q.device)
    block_g = max(2, triton.next_power_of_2(g))
    block_p = 32 if block_g <= 4 else 16
    block_d = min(D, 32)
    grid = (triton.cdiv(max_pages, block_p), B * hkv)
    _page_score_kernel[grid](q, kmin, kmax, pt, sl, out, max_pages, hkv, g,
                             q.stride(0), q.stride(1), kmin.stride(0), kmin.stride(1), kmax.stride(0),
                             kmax.stride(1), pt.stride(0), out.stride(0), out.stride(1),
                             PAGE=page_size, BLOCK_P=block_p, BLOCK_G=block_g, HEAD_D=D, BLOCK_D=block_d,
                             PER_KV=per == "kv", num_warps=4)
    return out


def _rows(hq: int, hkv: int, S: int) -> tuple[int, int]:
    """(query heads per program, heads per selection row) for ``S`` selection rows."""
    if hq % S:
        raise ValueError(f"{S} selection rows do not divide {hq} query heads")
    g, sel_div = hq // hkv, hq // S
    if g % sel_div and sel_div % g:
        raise ValueError(f"selection rows of {sel_div} heads do not fit KV groups of {g} heads")
    return min(g, sel_div), sel_div


def launch_plan(q: torch.Tensor, n_entries: int, page_size: int, selection_rows: int, hkv: int,
                config: DecodeConfig | None = None) -> tuple[SplitPlan, int, int]:
    """(split plan, heads per program, heads per selection row) that a call would use."""
    B, hq, _ = q.shape
    rows, sel_div = _rows(hq, hkv, selection_rows)
    cfg = config or default_config()
    return plan(n_entries, B * hq // rows, page_size, sm_count(q.device), cfg), rows, sel_div


def topk_decode_attention_triton(q: torch.Tensor, k_pages: torch.Tensor, v_pages: torch.Tensor,
                                 page_table: torch.Tensor, seq_lens: torch.Tensor,
                                 selected: torch.Tensor | None = None, *, scale: float | None = None,
                                 out: torch.Tensor | None = None, config: DecodeConfig | None = None,
                                 positions: bool = False) -> torch.Tensor:
    """``q [B, Hq, D]`` over the selected pages (None: all) -> ``[B, Hq, D]``. ``seq_lens``: see
    ``topk_decode_attention``; ``positions``: it holds each new token's position instead."""
    B, hq, D = q.shape
    P, hkv, ps, Dk = k_pages.shape
    if v_pages.shape != k_pages.shape or Dk != D or hq % hkv:
        raise ValueError(f"q {tuple(q.shape)}, k_pages {tuple(k_pages.shape)}, v_pages {tuple(v_pages.shape)} do not match")
    if not (q.dtype == k_pages.dtype == v_pages.dtype) or q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"q and the pages must share one of fp16/bf16/fp32, got {q.dtype}, {k_pages.dtype}")
    if not is_pow2(D) or D < 16 or not is_pow2(ps):
        raise ValueError(f"head dim (>= 16) and page size must be powers of two, got {D}, {ps}")
    q = q if q.stride(-1) == 1 else q.contiguous()
    k_pages = k_pages if k_pages.stride(-1) == 1 else k_pages.contiguous()
    v_pages = v_pages if v_pages.stride(-1) == 1 else v_pages.contiguous()
    pt = page_table if page_table.dtype == torch.int32 else page_table.to(torch.int32)
    len_mode, mask_len, s_lb = 0, 0, 0
    if positions:  # [B] positions of the new tokens (any stride): length = position + 1
        if seq_lens.shape != (B,) or seq_lens.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"positions must be [{B}] int32/int64, got {tuple(seq_lens.shape)} {seq_lens.dtype}")
        sl, len_mode, s_lb = seq_lens, 2, seq_lens.stride(0)
    elif seq_lens.dtype == torch.bool:  # [B, L] rows whose count of True is each length
        if seq_lens.dim() != 2 or seq_lens.shape[0] != B:
            raise ValueError(f"seq_lens as a mask must be [{B}, L] bool, got {tuple(seq_lens.shape)}")
        sl = (seq_lens if seq_lens.stride(-1) == 1 else seq_lens.contiguous()).view(torch.uint8)
        len_mode, mask_len, s_lb = 1, sl.shape[1], sl.stride(0)
    else:
        sl = seq_lens.to(device=q.device, dtype=torch.int32)
    dense = selected is None
    if dense:
        sel, S, n_entries = pt, 1, pt.shape[1]
    else:
        sel = selected if selected.dtype == torch.int32 else selected.to(torch.int32)
        if sel.dim() != 3 or sel.shape[0] not in (1, B):
            raise ValueError(f"selected must be [B, S, k], got {tuple(sel.shape)}")
        S, n_entries = sel.shape[1], sel.shape[2]
        sel = sel.expand(B, S, n_entries)
    cfg = config or default_config()
    cfg_ps = cfg if cfg.block_n >= ps else dataclasses.replace(cfg, block_n=ps)
    p, rows, sel_div = launch_plan(q, n_entries, ps, S, hkv, cfg_ps)
    n_rows = B * hq // rows
    block_h = max(16, triton.next_power_of_2(rows))
    if out is None:
        out = torch.empty((B, hq, D), dtype=q.dtype, device=q.device)
    elif out.shape != (B, hq, D) or out.dtype != q.dtype or out.stride(-1) != 1:
        raise ValueError(f"out must be a [{B}, {hq}, {D}] {q.dtype} tensor with a contiguous last dim")
    merge = 0 if p.splits == 1 else 2 if cfg.fused_merge else 1
    if merge:
        po = workspace((n_rows * p.splits * block_h * D,), torch.float32, q.device)
        pml = workspace((n_rows * p.splits * 2 * block_h,), torch.float32, q.device)
    else:
        po = pml = out
    cnt = arrival_counters(q.device, n_rows) if merge == 2 else pml
    scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
    use_pdl = pdl(q.device)
    launch = {"launch_pdl": True} if use_pdl else {}
    _decode_kernel[(p.splits, n_rows)](
        q, k_pages, v_pages, pt, sl, sel, out, po, pml, cnt,
        scale * 1.4426950408889634, hq, hq // hkv, rows, sel_div, n_entries, p.per_split, p.splits,
        mask_len,
        q.stride(0), q.stride(1), k_pages.stride(0), k_pages.stride(1), k_pages.stride(2),
        v_pages.stride(0), v_pages.stride(1), v_pages.stride(2), pt.stride(0), sel.stride(0), sel.stride(1),
        out.stride(0), out.stride(1), s_lb,
        PAGE=ps, PPS=p.pages_per_step, BLOCK_H=block_h, HEAD_D=D, DENSE=dense, MERGE=merge,
        DOT_F32=INTERPRET or q.dtype == torch.float32, PDL=use_pdl, LEN_MODE=len_mode, num_warps=cfg.num_warps,
        num_stages=cfg.num_stages, **launch)
    if merge == 1:
        _combine_kernel[(n_rows,)](po, pml, out, hq, rows, p.splits, out.stride(0), out.stride(1),
                                   BLOCK_H=block_h, HEAD_D=D, PDL=use_pdl, num_warps=4, **launch)
    return out
