"""Triton int4 weight-only matmul: codes dequantized in registers, fp32 accumulation.

Per K-tile (which never straddles a quantization group, since the tile width divides
the group size) the kernel multiplies the raw codes on tensor cores and applies the
group's affine map once per output instead of once per weight:

    sum_k x_k (q_nk s_n + o_n) = s_n * sum_k x_k q_nk + o_n * sum_k x_k

The packed byte holds columns 2j (low nibble) and 2j+1 (high nibble), so the even and odd
columns of ``x`` are loaded separately and two half-width dots are summed: no
interleaving of unpacked codes is needed. Small M (decode) splits K across programs so
the whole GPU streams the weight; partial sums then meet in an fp32 buffer by atomics.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def _configs() -> list[triton.Config]:
    if INTERPRET:
        return [triton.Config({"BM": 16, "BN": 16, "BK": 32, "SPLIT_K": 2}, num_warps=4, num_stages=1)]
    out = []
    for bm, bn, bk, split, warps, stages in [
        # decode (M <= 16): narrow N tiles and split-K so >= 1 wave of programs streams the weight
        (16, 32, 128, 1, 4, 4), (16, 32, 128, 2, 4, 4), (16, 64, 128, 2, 4, 4), (16, 32, 128, 4, 4, 4),
        (16, 64, 128, 4, 4, 3), (16, 128, 128, 4, 4, 3), (16, 32, 64, 4, 4, 4), (16, 64, 64, 8, 4, 4),
        (16, 32, 32, 4, 4, 4), (16, 64, 32, 8, 4, 4), (16, 128, 64, 2, 4, 4),
        # medium / prefill
        (32, 64, 64, 1, 4, 4), (64, 64, 64, 1, 4, 4), (64, 128, 64, 1, 4, 4), (128, 128, 64, 1, 8, 3),
        (128, 256, 64, 1, 8, 3), (64, 128, 128, 1, 4, 3), (128, 128, 128, 1, 8, 3), (128, 128, 32, 1, 4, 4),
        (64, 128, 32, 1, 4, 4),
    ]:
        out.append(triton.Config({"BM": bm, "BN": bn, "BK": bk, "SPLIT_K": split}, num_warps=warps,
                                 num_stages=stages))
    return out


def _prune(configs: list[triton.Config], named_args: dict, **_: object) -> list[triton.Config]:
    group, m = named_args["G"], named_args["M"]
    keep = [c for c in configs if group % c.kwargs["BK"] == 0
            and (c.kwargs["BM"] == 16) == (m <= 16)]
    return keep or [c for c in configs if group % c.kwargs["BK"] == 0]


@triton.autotune(configs=_configs(), key=["M_BUCKET", "N", "K", "G"], prune_configs_by={"early_config_prune": _prune},
                 reset_to_zero=["y_ptr"])
@triton.jit
def _int4_mm(x_ptr, q_ptr, s_ptr, o_ptr, y_ptr, M, N, K, G, M_BUCKET,
             sxm, sxk, sqn, sqk, ssn, ssg, sym, syn,
             BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, SPLIT_K: tl.constexpr,
             ATOMIC: tl.constexpr, DOT_F32: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_k = tl.program_id(2)
    rm = pid_m * BM + tl.arange(0, BM)
    rn = pid_n * BN + tl.arange(0, BN)
    rh = tl.arange(0, BK // 2)
    m_ok = rm < M
    n_ok = rn < N
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    k_tiles = tl.cdiv(K, BK)
    per_split = tl.cdiv(k_tiles, SPLIT_K)
    for i in range(0, per_split):  # a counted loop from 0: Triton software-pipelines it
        t = pid_k * per_split + i
        kh = t * (BK // 2) + rh  # packed byte column (beyond K // 2 when t >= k_tiles: masked)
        h_ok = kh < K // 2
        qb = tl.load(q_ptr + rn[:, None] * sqn + kh[None, :] * sqk, mask=n_ok[:, None] & h_ok[None, :], other=0)
        xe = tl.load(x_ptr + rm[:, None] * sxm + (2 * kh)[None, :] * sxk, mask=m_ok[:, None] & h_ok[None, :], other=0.0)
        xo = tl.load(x_ptr + rm[:, None] * sxm + (2 * kh + 1)[None, :] * sxk, mask=m_ok[:, None] & h_ok[None, :],
                     other=0.0)
        if DOT_F32:  # the interpreter mis-converts uint8 -> bf16 and computes bf16 dots wrongly
            part = tl.dot(xe.to(tl.float32), tl.trans((qb & 0x0F).to(tl.float32)), input_precision="ieee") + \
                tl.dot(xo.to(tl.float32), tl.trans((qb >> 4).to(tl.float32)), input_precision="ieee")
        else:  # codes 0..15 are exact in every float type
            part = tl.dot(xe, tl.trans((qb & 0x0F).to(xe.dtype))) + tl.dot(xo, tl.trans((qb >> 4).to(xe.dtype)))
        xsum = tl.sum(xe.to(tl.float32), axis=1) + tl.sum(xo.to(tl.float32), axis=1)
        g = (t * BK) // G
        s = tl.load(s_ptr + rn * ssn + g * ssg, mask=n_ok, other=0.0).to(tl.float32)
        o = tl.load(o_ptr + rn * ssn + g * ssg, mask=n_ok, other=0.0).to(tl.float32)
        acc += part * s[None, :] + xsum[:, None] * o[None, :]
    ptrs = y_ptr + rm[:, None] * sym + rn[None, :] * syn
    ok = m_ok[:, None] & n_ok[None, :]
    if ATOMIC:
        tl.atomic_add(ptrs, acc, mask=ok)
    else:
        tl.store(ptrs, acc.to(y_ptr.dtype.element_ty), mask=ok)


def _gemv_configs() -> list[triton.Config]:
    if INTERPRET:
        return [triton.Config({"BN": 16, "BKH": 16}, num_warps=4, num_stages=1)]
    return [triton.Config({"BN": bn, "BKH": bkh}, num_warps=w, num_stages=st)
            for bn in (4, 8, 16, 32) for bkh in (16, 32, 64, 128) for w, st in ((2, 4), (4, 4), (4, 2), (8, 3))
            if bn * bkh >= 256]


def _prune_gemv(configs: list[triton.Config], named_args: dict, **_: object) -> list[triton.Config]:
    group = named_args["G"]
    keep = [c for c in configs if group % (2 * c.kwargs["BKH"]) == 0]
    if not keep:
        raise ValueError(f"no int4 GEMV tile fits group size {group}")
    return keep


@triton.autotune(configs=_gemv_configs(), key=["N", "K", "G"], prune_configs_by={"early_config_prune": _prune_gemv})
@triton.jit
def _int4_gemv(x_ptr, q_ptr, s_ptr, o_ptr, y_ptr, N, K, G, sqn, ssn,
               BN: tl.constexpr, BKH: tl.constexpr):
    """M == 1 (decode at batch 1): each program streams BN packed rows over the whole of K,
    dequantizes in registers and keeps per-element partial sums; the sum over K happens
    once after the loop, and the result is stored directly (no atomics, no second pass)."""
    pid_n = tl.program_id(0)
    rn = pid_n * BN + tl.arange(0, BN)
    rh = tl.arange(0, BKH)
    n_ok = rn < N
    acc = tl.zeros((BN, BKH), dtype=tl.float32)
    for t in range(0, tl.cdiv(K, 2 * BKH)):
        kh = t * BKH + rh
        h_ok = kh < K // 2
        qb = tl.load(q_ptr + rn[:, None] * sqn + kh[None, :], mask=n_ok[:, None] & h_ok[None, :], other=0)
        xe = tl.load(x_ptr + 2 * kh, mask=h_ok, other=0.0).to(tl.float32)
        xo = tl.load(x_ptr + 2 * kh + 1, mask=h_ok, other=0.0).to(tl.float32)
        g = (t * 2 * BKH) // G  # the tile lies in one group: BKH divides G / 2
        s = tl.load(s_ptr + rn * ssn + g, mask=n_ok, other=0.0).to(tl.float32)[:, None]
        o = tl.load(o_ptr + rn * ssn + g, mask=n_ok, other=0.0).to(tl.float32)[:, None]
        acc += ((qb & 0x0F).to(tl.float32) * s + o) * xe[None, :] + ((qb >> 4).to(tl.float32) * s + o) * xo[None, :]
    y = tl.sum(acc, axis=1)
    tl.store(y_ptr + rn, y.to(y_ptr.dtype.element_ty), mask=n_ok)


@triton.jit
def _int4_dequant(q_ptr, s_ptr, o_ptr, w_ptr, N, K, G, sqn, ssn, swn, BN: tl.constexpr, BKH: tl.constexpr):
    """Packed codes -> dense [N, K] weight in the output dtype (for large M: then cuBLAS)."""
    rn = tl.program_id(0) * BN + tl.arange(0, BN)
    kh = tl.program_id(1) * BKH + tl.arange(0, BKH)
    ok = (rn < N)[:, None] & (kh < K // 2)[None, :]
    qb = tl.load(q_ptr + rn[:, None] * sqn + kh[None, :], mask=ok, other=0)
    g = (2 * kh) // G  # both columns of a byte are in one group (G is even)
    s = tl.load(s_ptr + rn[:, None] * ssn + g[None, :], mask=ok, other=0.0).to(tl.float32)
    o = tl.load(o_ptr + rn[:, None] * ssn + g[None, :], mask=ok, other=0.0).to(tl.float32)
    lo = (qb & 0x0F).to(tl.float32) * s + o
    hi = (qb >> 4).to(tl.float32) * s + o
    base = w_ptr + rn[:, None] * swn + 2 * kh[None, :]
    tl.store(base, lo.to(w_ptr.dtype.element_ty), mask=ok)
    tl.store(base + 1, hi.to(w_ptr.dtype.element_ty), mask=ok)


def dequantize(qweight: torch.Tensor, scales: torch.Tensor, offsets: torch.Tensor, group: int,
               dtype: torch.dtype) -> torch.Tensor:
    n, k = qweight.shape[0], qweight.shape[1] * 2
    w = torch.empty((n, k), device=qweight.device, dtype=dtype)
    bn, bkh = 32, 64
    _int4_dequant[(triton.cdiv(n, bn), triton.cdiv(k // 2, bkh))](
        qweight, scales, offsets, w, n, k, group, qweight.stride(0), scales.stride(0), w.stride(0), BN=bn, BKH=bkh)
    return w


# Above this many rows of x, dequantizing the weight once and calling cuBLAS beats decoding
# it in every output tile (the dequantized copy is transient: it is freed after the call).
DEQUANT_MIN_M = 64


def int4_matmul(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, offsets: torch.Tensor,
                group: int) -> torch.Tensor:
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    qweight, scales, offsets = qweight.contiguous(), scales.contiguous(), offsets.contiguous()
    m, k = x2.shape
    n = qweight.shape[0]
    if m >= DEQUANT_MIN_M and x.dtype != torch.float32:
        w = dequantize(qweight, scales, offsets, group, x.dtype)
        return torch.nn.functional.linear(x, w)
    if m == 1:
        y1 = torch.empty((n,), device=x.device, dtype=x.dtype)
        x1 = x2.reshape(-1).contiguous()

        def grid1(meta: dict) -> tuple[int]:
            return (triton.cdiv(n, meta["BN"]),)

        _int4_gemv[grid1](x1, qweight, scales, offsets, y1, n, k, group, qweight.stride(0), scales.stride(0))
        return y1.reshape(*lead, n)
    bucket = min(triton.next_power_of_2(m), 4096)
    # Split-K configs accumulate with atomics into fp32; the choice is made by the autotuner,
    # so the output is always fp32 first (its cost is one small cast at decode sizes).
    y = torch.zeros((m, n), device=x.device, dtype=torch.float32)

    def grid(meta: dict) -> tuple[int, int, int]:
        return (triton.cdiv(m, meta["BM"]), triton.cdiv(n, meta["BN"]), meta["SPLIT_K"])

    _int4_mm[grid](x2, qweight, scales, offsets, y, m, n, k, group, bucket,
                   x2.stride(0), x2.stride(1), qweight.stride(0), qweight.stride(1),
                   scales.stride(0), scales.stride(1), y.stride(0), y.stride(1), ATOMIC=True,
                   DOT_F32=INTERPRET or x.dtype == torch.float32)
    return y.to(x.dtype).reshape(*lead, n)
