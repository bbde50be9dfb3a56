"""Triton thresholded sparse GEMV for decode (1..MAX_ROWS rows of activations).

Layout: the weight is stored transposed, ``w_t [K, N]`` contiguous, so a surviving input
``j`` means reading one contiguous row segment of ``BLOCK_N`` weights per program and a
dropped input means reading nothing.

Grid ``(N tiles, K splits)``; the split count is chosen so that every shape gets enough
programs to keep all SMs streaming (``config.plan``). Two kernels, one per ``kind``:

* ``mask``: a counted loop over blocks of ``BLOCK_K`` inputs with no branch in it, so
  Triton software-pipelines it (``tl.range(num_stages=...)`` also pipelines loads that do
  not feed a dot): load x, fuse the threshold, load the weight rows with the rows of dead
  inputs masked off (a predicated-off load issues no memory traffic), accumulate in fp32.
* ``compact``: the program first packs the indices of its live inputs (a prefix sum over
  ``|x| > t``, scattered into a per-program list in global memory: no host sync, capturable
  in a CUDA graph), then a loop whose trip count is the live count gathers only live rows.

One row (decode at batch 1) accumulates with FMAs; several rows (inputs live in any row
are read, and each row zeroes its own dropped inputs) use ``tl.dot`` with rows padded to 16.
Split-K partials (fp32) are summed either by the last program of a column tile to finish
(an integer atomic counts arrivals; it sums the splits in a fixed order, so the result is
deterministic, and resets its counter for the next call) or by a second small kernel.

With programmatic dependent launch (``launch.pdl``: ``SPARSEBENCH_PDL=1``, Hopper+) every
kernel lets the next one launch at once and waits for the one before it first thing: every
read depends on x (which live rows to load), so there is nothing to prefetch, but the
launch and start of the next call overlap this one's tail.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from ..launch import arrival_counters, pdl, sm_count, workspace
from . import MAX_ROWS
from .config import (
    DEFAULTS,
    REDUCE_FUSED,
    REDUCE_LAUNCH,
    REDUCE_NONE,
    GemvConfig,
    Plan,
    default_config,
    plan,
    shape_class,
)
from .registered import register

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

__all__ = ["DEFAULTS", "GemvConfig", "default_config", "launch_plan", "shape_class", "sparse_gemv_op",
           "sparse_gemv_triton"]


@triton.jit
def _keep_block(x_ptr, t_ptr, t_scalar, offs_m, m_ok, offs_k, k_ok, stride_xm,
                PER_CHANNEL: tl.constexpr, BLOCK_M: tl.constexpr):
    """x of a block of inputs in fp32 with dropped entries zeroed, and which inputs live in any row."""
    if PER_CHANNEL:
        t = tl.load(t_ptr + offs_k, mask=k_ok, other=0.0)
    else:
        t = t_scalar
    if BLOCK_M == 1:
        x = tl.load(x_ptr + offs_k, mask=k_ok, other=0.0).to(tl.float32)
        keep = (tl.abs(x) > t) & k_ok
        live = keep
    else:
        ok = m_ok[:, None] & k_ok[None, :]
        x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :], mask=ok, other=0.0).to(tl.float32)
        if PER_CHANNEL:
            keep = (tl.abs(x) > t[None, :]) & ok
        else:
            keep = (tl.abs(x) > t) & ok
        live = tl.max(keep.to(tl.int32), axis=0) > 0
    return tl.where(keep, x, 0.0), live


@triton.jit
def _keep_pairs(x_ptr, t_ptr, t_scalar, ke, k_hi, PER_CHANNEL: tl.constexpr, X_BF16: tl.constexpr):
    """One row of x read as 32-bit pairs (inputs ke, ke + 1), thresholded: (x_even, x_odd,
    live_even, live_odd). A 4-byte load can be an asynchronous copy, so the software pipeline
    fetches x ahead like the weights instead of stalling on it before each block's loads."""
    ok = ke < k_hi
    pair = tl.load(x_ptr.to(tl.pointer_type(tl.int32)) + ke // 2, mask=ok, other=0)
    if X_BF16:  # bf16 bits are the top half of the fp32 bits
        xe = (pair << 16).to(tl.float32, bitcast=True)
        xo = (pair & -65536).to(tl.float32, bitcast=True)
    else:
        xe = (pair & 0xFFFF).to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)
        xo = (pair >> 16).to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)
    if PER_CHANNEL:
        te = tl.load(t_ptr + ke, mask=ok, other=0.0)
        to = tl.load(t_ptr + ke + 1, mask=ok, other=0.0)
    else:
        te = t_scalar
        to = t_scalar
    le = (tl.abs(xe) > te) & ok
    lo = (tl.abs(xo) > to) & (ke + 1 < k_hi)
    return tl.where(le, xe, 0.0), tl.where(lo, xo, 0.0), le, lo


@triton.jit
def _pdl_start(PDL: tl.constexpr):
    """With programmatic dependent launch: let the next kernel launch now, then wait for the
    kernel before this one (which writes x) before anything is read or written: the split
    partials and arrival counters of the call before may be in use until then."""
    if PDL:
        tl.extra.cuda.gdc_launch_dependents()
        tl.extra.cuda.gdc_wait()


@triton.jit
def _acc_init(BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, FOLD: tl.constexpr, USE_DOT: tl.constexpr):
    if USE_DOT:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    else:
        acc = tl.zeros((FOLD, BLOCK_N), dtype=tl.float32)
    return acc


@triton.jit
def _acc_rows(acc, USE_DOT: tl.constexpr):
    """The accumulator as [BLOCK_M, BLOCK_N] output rows (the FMA path's FOLD rows summed)."""
    if USE_DOT:
        rows = acc
    else:
        rows = tl.sum(acc, axis=0)[None, :]
    return rows


@triton.jit
def _fold(acc, prod, ROWS_K: tl.constexpr, BLOCK_N: tl.constexpr, FOLD: tl.constexpr):
    """acc [FOLD, BLOCK_N] += the products [ROWS_K, BLOCK_N] summed over K down to FOLD rows:
    input row r goes to row r % FOLD. With FOLD = the threads one column is spread over, the
    sum stays inside each thread (no shared memory, no barrier in the loop)."""
    return acc + tl.sum(tl.reshape(prod, (ROWS_K // FOLD, FOLD, BLOCK_N)), axis=0)


@triton.jit
def _accumulate(acc, xk, w, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr, FOLD: tl.constexpr,
                USE_DOT: tl.constexpr, DOT_F32: tl.constexpr):
    """acc += xk @ w (tensor cores for padded rows, else FMAs folded as in ``_fold``)."""
    if USE_DOT:
        if DOT_F32:  # the interpreter computes bf16 dots wrongly; fp32 inputs need ieee, not tf32
            acc += tl.dot(xk, w.to(tl.float32), input_precision="ieee")
        else:
            acc += tl.dot(xk.to(w.dtype), w)  # exact: xk holds the input's own values or zeros
    else:
        acc = _fold(acc, xk[:, None] * w.to(tl.float32), BLOCK_K, BLOCK_N, FOLD)
    return acc


@triton.jit
def _sum_partials(part_ptr, bias_ptr, y_ptr, offs_n, n_ok, M, N, splits,
                  HAS_BIAS: tl.constexpr, RS: tl.constexpr, BLOCK_N: tl.constexpr):
    """y[:, offs_n] = sum of the split partials in split order (+ bias), RS splits per load."""
    offs_s = tl.arange(0, RS)
    if HAS_BIAS:
        b = tl.load(bias_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)
    for m in range(M):
        tot = tl.zeros((BLOCK_N,), dtype=tl.float32)
        for s0 in range(0, splits, RS):
            s = s0 + offs_s
            p = tl.load(part_ptr + (s[:, None] * M + m) * N + offs_n[None, :],
                        mask=(s < splits)[:, None] & n_ok[None, :], other=0.0, cache_modifier=".cg")
            tot += tl.sum(p, axis=0)
        if HAS_BIAS:
            tot += b
        tl.store(y_ptr + m * N + offs_n, tot.to(y_ptr.dtype.element_ty), mask=n_ok)


@triton.jit
def _finish(acc, pid_n, pid_k, offs_m, m_ok, offs_n, n_ok, M, N, splits,
            y_ptr, bias_ptr, part_ptr, cnt_ptr,
            HAS_BIAS: tl.constexpr, REDUCE: tl.constexpr, RS: tl.constexpr, BLOCK_N: tl.constexpr,
            RZ: tl.constexpr):
    """Store y directly (one split) or this split's partial, then maybe sum the tile's splits.
    REDUCE: 0 none, 1 a second kernel sums, 2 the last split to arrive sums (config.REDUCE_*).
    RZ: reset the counter relaxed (no fence after the y stores; config ``rz``)."""
    ok = m_ok[:, None] & n_ok[None, :]
    if REDUCE == 0:
        if HAS_BIAS:
            acc += tl.load(bias_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
        tl.store(y_ptr + offs_m[:, None] * N + offs_n[None, :], acc.to(y_ptr.dtype.element_ty), mask=ok)
    else:
        tl.store(part_ptr + (pid_k * M + offs_m[:, None]) * N + offs_n[None, :], acc, mask=ok)
        if REDUCE == 2:
            tl.debug_barrier()  # every thread's partial is written before the arrival is counted
            arrived = tl.atomic_add(cnt_ptr + pid_n, 1, sem="acq_rel", scope="gpu")
            if arrived == splits - 1:  # the last split of this column tile: all partials are visible
                _sum_partials(part_ptr, bias_ptr, y_ptr, offs_n, n_ok, M, N, splits, HAS_BIAS, RS, BLOCK_N)
                if RZ:  # the next call reads it after this grid ends: no ordering needed here
                    tl.atomic_xchg(cnt_ptr + pid_n, 0, sem="relaxed")
                else:
                    tl.atomic_xchg(cnt_ptr + pid_n, 0)  # ready for the next call (or graph replay)


# the split geometry varies per shape: specializing on its divisibility would recompile each variant
@triton.jit(do_not_specialize=["k_per_split", "splits"])
def _gemv_mask_kernel(x_ptr, w_ptr, t_ptr, t_scalar, bias_ptr, y_ptr, part_ptr, cnt_ptr,
                      M, N, K, k_per_split, splits, stride_xm, stride_wk,
                      PER_CHANNEL: tl.constexpr, HAS_BIAS: tl.constexpr, REDUCE: tl.constexpr,
                      RS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                      BLOCK_K: tl.constexpr, NUM_STAGES: tl.constexpr, USE_DOT: tl.constexpr,
                      FOLD: tl.constexpr, DOT_F32: tl.constexpr, PAIRS: tl.constexpr,
                      X_BF16: tl.constexpr, PDL: tl.constexpr, RZ: tl.constexpr):
    """One (column tile, K split): every block of inputs, dead rows' loads predicated off."""
    _pdl_start(PDL)
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < N
    offs_m = tl.arange(0, BLOCK_M)
    m_ok = offs_m < M
    k_lo = pid_k * k_per_split
    k_hi = tl.minimum(k_lo + k_per_split, K)
    acc = _acc_init(BLOCK_M, BLOCK_N, FOLD, USE_DOT)
    if PAIRS:  # one row, 2-byte x, even K: inputs taken two by two (see _keep_pairs)
        HALF: tl.constexpr = BLOCK_K // 2
        for k0 in tl.range(k_lo, k_hi, BLOCK_K, num_stages=NUM_STAGES):
            ke = k0 + 2 * tl.arange(0, HALF)
            xe, xo, le, lo = _keep_pairs(x_ptr, t_ptr, t_scalar, ke, k_hi, PER_CHANNEL, X_BF16)
            rows = w_ptr + ke[:, None] * stride_wk + offs_n[None, :]
            we = tl.load(rows, mask=le[:, None] & n_ok[None, :], other=0.0)
            wo = tl.load(rows + stride_wk, mask=lo[:, None] & n_ok[None, :], other=0.0)
            acc = _fold(acc, xe[:, None] * we.to(tl.float32) + xo[:, None] * wo.to(tl.float32),
                        HALF, BLOCK_N, FOLD)
    else:
        for k0 in tl.range(k_lo, k_hi, BLOCK_K, num_stages=NUM_STAGES):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            k_ok = offs_k < k_hi
            xk, live = _keep_block(x_ptr, t_ptr, t_scalar, offs_m, m_ok, offs_k, k_ok, stride_xm,
                                   PER_CHANNEL, BLOCK_M)
            w = tl.load(w_ptr + offs_k[:, None] * stride_wk + offs_n[None, :],
                        mask=live[:, None] & n_ok[None, :], other=0.0)
            acc = _accumulate(acc, xk, w, BLOCK_K, BLOCK_N, FOLD, USE_DOT, DOT_F32)
    _finish(_acc_rows(acc, USE_DOT), pid_n, pid_k, offs_m, m_ok, offs_n, n_ok, M, N, splits,
            y_ptr, bias_ptr, part_ptr, cnt_ptr, HAS_BIAS, REDUCE, RS, BLOCK_N, RZ)


@triton.jit
def _chunk_loads(x_ptr, t_ptr, c0, k_hi, offs_r, r_ok, stride_xm, PER_CHANNEL: tl.constexpr,
                 ROWS: tl.constexpr, CHUNK: tl.constexpr):
    """x (its own dtype, [CHUNK] or [ROWS, CHUNK]) and the per-input thresholds (zeros for a
    scalar one) of the inputs [c0, c0 + CHUNK) below k_hi."""
    offs = c0 + tl.arange(0, CHUNK)
    ok = offs < k_hi
    if PER_CHANNEL:
        t = tl.load(t_ptr + offs, mask=ok, other=0.0)
    else:
        t = tl.zeros((CHUNK,), dtype=tl.float32)
    if ROWS == 1:
        xr = tl.load(x_ptr + offs, mask=ok, other=0.0)
    else:
        xr = tl.load(x_ptr + offs_r[:, None] * stride_xm + offs[None, :], mask=r_ok[:, None] & ok[None, :], other=0.0)
    return xr, t


@triton.jit
def _compact_live(x_ptr, t_ptr, t_scalar, list_ptr, k_lo, k_hi, M, stride_xm,
                  PER_CHANNEL: tl.constexpr, ROWS: tl.constexpr, CHUNK: tl.constexpr,
                  PACK: tl.constexpr, X_BF16: tl.constexpr, PF: tl.constexpr):
    """Write the inputs in [k_lo, k_hi) that live in some row to list_ptr, in order; return how
    many. PACK (one 2-byte row, K <= 65536): each entry is one int32, the index in the low
    half and x's 16 bits in the high half, so the gather loop reads index and value with one
    4-byte (asynchronous, pipelined) load instead of a dependent 2-byte x gather per block.
    PF: the next step's x is loaded before this step's scan (one x latency for all steps)."""
    count = k_lo * 0  # an int32 scalar
    offs_r = tl.arange(0, ROWS)
    r_ok = offs_r < M
    if PF:
        xr_next, t_next = _chunk_loads(x_ptr, t_ptr, k_lo, k_hi, offs_r, r_ok, stride_xm, PER_CHANNEL, ROWS, CHUNK)
    for c0 in range(k_lo, k_hi, CHUNK):
        offs = c0 + tl.arange(0, CHUNK)
        ok = offs < k_hi
        if PF:
            xr, t = xr_next, t_next
            xr_next, t_next = _chunk_loads(x_ptr, t_ptr, c0 + CHUNK, k_hi, offs_r, r_ok, stride_xm, PER_CHANNEL,
                                           ROWS, CHUNK)
        else:
            xr, t = _chunk_loads(x_ptr, t_ptr, c0, k_hi, offs_r, r_ok, stride_xm, PER_CHANNEL, ROWS, CHUNK)
        if not PER_CHANNEL:
            t = t_scalar
        x = xr.to(tl.float32)
        if ROWS == 1:
            live = (tl.abs(x) > t) & ok
        else:
            if PER_CHANNEL:
                keep = tl.abs(x) > t[None, :]
            else:
                keep = tl.abs(x) > t
            live = (tl.max((keep & r_ok[:, None]).to(tl.int32), axis=0) > 0) & ok
        one = live.to(tl.int32)
        pos = count + tl.cumsum(one, axis=0) - one
        if PACK:
            if X_BF16:  # bf16 -> fp32 is exact, its low 16 bits are zero
                entry = x.to(tl.int32, bitcast=True) | offs
            else:
                entry = (xr.to(tl.int16, bitcast=True).to(tl.int32) << 16) | offs
            tl.store(list_ptr + pos, entry, mask=live)
        else:
            tl.store(list_ptr + pos, offs, mask=live)
        count += tl.sum(one, axis=0)
    return count


@triton.jit(do_not_specialize=["k_per_split"])
def _compact_pass_kernel(x_ptr, t_ptr, t_scalar, list_ptr, count_ptr, M, K, k_per_split, stride_xm,
                         PER_CHANNEL: tl.constexpr, ROWS: tl.constexpr, CHUNK: tl.constexpr,
                         PACK: tl.constexpr, X_BF16: tl.constexpr, PDL: tl.constexpr):
    """``pre=1``: one program per K split packs the split's live inputs once, for every column
    tile of that split to reuse (instead of each program packing its own copy)."""
    _pdl_start(PDL)
    pid_k = tl.program_id(0)
    k_lo = pid_k * k_per_split
    k_hi = tl.minimum(k_lo + k_per_split, K)
    count = _compact_live(x_ptr, t_ptr, t_scalar, list_ptr + pid_k.to(tl.int64) * k_per_split, k_lo, k_hi,
                          M, stride_xm, PER_CHANNEL, ROWS, CHUNK, PACK, X_BF16, False)
    tl.store(count_ptr + pid_k, count)


@triton.jit(do_not_specialize=["k_per_split", "splits"])
def _gemv_compact_kernel(x_ptr, w_ptr, t_ptr, t_scalar, bias_ptr, y_ptr, part_ptr, cnt_ptr, list_ptr,
                         count_ptr, M, N, K, k_per_split, splits, stride_xm, stride_wk,
                         PER_CHANNEL: tl.constexpr, HAS_BIAS: tl.constexpr, REDUCE: tl.constexpr,
                         RS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                         BLOCK_K: tl.constexpr, NUM_STAGES: tl.constexpr, USE_DOT: tl.constexpr,
                         FOLD: tl.constexpr, DOT_F32: tl.constexpr, ROWS: tl.constexpr,
                         CHUNK: tl.constexpr, PACK: tl.constexpr, X_BF16: tl.constexpr,
                         PRE: tl.constexpr, PDL: tl.constexpr, RZ: tl.constexpr, XA: tl.constexpr):
    """One (column tile, K split): pack the split's live inputs (or read the list the pre-pass
    packed), then gather only their rows."""
    _pdl_start(PDL)
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < N
    offs_m = tl.arange(0, BLOCK_M)
    m_ok = offs_m < M
    if PRE:
        base = list_ptr + pid_k.to(tl.int64) * k_per_split
        count = tl.load(count_ptr + pid_k)
    else:
        k_lo = pid_k * k_per_split
        k_hi = tl.minimum(k_lo + k_per_split, K)
        if XA:  # both multiples of 8 (host-checked): x loads in 16-byte vectors, scans in-thread
            k_lo = tl.multiple_of(k_lo, 8)
            k_hi = tl.multiple_of(k_hi, 8)
        # one list per program (programs of other column tiles compute the same one: no waiting)
        base = list_ptr + (pid_k * tl.num_programs(0) + pid_n).to(tl.int64) * k_per_split
        count = _compact_live(x_ptr, t_ptr, t_scalar, base, k_lo, k_hi, M, stride_xm, PER_CHANNEL, ROWS, CHUNK,
                              PACK, X_BF16, XA)
        tl.debug_barrier()  # the whole list is written before any thread reads it
    acc = _acc_init(BLOCK_M, BLOCK_N, FOLD, USE_DOT)
    for j0 in tl.range(0, count, BLOCK_K, num_stages=NUM_STAGES):
        slot = j0 + tl.arange(0, BLOCK_K)
        s_ok = slot < count
        entry = tl.load(base + slot, mask=s_ok, other=0, cache_modifier=".cg")
        if PACK:
            idx = entry & 0xFFFF
            if X_BF16:
                xv = (entry & -65536).to(tl.float32, bitcast=True)
            else:
                xv = (entry >> 16).to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)
            if USE_DOT:  # one row (PACK needs ROWS == 1): row 0 of the padded tile
                xk = tl.where((offs_m == 0)[:, None], xv[None, :], 0.0)
            else:
                xk = xv
        else:
            idx = entry
            xk, live = _keep_block(x_ptr, t_ptr, t_scalar, offs_m, m_ok, idx, s_ok, stride_xm,
                                   PER_CHANNEL, BLOCK_M)
        # every listed input lives: the row mask is the slot mask, independent of the x load
        w = tl.load(w_ptr + idx[:, None] * stride_wk + offs_n[None, :],
                    mask=s_ok[:, None] & n_ok[None, :], other=0.0)
        acc = _accumulate(acc, xk, w, BLOCK_K, BLOCK_N, FOLD, USE_DOT, DOT_F32)
    _finish(_acc_rows(acc, USE_DOT), pid_n, pid_k, offs_m, m_ok, offs_n, n_ok, M, N, splits,
            y_ptr, bias_ptr, part_ptr, cnt_ptr, HAS_BIAS, REDUCE, RS, BLOCK_N, RZ)


@triton.jit(do_not_specialize=["splits"])
def _reduce_kernel(part_ptr, bias_ptr, y_ptr, M, N, splits,
                   HAS_BIAS: tl.constexpr, RS: tl.constexpr, BLOCK_N: tl.constexpr, PDL: tl.constexpr):
    """The ``r=launch`` reduction: one program per BLOCK_N outputs."""
    _pdl_start(PDL)
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    _sum_partials(part_ptr, bias_ptr, y_ptr, offs_n, offs_n < N, M, N, splits, HAS_BIAS, RS, BLOCK_N)


_PLANS: dict[tuple, Plan] = {}
_REDUCE_BLOCK_N = 128


def launch_plan(m: int, n: int, k: int, device: torch.device, cfg: GemvConfig, elem_bytes: int = 2,
                x_aligned: bool = True) -> Plan:
    """The plan a call would use on ``device`` (tiles, splits, reduction), cached: decode calls
    the same few layers over and over."""
    key = (m, n, k, sm_count(device), cfg, elem_bytes, x_aligned)
    found = _PLANS.get(key)
    if found is None:
        found = _PLANS[key] = plan(m, n, k, key[3], cfg, elem_bytes, x_aligned)
    return found


def _check(x: torch.Tensor, w_t: torch.Tensor) -> torch.Tensor:
    k, n = w_t.shape
    if x.shape[-1] != k:
        raise ValueError(f"x has {x.shape[-1]} inputs but w_t has {k} rows")
    if w_t.stride(1) != 1:
        raise ValueError("w_t must be [K, N] with contiguous rows (store the weight transposed)")
    if w_t.stride(0) * k >= 2**31:
        raise ValueError("w_t is too large for 32-bit offsets")
    x2 = x.reshape(-1, k)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    if not 1 <= x2.shape[0] <= MAX_ROWS:
        raise ValueError(f"the sparse GEMV takes 1..{MAX_ROWS} rows, got {x2.shape[0]}")
    return x2


def sparse_gemv_triton(x: torch.Tensor, w_t: torch.Tensor, threshold: float | torch.Tensor,
                       bias: torch.Tensor | None = None, config: GemvConfig | None = None,
                       out: torch.Tensor | None = None) -> torch.Tensor:
    """``x [..., K]`` (1..MAX_ROWS rows), ``w_t [K, N]`` -> ``[..., N]``; ``out``: a contiguous
    ``[rows, N]`` tensor of x's dtype to write into."""
    k, n = w_t.shape
    x2 = _check(x, w_t)
    m = x2.shape[0]
    cfg = config or default_config(n, k)
    p = launch_plan(m, n, k, x.device, cfg, x.element_size(), x2.data_ptr() % 4 == 0)
    per_channel = isinstance(threshold, torch.Tensor)
    if per_channel:
        t_vec = threshold.to(device=x.device, dtype=torch.float32).contiguous()
        if t_vec.numel() != k:
            raise ValueError(f"a per-input threshold needs {k} values, got {t_vec.numel()}")
    else:
        t_vec = x2  # unused pointer
    t_scalar = 0.0 if per_channel else float(threshold)
    if out is None:
        out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    elif out.shape != (m, n) or out.dtype != x.dtype or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous [{m}, {n}] {x.dtype} tensor")
    b = bias if bias is not None else out
    part = out if p.reduce == REDUCE_NONE else workspace((p.splits, m, n), torch.float32, x.device)
    cnt = arrival_counters(x.device, p.n_tiles) if p.reduce == REDUCE_FUSED else part
    use_pdl = pdl(x.device)
    launch = {"launch_pdl": True} if use_pdl else {}
    common = dict(PER_CHANNEL=per_channel, HAS_BIAS=bias is not None, REDUCE=p.reduce, RS=p.reduce_rows,
                  BLOCK_M=p.block_m, BLOCK_N=p.block_n, BLOCK_K=p.block_k, NUM_STAGES=cfg.num_stages,
                  USE_DOT=p.use_dot, FOLD=p.fold, DOT_F32=INTERPRET or x.dtype == torch.float32,
                  PDL=use_pdl, RZ=cfg.relaxed_reset, num_warps=cfg.num_warps, **launch)
    args = (x2, w_t, t_vec, t_scalar, b, out, part, cnt)
    dims = (m, n, k, p.k_per_split, p.splits, x2.stride(0), w_t.stride(0))
    if cfg.kind == "compact":
        pack = dict(ROWS=p.rows, CHUNK=p.chunk, PACK=p.pack, X_BF16=x.dtype == torch.bfloat16)
        if p.prepass:
            lists = workspace((p.splits * p.k_per_split + p.splits,), torch.int32, x.device)
            counts = lists[p.splits * p.k_per_split:]
            _compact_pass_kernel[(p.splits,)](x2, t_vec, t_scalar, lists, counts, m, k, p.k_per_split,
                                              x2.stride(0), PER_CHANNEL=per_channel, num_warps=4, PDL=use_pdl,
                                              **launch, **pack)
        else:
            lists = counts = workspace((p.n_tiles * p.splits * p.k_per_split,), torch.int32, x.device)
        xa = cfg.aligned_scan and k % 8 == 0 and p.block_k % 8 == 0  # split bounds are multiples of 8
        _gemv_compact_kernel[p.grid](*args, lists, counts, *dims, PRE=p.prepass, XA=xa, **pack, **common)
    else:
        _gemv_mask_kernel[p.grid](*args, *dims, PAIRS=p.pairs, X_BF16=x.dtype == torch.bfloat16, **common)
    if p.reduce == REDUCE_LAUNCH:
        _reduce_kernel[(triton.cdiv(n, _REDUCE_BLOCK_N),)](
            part, b, out, m, n, p.splits, HAS_BIAS=bias is not None,
            RS=max(1, min(64, 8192 // _REDUCE_BLOCK_N)), BLOCK_N=_REDUCE_BLOCK_N, PDL=use_pdl, num_warps=4,
            **launch)
    return out.reshape(*x.shape[:-1], n)


sparse_gemv_op = register("sparse_gemv", sparse_gemv_triton)
