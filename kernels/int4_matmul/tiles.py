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
def _dequant_inputs(q_ptr, s_ptr, o_ptr, N, K, G: tl.constexpr, sqn, ssn, BN: tl.constexpr, BK: tl.constexpr,
                    EVEN_K: tl.constexpr):
    """A dequantize program's rows ``rn``, its words ``[BN, BK/8]`` (16-byte loads) and their
    group's scale and offset in fp32."""
    BKW: tl.constexpr = BK // 8
    rn = tl.program_id(0) * BN + tl.arange(0, BN)
    rn_ld = tl.minimum(rn, N - 1)
    t = tl.program_id(1)
    rw = tl.arange(0, BKW)
    q_ptrs = q_ptr + rn_ld[:, None] * sqn + (t * BKW + rw)[None, :]
    if EVEN_K:
        w = tl.load(q_ptrs)
    else:
        w = tl.load(q_ptrs, mask=(t * BKW + rw < K // 8)[None, :], other=0)
    g = (t * BK) // G
    s = tl.load(s_ptr + rn_ld * ssn + g).to(tl.float32)
    o = tl.load(o_ptr + rn_ld * ssn + g).to(tl.float32)
    return rn, w, s, o


@triton.jit
def _dequant(q_ptr, s_ptr, o_ptr, w_ptr, N, K, G: tl.constexpr, sqn, ssn, swn, F32M, BN: tl.constexpr, BK: tl.constexpr,
             EVEN_K: tl.constexpr):
    """Packed codes -> dense ``[N, K]`` weight in the activation dtype (then cuBLAS): 16-byte
    code loads and whole contiguous rows of BK outputs per store."""
    rn, w, s, o = _dequant_inputs(q_ptr, s_ptr, o_ptr, N, K, G, sqn, ssn, BN, BK, EVEN_K)
    rk = tl.program_id(1) * BK + tl.arange(0, BK)
    out = _dequant_tile(w, s, o, F32M, w_ptr.dtype.element_ty, BN, BK // 8)
    tl.store(w_ptr + rn[:, None] * swn + rk[None, :], out, mask=(rn < N)[:, None] & (rk < K)[None, :])


@triton.jit
def _dequant_wide(q_ptr, s_ptr, o_ptr, w_ptr, N, K, G: tl.constexpr, sqn, ssn, swn, F32M, BN: tl.constexpr,
                  BK: tl.constexpr, EVEN_K: tl.constexpr):
    """``_dequant`` without the join tree: the tile is built as ``[BN, GT, BK/8/GT, 8]`` (group,
    word, nibble) by one broadcast shift of each word, so a thread's eight outputs of a word
    are contiguous and leave in one 16-byte store; no register shuffles between decoding and
    storing. BK may span GT > 1 whole groups (longer row segments read and written a program)."""
    GT: tl.constexpr = BK // G if BK > G else 1
    WG: tl.constexpr = BK // 8 // GT  # words of one group inside the tile
    rn = tl.program_id(0) * BN + tl.arange(0, BN)
    rn_ld = tl.minimum(rn, N - 1)
    t = tl.program_id(1)
    rg = tl.arange(0, GT)
    word = t * (BK // 8) + rg[:, None] * WG + tl.arange(0, WG)[None, :]  # [GT, WG]
    q_ptrs = q_ptr + rn_ld[:, None, None] * sqn + word[None, :, :]
    g = (t * BK) // G + rg
    s_ptrs = s_ptr + rn_ld[:, None] * ssn + g[None, :]
    o_ptrs = o_ptr + rn_ld[:, None] * ssn + g[None, :]
    if EVEN_K:
        w = tl.load(q_ptrs)
        s = tl.load(s_ptrs).to(tl.float32)
        o = tl.load(o_ptrs).to(tl.float32)
    else:
        w = tl.load(q_ptrs, mask=(word < K // 8)[None, :, :], other=0)
        live = (g < tl.cdiv(K, G))[None, :]
        s = tl.load(s_ptrs, mask=live, other=0).to(tl.float32)
        o = tl.load(o_ptrs, mask=live, other=0).to(tl.float32)
    ri = tl.arange(0, 8)
    codes = (w[:, :, :, None] >> (4 * ri)[None, None, None, :]) & 15
    q = (codes | F32M).to(tl.float32, bitcast=True) - 8388608.0
    out = (q * s[:, :, None, None] + o[:, :, None, None]).to(w_ptr.dtype.element_ty)
    cols = 8 * word[:, :, None] + ri[None, None, :]  # [GT, WG, 8]
    w_ptrs = w_ptr + rn[:, None, None, None] * swn + cols[None, :, :, :]
    if EVEN_K:  # a mask constant along each word's eight columns keeps the stores 16 bytes wide
        tl.store(w_ptrs, out, mask=(rn < N)[:, None, None, None])
    else:
        tl.store(w_ptrs, out, mask=(rn < N)[:, None, None, None] & (cols < K)[None, :, :, :])
