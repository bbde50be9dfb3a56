"""Triton kernels of the int4 weight-only matmul; ``triton.py`` launches them.

Every kernel reads the packed weight as int32 words (``[N, K/8]``, the same bytes as the
stored ``[N, K/2]`` uint8): word ``w`` of a row holds columns ``8w .. 8w+7``, column
``8w+i`` in bits ``4i .. 4i+3``, so one 16-byte load brings 32 codes.

Codes become floats without a conversion instruction (those run at a quarter of the
FMA rate and would cap a GEMV below the memory bandwidth): OR-ing a code into the
mantissa of a fixed float gives ``BIAS + q`` exactly (``0x4300`` is bf16 128.0, ``0x6400``
fp16 1024.0, ``0x4B000000`` fp32 2^23). With the 16-bit form one AND-OR turns a word
shifted by ``4j`` into the pair (nibble ``j``, nibble ``j+4``) already packed as the two
halves of a 32-bit register, which is how a tensor-core operand holds two neighbouring
``k``: ``_mma_pairs`` orders its ``k`` to match, and loads ``x`` in the same order.

Split-K programs reduce deterministically: each writes its fp32 partial tile, counts
itself in on a per-tile lock, and the last one in sums the partials in split order, writes
the output and resets the lock for the next call (no atomics on the data, no second launch).
"""

from __future__ import annotations

import triton
import triton.language as tl

F32_MAGIC = 0x4B000000  # fp32 2^23: OR a code into the low mantissa bits -> 2^23 + q


@triton.jit
def _dot(a, b, acc, DOT_F32: tl.constexpr):
    """``acc + a @ b``; in fp32 (exact IEEE) under the interpreter or for fp32 inputs."""
    if DOT_F32:  # (if/else, not an early return: Triton 3.6 compiles the code after one)
        out = tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    else:
        out = tl.dot(a, b, acc)
    return out


@triton.jit
def _code_pairs(w, J: tl.constexpr, MAGIC: tl.constexpr, CODE: tl.constexpr, BN: tl.constexpr, BKW: tl.constexpr,
                ASM: tl.constexpr):
    """Words ``[BN, BKW]`` -> ``[BN, 2 BKW]`` of ``BIAS + q``: column ``2w + h`` is nibble
    ``J + 4h`` of word ``w`` (both halves come from one AND-OR of the shifted word)."""
    ws = w >> (4 * J)
    if ASM:  # one LOP3 (Triton's AND then OR of two immediates compiles to two)
        if MAGIC == 0x64006400:
            p = tl.inline_asm_elementwise("lop3.b32 $0, $1, 0x000F000F, 0x64006400, 0xEA;", "=r,r", [ws],
                                          dtype=tl.int32, is_pure=True, pack=1)
        else:
            p = tl.inline_asm_elementwise("lop3.b32 $0, $1, 0x000F000F, 0x43004300, 0xEA;", "=r,r", [ws],
                                          dtype=tl.int32, is_pure=True, pack=1)
    else:
        p = (ws & 0x000F000F) | MAGIC
    lo = p.to(tl.int16).to(CODE, bitcast=True)
    hi = (p >> 16).to(tl.int16).to(CODE, bitcast=True)
    return tl.reshape(tl.join(lo, hi), (BN, 2 * BKW))


@triton.jit
def _x_quarters(x, BM: tl.constexpr, BKW: tl.constexpr):
    """``x [BM, 8 BKW]`` -> the four ``[2 BKW, BM]`` operands matching ``_code_pairs``:
    in quarter ``j``, row ``2w + h`` is column ``8w + 4h + j``."""
    x5 = tl.reshape(x, (BM, BKW, 2, 2, 2))  # column 8w + 4h + 2 j1 + j0 -> (w, h, j1, j0)
    even, odd = tl.split(x5)  # j0
    x0, x2 = tl.split(even)  # j1
    x1, x3 = tl.split(odd)
    return (tl.trans(tl.reshape(x0, (BM, 2 * BKW))), tl.trans(tl.reshape(x1, (BM, 2 * BKW))),
            tl.trans(tl.reshape(x2, (BM, 2 * BKW))), tl.trans(tl.reshape(x3, (BM, 2 * BKW))))


@triton.jit
def _nibble(w, w12, NIB: tl.constexpr, F32M):
    """fp32 ``q * 16**e`` of nibble NIB of each word, with ``e = NIB`` for NIB < 5 and ``NIB - 3``
    above (from ``w12 = w >> 12``): masking in place saves the shift; the caller scales its
    multiplier by ``16**-e`` (exact: a power of two)."""
    if NIB < 5:
        b = (w & (15 << (4 * NIB))) | F32M
    else:
        b = (w12 & (15 << (4 * (NIB - 3)))) | F32M
    return b.to(tl.float32, bitcast=True) - 8388608.0


@triton.jit
def _unscale(NIB: tl.constexpr):
    """``16**-e`` for nibble NIB (see ``_nibble``)."""
    if NIB < 5:
        r: tl.constexpr = 1.0 / (1 << (4 * NIB))
    else:
        r: tl.constexpr = 1.0 / (1 << (4 * (NIB - 3)))
    return r


@triton.jit
def _dequant_tile(w, s, o, F32M, OUT: tl.constexpr, BN: tl.constexpr, BKW: tl.constexpr):
    """Words ``[BN, BKW]`` and the tile's per-row scale/offset ``[BN]`` -> weights
    ``[BN, 8 BKW]`` (``q * s + o`` rounded to OUT) in column order ``8w + i``."""
    w12 = w >> 12
    v0 = (_nibble(w, w12, 0, F32M) * (s * _unscale(0))[:, None] + o[:, None]).to(OUT)
    v1 = (_nibble(w, w12, 1, F32M) * (s * _unscale(1))[:, None] + o[:, None]).to(OUT)
    v2 = (_nibble(w, w12, 2, F32M) * (s * _unscale(2))[:, None] + o[:, None]).to(OUT)
    v3 = (_nibble(w, w12, 3, F32M) * (s * _unscale(3))[:, None] + o[:, None]).to(OUT)
    v4 = (_nibble(w, w12, 4, F32M) * (s * _unscale(4))[:, None] + o[:, None]).to(OUT)
    v5 = (_nibble(w, w12, 5, F32M) * (s * _unscale(5))[:, None] + o[:, None]).to(OUT)
    v6 = (_nibble(w, w12, 6, F32M) * (s * _unscale(6))[:, None] + o[:, None]).to(OUT)
    v7 = (_nibble(w, w12, 7, F32M) * (s * _unscale(7))[:, None] + o[:, None]).to(OUT)
    # join innermost-last: index (w, b2, b1, b0) is column 8w + 4 b2 + 2 b1 + b0
    even = tl.join(tl.join(v0, v4), tl.join(v2, v6))
    odd = tl.join(tl.join(v1, v5), tl.join(v3, v7))
    return tl.reshape(tl.join(even, odd), (BN, 8 * BKW))


@triton.jit
def _x_eighths(xv, BKW: tl.constexpr):
    """``x [BKW, 8]`` -> its eight columns ``[BKW]``, column i pre-scaled by ``16**-e``."""
    even, odd = tl.split(tl.reshape(xv, (BKW, 2, 2, 2)))  # (w, b2, b1, b0): split b0
    e0, e1 = tl.split(even)
    o0, o1 = tl.split(odd)
    x0, x4 = tl.split(e0)
    x2, x6 = tl.split(e1)
    x1, x5 = tl.split(o0)
    x3, x7 = tl.split(o1)
    return (x0 * _unscale(0), x1 * _unscale(1), x2 * _unscale(2), x3 * _unscale(3),
            x4 * _unscale(4), x5 * _unscale(5), x6 * _unscale(6), x7 * _unscale(7))


@triton.jit
def _finish(acc, y_ptr, part_ptr, lock_ptr, slot, rn, rm, N, M, sym, REDUCE: tl.constexpr, TRANS: tl.constexpr):
    """Store an fp32 tile (``[BN, BM]`` when TRANS, else ``[BM, BN]``) of ``y [M, N]``; under
    split-K the last program of the tile (counted on lock ``slot``) sums all partials in
    split order (deterministic) and resets the lock."""
    if TRANS:
        offs = rm[None, :] * N + rn[:, None]
        yoffs = rm[None, :] * sym + rn[:, None]
        ok = (rm < M)[None, :] & (rn < N)[:, None]
    else:
        offs = rm[:, None] * N + rn[None, :]
        yoffs = rm[:, None] * sym + rn[None, :]
        ok = (rm < M)[:, None] & (rn < N)[None, :]
    if REDUCE:
        split = tl.num_programs(2)
        tl.store(part_ptr + tl.program_id(2) * M * N + offs, acc, mask=ok)
        tl.debug_barrier()  # every thread's partial is written before the lock is taken
        lock = lock_ptr + slot
        if tl.atomic_add(lock, 1, sem="acq_rel", scope="gpu") == split - 1:
            tot = tl.zeros(acc.shape, dtype=tl.float32)
            for s in range(0, split):
                tot += tl.load(part_ptr + s * M * N + offs, mask=ok, other=0.0, cache_modifier=".cg")
            tl.store(y_ptr + yoffs, tot.to(y_ptr.dtype.element_ty), mask=ok)
            tl.atomic_xchg(lock, 0)
    else:
        tl.store(y_ptr + yoffs, acc.to(y_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _pairs_update(acc, w, x0, x1, x2, x3, xs, s, c, MAGIC: tl.constexpr, CODE: tl.constexpr, BH: tl.constexpr,
                  BM: tl.constexpr, BKW: tl.constexpr, DOT_F32: tl.constexpr, ASM: tl.constexpr):
    """One K-tile of one 64-row block: ``acc + s * D + c * X`` with ``D`` the four pair dots."""
    d = tl.zeros((BH, BM), dtype=tl.float32)
    d = _dot(_code_pairs(w, 0, MAGIC, CODE, BH, BKW, ASM), x0, d, DOT_F32)
    d = _dot(_code_pairs(w, 1, MAGIC, CODE, BH, BKW, ASM), x1, d, DOT_F32)
    d = _dot(_code_pairs(w, 2, MAGIC, CODE, BH, BKW, ASM), x2, d, DOT_F32)
    d = _dot(_code_pairs(w, 3, MAGIC, CODE, BH, BKW, ASM), x3, d, DOT_F32)
    acc += s[:, None] * d  # two FMAs per output, not FMUL + FFMA + FADD
    acc += c[:, None] * xs
    return acc


@triton.jit
def _words(q_ptr, rows, t, K, sqn, BKW: tl.constexpr, EVEN_K: tl.constexpr):
    ptrs = q_ptr + rows[:, None] * sqn + (t * BKW + tl.arange(0, BKW))[None, :]
    if EVEN_K:
        w = tl.load(ptrs)
    else:
        w = tl.load(ptrs, mask=(t * BKW + tl.arange(0, BKW) < K // 8)[None, :], other=0)
    return w


@triton.jit
def _group_map(s_ptr, o_ptr, rows, g, ssn, BIAS):
    """(scale, offset - BIAS * scale) of group g for ``rows``, in fp32."""
    s = tl.load(s_ptr + rows * ssn + g).to(tl.float32)
    o = tl.load(o_ptr + rows * ssn + g).to(tl.float32)
    return s, o - BIAS * s


@triton.jit
def _block_step(acc, q_ptr, s_ptr, o_ptr, rows, t, g, K, sqn, ssn, BIAS, x0, x1, x2, x3, xs, MAGIC: tl.constexpr,
                CODE: tl.constexpr, BH: tl.constexpr, BM: tl.constexpr, BKW: tl.constexpr, EVEN_K: tl.constexpr,
                DOT_F32: tl.constexpr, ASM: tl.constexpr):
    """One K-tile of one block of BH weight rows."""
    w = _words(q_ptr, rows, t, K, sqn, BKW, EVEN_K)
    s, c = _group_map(s_ptr, o_ptr, rows, g, ssn, BIAS)
    return _pairs_update(acc, w, x0, x1, x2, x3, xs, s, c, MAGIC, CODE, BH, BM, BKW, DOT_F32, ASM)


@triton.jit(do_not_specialize=["M", "PER_SPLIT"])
def _mma_pairs(x_ptr, q_ptr, s_ptr, o_ptr, y_ptr, part_ptr, lock_ptr, M, N, K, G: tl.constexpr, sxm, sqn, ssn, sym,
               BIAS, PER_SPLIT, MAGIC: tl.constexpr, BH: tl.constexpr, BLOCKS: tl.constexpr, BM: tl.constexpr,
               BK: tl.constexpr, CODE: tl.constexpr, EVEN_K: tl.constexpr, REDUCE: tl.constexpr,
               DOT_F32: tl.constexpr, ASM: tl.constexpr):
    """Decode-sized M on tensor cores with the weight as the left operand (``y^T = W x^T``:
    its rows fill the 64-row MMA, the few tokens its narrow side). Codes enter the MMA as
    ``BIAS + q`` straight from registers; per K-tile (inside one group) the group's map is
    applied to the tile's sums, ``s * (D - BIAS X) + o X``, where ``X = sum x`` comes from
    one more MMA against ones (cheaper than a cross-thread reduction). A program runs
    BLOCKS (1, 2 or 4) blocks of BH rows: they share the loads and shuffles of ``x`` and ``X``."""
    BKW: tl.constexpr = BK // 8
    r0 = tl.program_id(0) * (BH * BLOCKS) + tl.arange(0, BH)
    rm = tl.program_id(1) * BM + tl.arange(0, BM)
    m_ok = rm < M
    rk = tl.arange(0, BK)
    ones = tl.full((BH, BK), 1.0, CODE)
    acc0 = tl.zeros((BH, BM), dtype=tl.float32)
    acc1 = tl.zeros((BH, BM), dtype=tl.float32)
    acc2 = tl.zeros((BH, BM), dtype=tl.float32)
    acc3 = tl.zeros((BH, BM), dtype=tl.float32)
    t0 = tl.program_id(2) * PER_SPLIT
    for i in range(0, PER_SPLIT):
        t = t0 + i
        x_ptrs = x_ptr + rm[:, None] * sxm + (t * BK + rk)[None, :]
        if EVEN_K:
            xt = tl.load(x_ptrs, mask=m_ok[:, None], other=0.0)
        else:
            xt = tl.load(x_ptrs, mask=m_ok[:, None] & (t * BK + rk < K)[None, :], other=0.0)
        x0, x1, x2, x3 = _x_quarters(xt, BM, BKW)
        xs = _dot(ones, tl.trans(xt), tl.zeros((BH, BM), dtype=tl.float32), DOT_F32)
        g = (t * BK) // G  # BK divides G: the tile lies in one group
        # clamped rows: unmasked, vectorised loads (the stores are masked)
        acc0 = _block_step(acc0, q_ptr, s_ptr, o_ptr, tl.minimum(r0, N - 1), t, g, K, sqn, ssn, BIAS,
                           x0, x1, x2, x3, xs, MAGIC, CODE, BH, BM, BKW, EVEN_K, DOT_F32, ASM)
        if BLOCKS >= 2:
            acc1 = _block_step(acc1, q_ptr, s_ptr, o_ptr, tl.minimum(r0 + BH, N - 1), t, g, K, sqn, ssn, BIAS,
                               x0, x1, x2, x3, xs, MAGIC, CODE, BH, BM, BKW, EVEN_K, DOT_F32, ASM)
        if BLOCKS == 4:
            acc2 = _block_step(acc2, q_ptr, s_ptr, o_ptr, tl.minimum(r0 + 2 * BH, N - 1), t, g, K, sqn, ssn, BIAS,
                               x0, x1, x2, x3, xs, MAGIC, CODE, BH, BM, BKW, EVEN_K, DOT_F32, ASM)
            acc3 = _block_step(acc3, q_ptr, s_ptr, o_ptr, tl.minimum(r0 + 3 * BH, N - 1), t, g, K, sqn, ssn, BIAS,
                               x0, x1, x2, x3, xs, MAGIC, CODE, BH, BM, BKW, EVEN_K, DOT_F32, ASM)
    slot = (tl.program_id(0) + tl.program_id(1) * tl.num_programs(0)) * BLOCKS
    _finish(acc0, y_ptr, part_ptr, lock_ptr, slot, r0, rm, N, M, sym, REDUCE, True)
    if BLOCKS >= 2:
        _finish(acc1, y_ptr, part_ptr, lock_ptr, slot + 1, r0 + BH, rm, N, M, sym, REDUCE, True)
    if BLOCKS == 4:
        _finish(acc2, y_ptr, part_ptr, lock_ptr, slot + 2, r0 + 2 * BH, rm, N, M, sym, REDUCE, True)
        _finish(acc3, y_ptr, part_ptr, lock_ptr, slot + 3, r0 + 3 * BH, rm, N, M, sym, REDUCE, True)


@triton.jit(do_not_specialize=["M", "PER_SPLIT"])
def _mma_fold(x_ptr, q_ptr, s_ptr, o_ptr, y_ptr, part_ptr, lock_ptr, M, N, K, G: tl.constexpr, sxm, sqn, ssn, sym,
              F32M, PER_SPLIT, BN: tl.constexpr, BM: tl.constexpr, BK: tl.constexpr, SWAP: tl.constexpr,
              EVEN_K: tl.constexpr, REDUCE: tl.constexpr, DOT_F32: tl.constexpr):
    """Prefill-sized M (and groups too small for ``_mma_pairs``): each weight tile is
    dequantized in registers, ``q * s + o`` per weight in fp32 then rounded to the
    activation dtype, and multiplied on tensor cores; its cost is shared by BM tokens.
    SWAP puts the weight on the left (register operand, ``x`` streamed from shared
    memory) instead of the right."""
    BKW: tl.constexpr = BK // 8
    rn = tl.program_id(0) * BN + tl.arange(0, BN)
    rn_ld = tl.minimum(rn, N - 1)
    rm = tl.program_id(1) * BM + tl.arange(0, BM)
    m_ok = rm < M
    rw = tl.arange(0, BKW)
    rk = tl.arange(0, BK)
    if SWAP:
        acc = tl.zeros((BN, BM), dtype=tl.float32)
    else:
        acc = tl.zeros((BM, BN), dtype=tl.float32)
    t0 = tl.program_id(2) * PER_SPLIT
    for i in range(0, PER_SPLIT):
        t = t0 + i
        q_ptrs = q_ptr + rn_ld[:, None] * sqn + (t * BKW + rw)[None, :]
        x_ptrs = x_ptr + rm[:, None] * sxm + (t * BK + rk)[None, :]
        if EVEN_K:
            w = tl.load(q_ptrs)
            xt = tl.load(x_ptrs, mask=m_ok[:, None], other=0.0)
        else:
            w = tl.load(q_ptrs, mask=(t * BKW + rw < K // 8)[None, :], other=0)
            xt = tl.load(x_ptrs, mask=m_ok[:, None] & (t * BK + rk < K)[None, :], other=0.0)
        g = (t * BK) // G
        s = tl.load(s_ptr + rn_ld * ssn + g).to(tl.float32)
        o = tl.load(o_ptr + rn_ld * ssn + g).to(tl.float32)
        a = _dequant_tile(w, s, o, F32M, x_ptr.dtype.element_ty, BN, BKW)
        if SWAP:
            acc = _dot(a, tl.trans(xt), acc, DOT_F32)
        else:
            acc = _dot(xt, tl.trans(a), acc, DOT_F32)
    _finish(acc, y_ptr, part_ptr, lock_ptr, tl.program_id(0) + tl.program_id(1) * tl.num_programs(0), rn, rm, N,
            M, sym, REDUCE, SWAP)


@triton.jit(do_not_specialize=["PER_SPLIT"])
def _gemv(x_ptr, q_ptr, s_ptr, o_ptr, y_ptr, part_ptr, lock_ptr, N, K, G: tl.constexpr, sqn, ssn, F32M, PER_SPLIT,
          BN: tl.constexpr, BK: tl.constexpr, EVEN_K: tl.constexpr, REDUCE: tl.constexpr):
    """M == 1 on CUDA cores: 16-byte code loads, ``x`` loaded contiguously as ``[BK/8, 8]``
    and split in registers, per word ``s * sum(q x) + o * sum(x)`` (about three
    instructions a weight); the sum over K happens once, after the loop."""
    BKW: tl.constexpr = BK // 8
    rn = tl.program_id(0) * BN + tl.arange(0, BN)
    rn_ld = tl.minimum(rn, N - 1)
    rw = tl.arange(0, BKW)
    ri = tl.arange(0, 8)
    acc = tl.zeros((BN, BKW), dtype=tl.float32)
    t0 = tl.program_id(2) * PER_SPLIT
    for i in range(0, PER_SPLIT):
        t = t0 + i
        q_ptrs = q_ptr + rn_ld[:, None] * sqn + (t * BKW + rw)[None, :]
        x_offs = t * BK + rw[:, None] * 8 + ri[None, :]
        if EVEN_K:
            w = tl.load(q_ptrs)
            xv = tl.load(x_ptr + x_offs).to(tl.float32)
        else:
            w = tl.load(q_ptrs, mask=(t * BKW + rw < K // 8)[None, :], other=0)
            xv = tl.load(x_ptr + x_offs, mask=x_offs < K, other=0.0).to(tl.float32)
        x0, x1, x2, x3, x4, x5, x6, x7 = _x_eighths(xv, BKW)
        w12 = w >> 12
        qx = _nibble(w, w12, 0, F32M) * x0[None, :]
        qx += _nibble(w, w12, 1, F32M) * x1[None, :]
        qx += _nibble(w, w12, 2, F32M) * x2[None, :]
        qx += _nibble(w, w12, 3, F32M) * x3[None, :]
        qx += _nibble(w, w12, 4, F32M) * x4[None, :]
        qx += _nibble(w, w12, 5, F32M) * x5[None, :]
        qx += _nibble(w, w12, 6, F32M) * x6[None, :]
        qx += _nibble(w, w12, 7, F32M) * x7[None, :]
        xs = tl.sum(xv, axis=1)  # sum of the word's eight x (unscaled)
        g = (t * BK) // G
        s = tl.load(s_ptr + rn_ld * ssn + g).to(tl.float32)
        o = tl.load(o_ptr + rn_ld * ssn + g).to(tl.float32)
        acc += s[:, None] * qx
        acc += o[:, None] * xs[None, :]
    y = tl.sum(acc, axis=1)
    rm = tl.arange(0, 1)
    _finish(y[None, :], y_ptr, part_ptr, lock_ptr, tl.program_id(0), rn, rm, N, 1, N, REDUCE, False)


@triton.jit
def _dequant(q_ptr, s_ptr, o_ptr, w_ptr, N, K, G: tl.constexpr, sqn, ssn, swn, F32M, BN: tl.constexpr, BK: tl.constexpr,
             EVEN_K: tl.constexpr):
    """Packed codes -> dense ``[N, K]`` weight in the activation dtype (then cuBLAS): 16-byte
    code loads and whole contiguous rows of BK outputs per store."""
    BKW: tl.constexpr = BK // 8
    rn = tl.program_id(0) * BN + tl.arange(0, BN)
    rn_ld = tl.minimum(rn, N - 1)
    t = tl.program_id(1)
    rw = tl.arange(0, BKW)
    rk = t * BK + tl.arange(0, BK)
    q_ptrs = q_ptr + rn_ld[:, None] * sqn + (t * BKW + rw)[None, :]
    if EVEN_K:
        w = tl.load(q_ptrs)
    else:
        w = tl.load(q_ptrs, mask=(t * BKW + rw < K // 8)[None, :], other=0)
    g = (t * BK) // G
    s = tl.load(s_ptr + rn_ld * ssn + g).to(tl.float32)
    o = tl.load(o_ptr + rn_ld * ssn + g).to(tl.float32)
    out = _dequant_tile(w, s, o, F32M, w_ptr.dtype.element_ty, BN, BKW)
    tl.store(w_ptr + rn[:, None] * swn + rk[None, :], out, mask=(rn < N)[:, None] & (rk < K)[None, :])


# ---- hgemv: M = 1 in packed fp16x2 arithmetic ------------------------------------------
#
# bf16 x, but the arithmetic in fp16x2: its 10-bit mantissa holds a nibble at bits 0-3 and
# one at bits 4-7 (``0x6400`` = 1024.0: ``1024 + q`` and ``1024 + 16 q``), so a word needs one
# shift for its four pairs where bf16 needs three, and its 11-bit precision keeps a 16-term
# chain near bf16 rounding of the result (a bf16 chain was 1.6% off). One FMA per pair turns
# either form into the centred, scaled code ``(q - 8) / 64`` exactly. Range: partial sums
# stay below 65504 for |x| up to 32768; x must be finite in fp16 (|x| < 65504).


@triton.jit
def _lo_f32(v):
    """fp32 of the low bf16 half of each int32 (exact: a bf16 is the top of an fp32)."""
    return (v << 16).to(tl.float32, bitcast=True)


@triton.jit
def _hi_f32(v):
    """fp32 of the high bf16 half of each int32."""
    return (v & -65536).to(tl.float32, bitcast=True)


@triton.jit
def _f16_lo(v):
    return v.to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)


@triton.jit
def _f16_hi(v):
    return (v >> 16).to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)


@triton.jit
def _f16_pair(lo, hi, ASM: tl.constexpr):
    """fp16x2 (lo, hi) of two fp32 (one F2FP)."""
    if ASM:
        p = tl.inline_asm_elementwise("cvt.rn.f16x2.f32 $0, $2, $1;", "=r,r,r", [lo, hi], dtype=tl.int32,
                                      is_pure=True, pack=1)
    else:
        p = ((lo.to(tl.float16).to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF)
             | (hi.to(tl.float16).to(tl.int16, bitcast=True).to(tl.int32) << 16))
    return p


@triton.jit
def _f16_round(v):
    return v.to(tl.float16).to(tl.float32)


@triton.jit
def _code(w, SHIFT: tl.constexpr):
    """fp32 ``(q - 8) / 64`` of the nibble at bit SHIFT (the fp16 path's code scale)."""
    return (((w >> SHIFT) & 15) - 8).to(tl.float32) * (1.0 / 64.0)


@triton.jit
def _pairs_dot_emulated(w, p0, p1, p2, p3, acc):
    """What the asm of ``_pairs_dot`` computes, in fp32 rounded to fp16 after every
    multiply-add (the interpreter cannot run PTX)."""
    lo = _f16_lo(acc)
    hi = _f16_hi(acc)
    lo = _f16_round(_code(w, 0) * _f16_lo(p0) + lo)
    hi = _f16_round(_code(w, 16) * _f16_hi(p0) + hi)
    lo = _f16_round(_code(w, 4) * _f16_lo(p1) + lo)
    hi = _f16_round(_code(w, 20) * _f16_hi(p1) + hi)
    lo = _f16_round(_code(w, 8) * _f16_lo(p2) + lo)
    hi = _f16_round(_code(w, 24) * _f16_hi(p2) + hi)
    lo = _f16_round(_code(w, 12) * _f16_lo(p3) + lo)
    hi = _f16_round(_code(w, 28) * _f16_hi(p3) + hi)
    return _f16_pair(lo, hi, False)


@triton.jit
def _pairs_dot(w, p0, p1, p2, p3, acc, ASM: tl.constexpr):
    """fp16x2 ``acc + sum_j c_j * p_j`` over the 8 codes of word w, ``c_j`` the pair of
    nibbles (j, j + 4) as ``(q - 8) / 64``: per pair one LOP3, one FMA that removes the magic
    (``1024 + q`` or ``1024 + 16 q``) and one FMA with x; one shift a word (13 instructions
    for 8 weights, against about 27 in fp32)."""
    if ASM:
        out = tl.inline_asm_elementwise(
            """{
            .reg .b32 t, q, a, b, c, d;
            mov.b32 a, 0x24002400;
            mov.b32 b, 0xCC08CC08;
            mov.b32 c, 0x14001400;
            mov.b32 d, 0xBC80BC80;
            lop3.b32 q, $1, 0x000F000F, 0x64006400, 0xEA;
            fma.rn.f16x2 q, q, a, b;
            fma.rn.f16x2 $0, q, $2, $6;
            lop3.b32 q, $1, 0x00F000F0, 0x64006400, 0xEA;
            fma.rn.f16x2 q, q, c, d;
            fma.rn.f16x2 $0, q, $3, $0;
            shr.u32 t, $1, 8;
            lop3.b32 q, t, 0x000F000F, 0x64006400, 0xEA;
            fma.rn.f16x2 q, q, a, b;
            fma.rn.f16x2 $0, q, $4, $0;
            lop3.b32 q, t, 0x00F000F0, 0x64006400, 0xEA;
            fma.rn.f16x2 q, q, c, d;
            fma.rn.f16x2 $0, q, $5, $0;
            }""",
            "=r,r,r,r,r,r,r", [w, p0, p1, p2, p3, acc], dtype=tl.int32, is_pure=True, pack=1)
    else:
        out = _pairs_dot_emulated(w, p0, p1, p2, p3, acc)
    return out


@triton.jit
def _split4(v, A: tl.constexpr, B: tl.constexpr):
    """``[A, B, 4]`` -> its four ``[A, B]`` slices along the last axis (in registers)."""
    even, odd = tl.split(tl.reshape(v, (A, B, 2, 2)))
    v0, v2 = tl.split(even)
    v1, v3 = tl.split(odd)
    return v0, v1, v2, v3


@triton.jit
def _x_word_pairs(xw_ptr, t, rc, K, BK: tl.constexpr, C: tl.constexpr, WORD: tl.constexpr, EVEN_K: tl.constexpr,
                  ASM: tl.constexpr):
    """The four fp16x2 x pairs ``[C]`` meeting word WORD of each 4-word chunk: x read as int32
    words of two bf16 (``X_m = (x_2m, x_2m+1)`` of the code word's eight), pair j = (x_j, x_j+4)."""
    offs = (t * BK) // 2 + (rc * 16 + WORD * 4)[:, None] + tl.arange(0, 4)[None, :]
    if EVEN_K:
        xw = tl.load(xw_ptr + offs)
    else:
        xw = tl.load(xw_ptr + offs, mask=offs < K // 2, other=0)
    x0, x1, x2, x3 = _split4(tl.reshape(xw, (1, C, 4)), 1, C)
    return (_f16_pair(_lo_f32(x0), _lo_f32(x2), ASM), _f16_pair(_hi_f32(x0), _hi_f32(x2), ASM),
            _f16_pair(_lo_f32(x1), _lo_f32(x3), ASM), _f16_pair(_hi_f32(x1), _hi_f32(x3), ASM))


@triton.jit(do_not_specialize=["PER_SPLIT"])
def _hgemv(x_ptr, xw_ptr, q_ptr, s_ptr, o_ptr, y_ptr, part_ptr, lock_ptr, N, K, G: tl.constexpr, sqn, ssn, PER_SPLIT,
           BN: tl.constexpr, BK: tl.constexpr, EVEN_K: tl.constexpr, REDUCE: tl.constexpr, ASM: tl.constexpr):
    """M == 1, bf16 x, on CUDA cores in packed fp16x2 math: each row's K-tile is cut in 4-word
    chunks; a chunk's 32 centred codes times x are summed in one fp16x2 register, then
    ``s * sum`` in fp32; the offset term uses the tile's fp32 ``sum(x)`` once per row. x is
    read as int32 words and converted to fp16 pairs once per chunk, shared by the thread's rows."""
    BKW: tl.constexpr = BK // 8
    C: tl.constexpr = BKW // 4
    rn = tl.program_id(0) * BN + tl.arange(0, BN)
    rn_ld = tl.minimum(rn, N - 1)
    rc = tl.arange(0, C)
    wcol = (rc * 4)[:, None] + tl.arange(0, 4)[None, :]  # [C, 4] word of the tile
    rk = tl.arange(0, BK)
    acc = tl.zeros((BN, C), dtype=tl.float32)
    acc_o = tl.zeros((BN,), dtype=tl.float32)
    t0 = tl.program_id(2) * PER_SPLIT
    for i in range(0, PER_SPLIT):
        t = t0 + i
        q_ptrs = q_ptr + rn_ld[:, None, None] * sqn + (t * BKW + wcol)[None, :, :]
        if EVEN_K:
            w = tl.load(q_ptrs)
            xs = tl.sum(tl.load(x_ptr + t * BK + rk).to(tl.float32), axis=0)
        else:
            w = tl.load(q_ptrs, mask=(t * BKW + wcol < K // 8)[None, :, :], other=0)
            xs = tl.sum(tl.load(x_ptr + t * BK + rk, mask=t * BK + rk < K, other=0.0).to(tl.float32), axis=0)
        w0, w1, w2, w3 = _split4(w, BN, C)
        part = tl.zeros((BN, C), dtype=tl.int32)  # fp16x2 (+0, +0)
        p0, p1, p2, p3 = _x_word_pairs(xw_ptr, t, rc, K, BK, C, 0, EVEN_K, ASM)
        part = _pairs_dot(w0, p0, p1, p2, p3, part, ASM)
        p0, p1, p2, p3 = _x_word_pairs(xw_ptr, t, rc, K, BK, C, 1, EVEN_K, ASM)
        part = _pairs_dot(w1, p0, p1, p2, p3, part, ASM)
        p0, p1, p2, p3 = _x_word_pairs(xw_ptr, t, rc, K, BK, C, 2, EVEN_K, ASM)
        part = _pairs_dot(w2, p0, p1, p2, p3, part, ASM)
        p0, p1, p2, p3 = _x_word_pairs(xw_ptr, t, rc, K, BK, C, 3, EVEN_K, ASM)
        part = _pairs_dot(w3, p0, p1, p2, p3, part, ASM)
        g = (t * BK) // G
        s = tl.load(s_ptr + rn_ld * ssn + g).to(tl.float32)
        o = tl.load(o_ptr + rn_ld * ssn + g).to(tl.float32)
        acc += (s * 64.0)[:, None] * (_f16_lo(part) + _f16_hi(part))  # undo the codes' 1/64
        acc_o += (o + 8.0 * s) * xs  # the codes were centred: q x = (q - 8) x + 8 x
    y = tl.sum(acc, axis=1) + acc_o
    rm = tl.arange(0, 1)
    _finish(y[None, :], y_ptr, part_ptr, lock_ptr, tl.program_id(0), rn, rm, N, 1, N, REDUCE, False)
