"""Launch the int4 kernels of ``tiles.py``, and pick one per shape by timing it.

A ``Plan`` names a variant and its tiles:

* ``gemv``: M = 1 on CUDA cores;
* ``mma``: decode-sized M (<= 64) on tensor cores, codes fed as ``BIAS + q`` pairs, the
  group map applied to tile sums (needs the group to be a multiple of 64);
* ``fold``: per-weight dequantization in registers then tensor cores (prefill, small groups);
* ``dequant``: dequantize the whole weight to the activation dtype, then cuBLAS;
* ``w4mma``: M <= 16 on tensor cores in CUDA (``w4_mma.cu`` through ``cuda.py``, compiled
  by NVRTC; a weight layout repacked for the mma fragments), where NVRTC and a GPU are found.

On a GPU the first call for a (shape, M bucket, dtype) times the candidate plans (after
checking each against ``ref``) the way a decode step runs them: back-to-back calls over a
few weight copies (together past the L2), captured in one CUDA graph, median of a few
replays; it keeps the fastest; under CUDA-graph capture,
on CPU (the interpreter) or with ``SPARSEBENCH_INT4_TUNE=0`` a fixed default plan runs.
``chosen()`` reports what was picked and the timings behind it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace

import torch
import triton
import triton.language as tl

from ..launch import sm_count
from ..tolerances import tolerance
from ..tuning import back_to_back_ms, median
from . import ref
from .tiles import F32_MAGIC, _dequant, _dequant_wide, _gemv, _mma_fold, _mma_pairs

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
MAGIC16 = {torch.bfloat16: (0x43004300, 128.0, tl.bfloat16), torch.float16: (0x64006400, 1024.0, tl.float16)}
LOCKS = 1 << 16


@dataclass(frozen=True)
class Plan:
    variant: str  # gemv | mma | fold | dequant | w4mma
    bn: int = 64
    bm: int = 16
    bk: int = 128
    split: int = 1
    warps: int = 4
    stages: int = 3
    swap: bool = True
    pipe: int = 0  # w4mma: cp.async ring depth (0: registers)
    l2: bool = False  # w4mma: L2 256-byte prefetch hint on its copies
    prefetch: bool = False  # w4mma: bulk L2 prefetch of each warp's chunks first
    sx: bool = False  # w4mma: sum(x) per group from a prologue instead of a second mma
    tiles: int = 1  # w4mma: 16-row tiles a block works through in turn
    wide: bool = False  # dequant: the [BN, BK/8, 8] kernel (16-byte stores, no join tree)

    def label(self) -> str:
        if self.variant == "dequant":
            return (f"dequant[bn{self.bn} bk{self.bk} w{self.warps} chunks{self.split}" + (" wide" if self.wide else "")
                    + "]+cublas")
        if self.variant == "w4mma":
            return f"w4mma[w{self.warps} s{self.stages}" + (f" p{self.pipe}" if self.pipe else "") + (
                " l2" if self.l2 else "") + (" pf" if self.prefetch else "") + (" sx" if self.sx else "") + (
                f" t{self.tiles}" if self.tiles > 1 else "") + "]"
        tile = f"bn{self.bn}" + (f" bm{self.bm}" if self.variant != "gemv" else "")
        extra = "" if self.variant != "fold" else (" swap" if self.swap else " noswap")
        return f"{self.variant}[{tile} bk{self.bk} split{self.split} w{self.warps} s{self.stages}{extra}]"


def _bk(group: int, options: tuple[int, ...]) -> int | None:
    return next((b for b in options if group % b == 0), None)


def _m_tile(m: int) -> int:
    return 16 if m <= 16 else 32 if m <= 32 else 64


def _bucket(m: int) -> int:
    return min(triton.next_power_of_2(m), 4096)


def _key(x2: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, group: int) -> tuple:
    """What a tuned plan is kept for: (N, K, group, M bucket, dtypes, device)."""
    return (qweight.shape[0], x2.shape[1], group, _bucket(x2.shape[0]), x2.dtype, scales.dtype, x2.device)


def split_options(n_prog: int, k_tiles: int, sms: int) -> list[int]:
    """Split-K factors (divisors of the K-tile count, >= 2 tiles each) that bring the
    programs nearest one, two and four waves over the SMs (more programs balance better,
    fewer keep each one's pipeline longer)."""
    divs = [d for d in range(1, k_tiles + 1) if k_tiles % d == 0 and (k_tiles // d >= 2 or d == 1)]
    out = []
    for waves in (1, 2, 4):
        want = waves * sms / max(n_prog, 1)
        best = min(divs, key=lambda d: abs(math.log(d / want)))
        if best not in out:
            out.append(best)
    return out


def cuda_configs(m: int, group: int, n: int = 0, sms: int = 132) -> list:
    """The CUDA kernel's configurations worth timing for M tokens (warps per block x chunks in
    flight; fewer warps with more in flight each, or more warps with fewer), and for layers
    with many 16-row tiles (N/16 at least 2 per SM a block) blocks that work through 2 or 4
    tiles each. No GPU needed."""
    from . import cuda

    configs = [cuda.Config(w, s) for w, s in ((4, 4), (8, 4), (16, 4), (4, 8))]  # loads into registers
    configs += [cuda.Config(w, s, pipe=d, l2=l2) for w, s, d, l2 in  # cp.async rings in shared memory
                ((4, 4, 4, False), (8, 4, 4, False), (16, 4, 3, False), (4, 4, 8, False), (8, 4, 4, True),
                 (4, 4, 8, True))]
    configs += [cuda.Config(w, s, prefetch=True) for w, s in ((4, 4), (8, 4), (16, 4), (4, 8), (8, 2))]
    configs += [cuda.Config(w, s, pipe=d, prefetch=True) for w, s, d in ((8, 4, 2), (4, 4, 4))]
    sx_ok = m <= 8 and group in cuda.SX_GROUPS  # half the mma; its prologue grows with M
    if sx_ok:
        configs += [cuda.Config(w, s, pipe=d, prefetch=pf, sx=True) for w, s, d, pf in
                    ((8, 2, 0, True), (8, 4, 0, False), (8, 4, 0, True), (16, 4, 0, True), (16, 2, 0, True),
                     (4, 8, 0, False), (8, 4, 4, False))]
    for t in (2, 4):  # the last lease's gate/up (896 tiles) streamed 16% slower than down (256 longer ones)
        if n // 16 >= t * 2 * sms:
            configs += [cuda.Config(w, s, prefetch=pf, sx=sx, tiles=t) for sx in ((False, True) if sx_ok else (False,))
                        for w, s, pf in ((8, 2, True), (8, 4, False))]
    return [c for c in configs if 32 * c.warps <= c.threads_limit(m)]


def cuda_plans(m: int, n: int, k: int, group: int, dtype: torch.dtype, device: torch.device | None) -> list[Plan]:
    """``cuda_configs`` as plans, where the CUDA kernel can run this problem."""
    if device is None:
        return []
    from . import cuda

    if cuda.why_not(m, n, k, group, dtype, device):
        return []
    return [Plan("w4mma", warps=c.warps, stages=c.stage, pipe=c.pipe, l2=c.l2, prefetch=c.prefetch, sx=c.sx,
                 tiles=c.tiles) for c in cuda_configs(m, group, n, sm_count(device))]


def candidates(m: int, n: int, k: int, group: int, dtype: torch.dtype, sms: int,
               device: torch.device | None = None) -> list[Plan]:
    """Plans worth timing on a GPU for this problem (about a dozen, and the CUDA kernel's
    configurations where ``device`` can run it)."""
    out: list[Plan] = cuda_plans(m, n, k, group, dtype, device)
    bm = _m_tile(m)

    def with_splits(p: Plan, most: int = 3) -> list[Plan]:
        n_prog = triton.cdiv(n, p.bn) * (triton.cdiv(m, p.bm) if p.variant != "gemv" else 1)
        return [replace(p, split=s) for s in split_options(n_prog, triton.cdiv(k, p.bk), sms)[:most]]

    bk_pairs = _bk(group, (128, 64))
    bk_fold = _bk(group, (64, 32))
    bk_deq = _bk(group, (128, 64, 32))
    if m <= 64:
        stages = 4 if bm == 16 else 3
        bns = ((256, 128) if m == 1 else (256, 128, 64)) if bm == 16 else (64,)  # 2 x 64 rows at bm 64 spill
        for bn in bns if bk_pairs else ():
            out += with_splits(Plan("mma", bn=bn, bm=bm, bk=bk_pairs, warps=4, stages=stages), 2 if m == 1 else 3)
        out += with_splits(Plan("fold", bn=64, bm=bm, bk=bk_fold, warps=4, stages=stages), 1)
    if m == 1:  # CUDA cores: the tile, warps and split that keep the most bytes in flight
        bk = _bk(group, (128, 64, 32))
        out += with_splits(Plan("gemv", bn=256, bk=bk, warps=4, stages=3), 3)
        out += with_splits(Plan("gemv", bn=128, bk=bk, warps=4, stages=4), 2)
        out += with_splits(Plan("gemv", bn=256, bk=bk, warps=8, stages=3), 1)
    if 64 < m < 1024:  # weight tile dequantized once per 128 or 256 tokens; W as the right or left operand
        out += [Plan("fold", bn=128, bm=128, bk=bk_fold, warps=8, stages=3, swap=s) for s in (False, True)]
        if m >= 256:
            out.append(Plan("fold", bn=128, bm=256, bk=bk_fold, warps=8, stages=3, swap=False))
    elif m >= 1024:  # compute-bound: cuBLAS on the dequantized weight usually wins; fold as a check
        out.append(Plan("fold", bn=128, bm=128, bk=bk_fold, warps=8, stages=3, swap=False))
    if m >= 64 and dtype != torch.float32:  # dequant tiles: more rows per program, more bytes in flight
        out += [Plan("dequant", bn=bn, bk=bk_deq, warps=w) for bn, w in ((32, 4), (64, 4), (128, 8))]
        # wide tiles keep to 2048 weights a program: on the H200 (record 20261204T085215-int4_dequant-62fe7d)
        # 4096 or more (bn32/bk128, bn16/bk256, any bk512; 4 or 8 warps) decode at ~1.1 TB/s against 2.7-3.2
        out.append(Plan("dequant", bn=16, bk=bk_deq, warps=4, wide=True))
        if 256 % group == 0:  # a tile spanning whole groups: 256-column rows, longer runs a program
            out.append(Plan("dequant", bn=8, bk=256, warps=4, wide=True))
        chunks = dequant_chunks(n, k)
        if chunks > 1:
            out.append(Plan("dequant", bn=64, bk=bk_deq, warps=4, split=chunks))
            out.append(Plan("dequant", bn=16, bk=bk_deq, warps=4, split=chunks, wide=True))
    return out


def default_plan(m: int, n: int, k: int, group: int, sms: int, dtype: torch.dtype = torch.bfloat16) -> Plan:
    """The plan that runs untimed (CPU interpreter, graph capture, tuning switched off)."""
    if INTERPRET:  # small tiles: the interpreter runs every program in Python
        if group % 64 == 0 and m <= 64:
            return Plan("mma", bn=16, bm=16, bk=64, warps=4, stages=1)
        return Plan("fold", bn=32, bm=32, bk=_bk(group, (64, 32)), warps=4, stages=1)
    if m > 64:
        if dtype != torch.float32:  # cuBLAS on the dequantized weight: never far from bf16
            return Plan("dequant", bn=32, bk=_bk(group, (128, 64, 32)))
        return Plan("fold", bn=128, bm=128, bk=_bk(group, (64, 32)), warps=8, stages=3)
    bk_pairs = _bk(group, (128, 64))
    plan = (Plan("mma", bn=128 if m <= 16 else 64, bm=_m_tile(m), bk=bk_pairs, warps=4, stages=4 if m <= 16 else 3)
            if bk_pairs
            else Plan("fold", bn=64, bm=_m_tile(m), bk=_bk(group, (64, 32)), warps=4, stages=4))
    n_prog = triton.cdiv(n, plan.bn) * triton.cdiv(m, plan.bm)
    return replace(plan, split=split_options(n_prog, triton.cdiv(k, plan.bk), sms)[:2][-1])


def _alloc(shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Every output and workspace comes from here (tests poison it to catch unwritten elements)."""
    return torch.empty(shape, device=device, dtype=dtype)


_locks: dict[torch.device, torch.Tensor] = {}


def _lock_buffer(device: torch.device) -> torch.Tensor | None:
    """Per-device split-K tile locks (self-resetting); created outside graph capture only."""
    if device not in _locks:
        if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            return None
        _locks[device] = torch.zeros(LOCKS, dtype=torch.int32, device=device)
    return _locks[device]


def as_words(qweight: torch.Tensor, k: int) -> tuple[torch.Tensor, int]:
    """The packed codes as int32 words ``[N, ceil(K/8)]`` and the padded K (a copy only
    when K is not a multiple of 8 or the rows are not word aligned)."""
    kp = -(-k // 8) * 8
    q = qweight.contiguous()
    if kp != k or q.storage_offset() % 4:
        q = torch.nn.functional.pad(q, (0, kp // 2 - q.shape[1])).contiguous()
    return q.view(torch.int32), kp


def run(plan: Plan, x2: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, offsets: torch.Tensor,
        group: int) -> torch.Tensor:
    """``x2 [M, K] @ W^T`` with one plan; returns ``[M, N]`` in ``x2.dtype``."""
    if plan.variant == "w4mma":
        from . import cuda

        return cuda.run(x2, qweight, scales, offsets, group, cuda.Config(plan.warps, plan.stages, plan.pipe, plan.l2,
                                                                         plan.prefetch, plan.sx, plan.tiles))
    m, k = x2.shape
    n = qweight.shape[0]
    q32, kp = as_words(qweight, k)
    if kp != k:
        x2 = torch.nn.functional.pad(x2, (0, kp - k))
    x2 = x2 if x2.stride(-1) == 1 else x2.contiguous()
    scales, offsets = scales.contiguous(), offsets.contiguous()
    if plan.variant == "dequant":
        return _dequant_matmul(x2, q32, scales, offsets, group, kp, plan)
    y = _alloc((m, n), x2.device, x2.dtype)
    bm = 1 if plan.variant == "gemv" else plan.bm
    tiles = (triton.cdiv(n, plan.bn), triton.cdiv(m, bm))
    k_tiles = triton.cdiv(kp, plan.bk)
    locks = _lock_buffer(x2.device) if plan.split > 1 and 4 * tiles[0] * tiles[1] <= LOCKS else None
    split = plan.split if locks is not None and k_tiles % plan.split == 0 else 1
    part = _alloc((split, m, n), x2.device, torch.float32) if split > 1 else y
    locks = locks if split > 1 else y
    grid = (tiles[0], tiles[1], split)
    common = dict(EVEN_K=kp % plan.bk == 0, REDUCE=split > 1, num_warps=plan.warps, num_stages=plan.stages)
    dot_f32 = INTERPRET or x2.dtype == torch.float32
    if plan.variant == "gemv":
        if m != 1:
            raise ValueError(f"the gemv plan takes one row of x, got M={m}")
        _gemv[grid](x2, q32, scales, offsets, y, part, locks, n, kp, group, q32.stride(0), scales.stride(0),
                    F32_MAGIC, k_tiles // split, BN=plan.bn, BK=plan.bk, **common)
    elif plan.variant == "mma":
        magic, bias, code = MAGIC16.get(x2.dtype, MAGIC16[torch.bfloat16])
        bh = 16 if INTERPRET else 64  # rows per MMA block (64: one warpgroup's wgmma)
        blocks = plan.bn // bh
        if plan.bn % bh or blocks not in (1, 2, 4):
            raise ValueError(f"an mma plan has 1, 2 or 4 blocks of {bh} rows, got bn={plan.bn}")
        _mma_pairs[grid](x2, q32, scales, offsets, y, part, locks, m, n, kp, group, x2.stride(0), q32.stride(0),
                         scales.stride(0), y.stride(0), bias, k_tiles // split, MAGIC=magic, BH=bh,
                         BLOCKS=blocks, BM=plan.bm, BK=plan.bk, CODE=code, DOT_F32=dot_f32, ASM=not INTERPRET,
                         **common)
    elif plan.variant == "fold":
        _mma_fold[grid](x2, q32, scales, offsets, y, part, locks, m, n, kp, group, x2.stride(0), q32.stride(0),
                        scales.stride(0), y.stride(0), F32_MAGIC, k_tiles // split, BN=plan.bn, BM=plan.bm,
                        BK=plan.bk, SWAP=plan.swap, DOT_F32=dot_f32, **common)
    else:
        raise ValueError(f"unknown int4 plan variant {plan.variant!r}")
    return y


# A dense weight chunk this small stays in L2 until cuBLAS reads it, so its bytes are
# written and read there rather than through HBM; but smaller GEMMs fill the GPU less, so
# the tuner times the whole weight against chunks (``Plan.split`` = chunks for dequant).
DEQUANT_CHUNK_BYTES = 24 << 20


def dequant_chunks(n: int, k: int, elem_bytes: int = 2) -> int:
    """Row chunks that keep each dense chunk within DEQUANT_CHUNK_BYTES."""
    return max(1, min(triton.cdiv(n * k * elem_bytes, DEQUANT_CHUNK_BYTES), triton.cdiv(n, 128)))


def _dequant_matmul(x2: torch.Tensor, q32: torch.Tensor, scales: torch.Tensor, offsets: torch.Tensor, group: int,
                    kp: int, plan: Plan) -> torch.Tensor:
    """Dequantize a chunk of rows, multiply it with cuBLAS into its columns of ``y``, repeat."""
    n = q32.shape[0]
    rows = min(n, triton.cdiv(triton.cdiv(n, plan.split), 128) * 128)  # 128-row aligned chunks
    buf = _alloc((rows, kp), x2.device, x2.dtype)
    y = _alloc((x2.shape[0], n), x2.device, x2.dtype) if rows < n else None
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        w = buf[: r1 - r0]
        _dequant_words(q32[r0:r1], scales[r0:r1], offsets[r0:r1], group, kp, x2.dtype, plan.bn, plan.bk, out=w,
                       warps=plan.warps, wide=plan.wide)
        if y is None:  # one chunk: F.linear, the dense baseline's entry point (a wash: int4_dequant's route stage)
            return torch.nn.functional.linear(x2, w)
        torch.mm(x2, w.t(), out=y[:, r0:r1])
    return y


def _dequant_words(q32: torch.Tensor, scales: torch.Tensor, offsets: torch.Tensor, group: int, kp: int,
                   dtype: torch.dtype, bn: int, bk: int, out: torch.Tensor | None = None,
                   warps: int = 4, wide: bool = False) -> torch.Tensor:
    n = q32.shape[0]
    w = _alloc((n, kp), q32.device, dtype) if out is None else out
    (_dequant_wide if wide else _dequant)[(triton.cdiv(n, bn), triton.cdiv(kp, bk))](
        q32, scales, offsets, w, n, kp, group, q32.stride(0), scales.stride(0), w.stride(0), F32_MAGIC,
        BN=bn, BK=bk, EVEN_K=kp % bk == 0, num_warps=warps)
    return w


def dequantize(qweight: torch.Tensor, scales: torch.Tensor, offsets: torch.Tensor, group: int,
               dtype: torch.dtype) -> torch.Tensor:
    """The dense ``[N, K]`` weight in ``dtype``, decoded on the device."""
    k = qweight.shape[1] * 2
    q32, kp = as_words(qweight, k)
    bk = 32 if INTERPRET else _bk(group, (128, 64, 32))
    w = _dequant_words(q32, scales.contiguous(), offsets.contiguous(), group, kp, dtype, 16 if INTERPRET else 32, bk)
    return w[:, :k]


# ---- choosing a plan by timing -------------------------------------------------------------

_chosen: dict[tuple, dict] = {}
TUNE_BYTES = 96 << 20  # weight bytes one timed replay streams: past the L2, like a decode step
TUNE_COPIES = (2, 16)  # fewest / most weight copies per replay


def _weight_copies(qweight: torch.Tensor, scales: torch.Tensor, offsets: torch.Tensor) -> list[tuple]:
    """The weight plus enough clones that one replay over them reads about TUNE_BYTES
    (each call then finds its weight in HBM, not L2, as layer after layer does in decode)."""
    per = qweight.numel() * qweight.element_size() + 2 * scales.numel() * scales.element_size()
    n = max(TUNE_COPIES[0], min(TUNE_COPIES[1], -(-TUNE_BYTES // max(per, 1))))
    return [(qweight, scales, offsets)] + [(qweight.clone(), scales.clone(), offsets.clone()) for _ in range(n - 1)]


def _steady_time_ms(fns: list, reps: int = 5) -> float:
    """Median ms per call of ``fns`` run back to back, as the benchmark and a decode step see
    them (one CUDA graph over weight copies; eager calls if capture fails)."""
    return back_to_back_ms(fns, replays=reps, statistic=median, eager_fallback=True)


def _close(got: torch.Tensor, want: torch.Tensor) -> bool:
    rtol, atol = tolerance(got.dtype)
    scale = max(float(want.float().abs().max()), 1.0)
    return bool(torch.allclose(got.float(), want.float(), rtol=rtol, atol=atol * scale))


def _tune(key: tuple, x2, qweight, scales, offsets, group: int) -> Plan:
    m, k = x2.shape
    n = qweight.shape[0]
    want = ref.int4_matmul(x2, qweight, scales, offsets, group)
    timings: dict[str, float] = {}
    rejected: dict[str, str] = {}
    plans: dict[str, Plan] = {}
    best: tuple[float, Plan] | None = None
    copies = _weight_copies(qweight, scales, offsets)
    for plan in candidates(m, n, k, group, x2.dtype, sm_count(x2.device, off_gpu=8), x2.device):
        try:
            if not _close(run(plan, x2, qweight, scales, offsets, group), want):
                rejected[plan.label()] = "does not match ref"
                continue
            ms = _steady_time_ms([lambda p=plan, c=c: run(p, x2, c[0], c[1], c[2], group) for c in copies])
        except Exception as exc:  # a config that fails to compile or launch is skipped, not fatal
            rejected[plan.label()] = f"{type(exc).__name__}: {str(exc)[:200]}"
            continue
        timings[plan.label()] = ms
        plans[plan.label()] = plan
        if best is None or ms < best[0]:
            best = (ms, plan)
    plan = best[1] if best else default_plan(m, n, k, group, sm_count(x2.device, off_gpu=8), x2.dtype)
    _chosen[key] = {"plan": plan, "timings_ms": timings, "rejected": rejected, "plans": plans}
    return plan


def tuning_enabled() -> bool:
    return os.environ.get("SPARSEBENCH_INT4_TUNE", "1") != "0"


def choose(x2: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, offsets: torch.Tensor,
           group: int) -> Plan:
    m, k = x2.shape
    n = qweight.shape[0]
    key = _key(x2, qweight, scales, group)
    if key in _chosen:
        return _chosen[key]["plan"]
    if x2.device.type != "cuda" or not tuning_enabled() or torch.cuda.is_current_stream_capturing():
        return default_plan(m, n, k, group, sm_count(x2.device, off_gpu=8), x2.dtype)
    return _tune(key, x2, qweight, scales, offsets, group)


def best_per_variant(x2: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, group: int) -> dict[str, Plan]:
    """The fastest timed plan of each variant for this problem (empty before tuning); the
    wide dequantize kernel counts as a variant of its own, ``dequant-wide``."""
    report = _chosen.get(_key(x2, qweight, scales, group))
    if report is None:
        return {}
    out: dict[str, tuple[float, Plan]] = {}
    for label, ms in report["timings_ms"].items():
        plan = report["plans"][label]
        name = plan.variant + ("-wide" if plan.wide else "")
        if name not in out or ms < out[name][0]:
            out[name] = (ms, plan)
    return {v: p for v, (_, p) in out.items()}


def chosen() -> list[dict]:
    """What the tuner picked so far: one entry per (N, K, group, M bucket, dtype)."""
    return [{"n": key[0], "k": key[1], "group": key[2], "m_bucket": key[3], "dtype": str(key[4]),
             "plan": v["plan"].label(), "variant": v["plan"].variant, "timings_ms": v["timings_ms"],
             "rejected": v["rejected"]} for key, v in _chosen.items()]


def int4_matmul(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, offsets: torch.Tensor,
                group: int, plan: Plan | None = None) -> torch.Tensor:
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    plan = plan or choose(x2, qweight, scales, offsets, group)
    return run(plan, x2, qweight, scales, offsets, group).reshape(*lead, qweight.shape[0])


@torch.library.custom_op("sparsebench::int4_matmul", mutates_args=())
def _int4_matmul_op(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, offsets: torch.Tensor,
                    group: int) -> torch.Tensor:
    return int4_matmul(x, qweight, scales, offsets, group)


@_int4_matmul_op.register_fake
def _(x, qweight, scales, offsets, group):
    return x.new_empty((*x.shape[:-1], qweight.shape[0]))


def int4_matmul_op(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, offsets: torch.Tensor,
                   group: int) -> torch.Tensor:
    """``int4_matmul`` as a registered op (``torch.ops.sparsebench.int4_matmul``): under
    ``torch.compile`` the call stays whole; its plan choice and tuning (which time kernels)
    are never traced into the compiled step."""
    return _int4_matmul_op(x, qweight, scales, offsets, int(group))
