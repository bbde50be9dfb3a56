"""Thresholded sparse GEMV vs the dense bf16 cuBLAS GEMV at Llama-3-8B shapes.

    python benchmarks/kernels/sparse_gemv.py                    # on a GPU: record in results/kernels/
    TRITON_INTERPRET=1 python benchmarks/kernels/sparse_gemv.py --device cpu   # dry run, tiny shapes

For every shape (``K->N``: q/o 4096->4096, k/v 4096->1024, gate/up 4096->14336, down
14336->4096; ``--shapes ... gate_up_fused qkv_fused`` add the fused gate/up, 4096->28672, and
q/k/v, 4096->6144, that TEAL's decode runs when sibling layers share a threshold) and
activation sparsity 0, 10, ..., 90%:
  * ``cublas``: ``F.linear(x, W)`` with ``W [N, K]`` row-major in bf16, as ``nn.Linear`` runs;
  * ``triton``: ``sparse_gemv(x, W_t, t)`` with ``W_t [K, N]`` contiguous, the shape's default
    configuration (``config.default_config``: per shape class, ``SPARSEBENCH_GEMV_CONFIG``
    overrides), and ``t`` chosen so that the given fraction of ``|x|`` falls at or below it.
Each is timed side by side with ``time_calls``: one CUDA graph replaying calls on distinct
weight copies (together well past the L2), CUDA events. At 50% every variant of ``SWEEP``
(kernel kind, tiles, stages, reduction, program count) is timed too, as ``triton[<label>]``
cases (``--no-sweep`` skips them); the fastest of them, if it beats the default, is then
timed at every other sparsity as well, so the record holds the winner's whole curve.
Where NVRTC and a GPU are found, the CUDA kernel (``kernels/sparse_gemv/sparse_gemv.cu``) is
checked against the reference in every configuration of ``CUDA_CONFIGS`` (0/50/90%, scalar
and per-input thresholds) and each one that passes is timed as
``cuda[<label>]`` at 50% (``--no-cuda`` skips them), and on a Hopper or newer GPU once more
with programmatic dependent launch as ``cuda[<label>]+pdl``; the shape's default CUDA
configuration and the fastest of each kind at 50% are timed at every sparsity (their curves).
The end table shows the best at 50%.
On a Hopper or newer GPU the default is also timed with programmatic dependent launch, as
``triton+pdl`` (``SPARSEBENCH_PDL=1``: each call's launch and start overlap the call
before it, as on the decode path ``compile-tuned+gemv+pdl+graph``; ``--no-pdl`` skips it).

Correctness comes first: the default of every shape must match the reference on the GPU
(0/50/90% sparsity, scalar and per-input thresholds, shared tolerance table) or nothing is
recorded (if a default fails, ``FALLBACK`` is checked in its place and the record says so);
a sweep variant that fails its check (or does not compile, or is still unchecked after 60%
of ``--budget-s``) is left out of the timing and listed in the record. The run ends with a table per shape (default and best variant at 50%)
and the ``SPARSEBENCH_GEMV_CONFIG`` value / ``DEFAULTS`` lines that make the winners default.

On ``--device cpu`` (under ``TRITON_INTERPRET=1``) the same code runs end to end on tiny
shapes with a short sweep: correctness is checked for real; timings are the interpreter's
and meaningless; no record is written unless ``--results`` is given.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from contextlib import nullcontext
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F

from sparsebench.kernels.sparse_gemv import cuda as sg_cuda
from sparsebench.kernels.sparse_gemv import sparse_gemv_ref
from sparsebench.kernels.sparse_gemv.config import (
    ENV,
    GemvConfig,
    default_config,
    shape_class,
    with_programs,
)
from sparsebench.kernels.sparse_gemv.triton import sparse_gemv_triton
from sparsebench.kernels.tolerances import TOLERANCES, assert_close
from sparsebench.measure.decode_kernels import pdl_launches

SHAPES = {"q_o": (4096, 4096), "k_v": (4096, 1024), "gate_up": (4096, 14336), "down": (14336, 4096),
          "gate_up_fused": (4096, 28672), "qkv_fused": (4096, 6144)}
DEFAULT_SHAPES = ("q_o", "k_v", "gate_up", "down")  # the fused shapes on request
TINY = {"tiny_a": (37, 53), "tiny_b": (300, 40)}
SPARSITIES = tuple(i / 10 for i in range(10))
FALLBACK = GemvConfig(kind="mask", num_stages=1, pairs=False, reduce="launch")  # fewest features
SWEEP = tuple(GemvConfig.parse(s) for s in (
    # issue #6, from the sm_90 SASS (benchmarks/kernels/sparse_gemv_sass.py), first so the check
    # budget never leaves them out: the defaults with the counter reset unfenced (rz) and
    # the packing step on 16-byte x loads, next step prefetched (xa); then one K split (p=1:
    # no partials, no arrival atomics or fences, y stored directly) packing all of K in 2-4
    # steps, with 2-3 tiles in flight per program (s=4-5: fewer, longer programs)
    "kind=compact,bn=128,bk=64,w=4,s=3,dot=1,rz=1", "kind=compact,bn=128,bk=64,w=4,s=3,dot=1,rz=1,xa=1",
    "kind=mask,bn=64,bk=64,w=4,s=4,rz=1", "kind=mask,bn=64,bk=64,w=4,s=4,p=264,rz=1",
    "kind=compact,bn=64,bk=128,w=4,s=4,dot=1,p=1,ch=1024,xa=1", "kind=compact,bn=32,bk=256,w=4,s=5,dot=1,p=1,ch=2048,xa=1",
    "kind=compact,bn=128,bk=64,w=4,s=5,dot=1,p=1,ch=2048,xa=1",
    # the deep shape: 2-4 long splits (K 14336 packed in 2048-input steps), fused sum
    "kind=compact,bn=64,bk=128,w=4,s=4,dot=1,p=256,ch=2048,xa=1,rz=1",
    "kind=compact,bn=32,bk=256,w=4,s=5,dot=1,p=256,ch=2048,xa=1,rz=1",
    # live-row compaction (one bf16 row: list entries carry index and x bits, one 4-byte load
    # per slot, so the gather loop is pipelined end to end): tiles, rows in flight, stages
    # (the 8-warp and 512-wide tiles, 0.44-0.98x in both H200 runs, are gone)
    "kind=compact,bn=128,bk=32,w=4,s=3", "kind=compact,bn=128,bk=32,w=4,s=5", "kind=compact,bn=128,bk=64,w=4,s=3",
    "kind=compact,bn=128,bk=64,w=4,s=4", "kind=compact,bn=256,bk=32,w=4,s=4", "kind=compact,bn=64,bk=64,w=4,s=4",
    "kind=compact,bn=128,bk=32,w=4,s=3,p=264",
    # compaction once per K split in a small pre-pass, shared by all column tiles
    "kind=compact,bn=128,bk=32,w=4,s=3,pre=1", "kind=compact,bn=128,bk=64,w=4,s=4,pre=1",
    "kind=compact,bn=256,bk=32,w=4,s=4,pre=1", "kind=compact,bn=64,bk=64,w=4,s=4,pre=1",
    "kind=compact,bn=128,bk=32,w=4,s=3,p=264,pre=1",
    # one row on tensor cores
    "kind=compact,bn=128,bk=64,w=4,s=3,dot=1", "kind=compact,bn=128,bk=64,w=4,s=4,dot=1,pre=1",
    "kind=mask,bn=128,bk=64,w=4,s=4,dot=1",
    # mask kind, x read in pairs: the previous round's winners and neighbours
    "kind=mask,bn=64,bk=64,w=4,s=4", "kind=mask,bn=64,bk=64,w=4,s=4,p=264", "kind=mask,bn=128,bk=32,w=4,s=3",
    "kind=mask,bn=256,bk=32,w=4,s=2", "kind=mask,bn=512,bk=16,w=4,s=4", "kind=mask,bn=256,bk=32,w=4,s=3",
))
# the CUDA kernel (issue #6): the per-shape defaults (s=0: K split over a cluster from the SM
# count; ln=8 u=8 for k/v, u=4 wider), the old default (u=8) and k/v's runner-up (ln=4), then
# configurations whose grid still fits one wave on an H100/H200 (48 registers at u=4, 56 at
# u=6, 69 at u=8: 5 / 4 / 3 blocks of 8 warps an SM): more, narrower column tiles for q/o and
# down (ln=8, ln=4, 4 warps) and neighbours of the u=4 winner. Last lease's losers all ran in
# two waves (u=8 at 448-512 blocks, 16 warps of 64 columns) or with under one block an SM.
# Then the same with ``loc=1``.
CUDA_CONFIGS = tuple(sg_cuda.Config.parse(s) for s in (
    # (w=8,ln=8,u=6 / ln=4,u=4 / w=4,ln=8,u=4 / w=4,ln=16,u=4 / ln=16,u=2 never won: left out since
    # 20261203T172522, which times them)
    "w=8,ln=16,u=4,s=0", "w=8,ln=8,u=8,s=0", "w=8,ln=16,u=8,s=0", "w=8,ln=4,u=8,s=0", "w=8,ln=8,u=4,s=0",
    "w=8,ln=16,u=6,s=0", "w=8,ln=32,u=4,s=0",
    # each warp gathering its own slice (one scan pass, no block barrier before the gather)
    "w=8,ln=16,u=4,s=0,loc=1", "w=8,ln=8,u=8,s=0,loc=1", "w=8,ln=8,u=4,s=0,loc=1",
    # (the 16-byte scan vx=1, the tile-major weight tl=1 and explicit splits were timed in
    # 20261203T184016 / T184323, commit 097adfb: no gain; taken out again)
))
PROGRAMS_X_SM = (1, 2)  # the shape's default also at these many programs per SM (auto: 4)
CPU_SWEEP = 4  # the dry run times this many of SWEEP only (spread over the list)


def threshold_for(x: torch.Tensor, sparsity: float) -> float:
    """A threshold with the fraction ``sparsity`` of ``|x|`` at or below it."""
    if sparsity <= 0:
        return 0.0
    a = x.float().abs().flatten().sort().values
    return float(a[min(a.numel() - 1, max(0, round(sparsity * a.numel()) - 1))])


def make_operands(shapes: dict[str, tuple[int, int]], rows: int, device: str,
                  dtype: torch.dtype) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per shape ``(x, w_t, per-input noise)`` for the correctness checks (made once)."""
    g = torch.Generator().manual_seed(0)
    out = {}
    for name, (k, n) in shapes.items():
        w_t = (torch.randn(k, n, generator=g) / k ** 0.5).to(dtype).to(device)
        x = torch.randn(rows, k, generator=g).to(dtype).to(device)
        out[name] = (x, w_t, torch.rand(k, generator=g).to(device))
    return out


def _call(cfg: GemvConfig | sg_cuda.Config) -> Any:
    """The kernel call for a Triton or a CUDA configuration."""
    if isinstance(cfg, sg_cuda.Config):
        return partial(sg_cuda.sparse_gemv_cuda, config=cfg)
    return partial(sparse_gemv_triton, config=cfg)


def check(cfg: GemvConfig | sg_cuda.Config, operands: dict[str, tuple[torch.Tensor, ...]],
          sparsities: tuple[float, ...], per_input: bool) -> dict[str, float]:
    """Max abs error per case of ``cfg`` against the reference; AssertionError on a mismatch."""
    errors = {}
    for name, (x, w_t, noise) in operands.items():
        for s in sparsities:
            for per in (False, True) if per_input else (False,):
                t: float | torch.Tensor = threshold_for(x, s)
                if per:
                    t = noise * 2 * max(float(t), 1e-3)
                got = _call(cfg)(x, w_t, t)
                want = sparse_gemv_ref(x, w_t, t)
                assert_close(got, want)
                errors[f"{name}_s{s:g}_{'per_input' if per else 'scalar'}"] = float((got.float() - want.float()).abs().max())
    return errors


def try_check(cfg: GemvConfig | sg_cuda.Config, *args: Any) -> tuple[dict[str, float] | None, str]:
    """``check`` that reports a mismatch or a compile error instead of raising."""
    try:
        return check(cfg, *args), ""
    except Exception as exc:  # AssertionError, or a compilation / launch error of this variant
        return None, f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}"


def choose_defaults(shapes: dict[str, tuple[int, int]], operands: dict[str, Any],
                    sparsities: tuple[float, ...]) -> tuple[dict[str, GemvConfig], dict[str, Any]]:
    """The config timed as ``triton`` per shape (its default, else FALLBACK) and the check report."""
    chosen, report = {}, {}
    for name, (k, n) in shapes.items():
        for cfg in (default_config(n, k), FALLBACK):
            errors, why = try_check(cfg, {name: operands[name]}, sparsities, True)
            if errors is not None:
                chosen[name] = cfg
                report[name] = {"config": cfg.label(), "max_abs_err": errors}
                break
            print(f"!! {name}: {cfg.label()} failed its check: {why}", file=sys.stderr)
            report.setdefault("failed", []).append({"shape": name, "config": cfg.label(), "error": why})
        else:
            raise AssertionError(f"no configuration matches the reference at {name}")
    return chosen, report


def sweep_for(name: str, default: GemvConfig, sm_count: int, cpu: bool) -> list[GemvConfig]:
    """Variants timed at 50% for one shape: SWEEP (less its default) and the default at other
    program counts."""
    base = SWEEP[::len(SWEEP) // CPU_SWEEP][:CPU_SWEEP] if cpu else SWEEP  # cpu: a spread of kinds
    out = [c for c in base if c != default]
    out += [with_programs(default, f * sm_count) for f in PROGRAMS_X_SM]
    return out


def summary_table(rec: Any, shapes: dict[str, tuple[int, int]], defaults: dict[str, GemvConfig]) -> dict[str, Any]:
    """Print per shape the speed-up at 50% of the default and of the best variant (and the GB/s
    of live weight rows it streams); return the best per shape."""
    at50 = [r for r in rec.ratios if r["sparsity"] == 0.5]
    gbs = {(c.params["shape"], c.impl): c.extra.get("live_gbs", 0.0) for c in rec.cases if c.params["sparsity"] == 0.5}
    best: dict[str, Any] = {}
    print(f"\n{'shape':8s} {'class':7s} {'default@50%':>11s} {'+pdl':>6s} {'best@50%':>9s} {'live GB/s':>9s} "
          f"{'cuda@50%':>9s} {'+pdl':>6s}  best variant (without PDL); best cuda; best cuda+pdl")
    for name, (k, n) in shapes.items():
        with_pdl = next((r["speedup"] for r in at50 if r["shape"] == name and r["impl"] == "triton+pdl"), float("nan"))
        cuda_all = [r for r in at50 if r["shape"] == name and r["impl"].startswith("cuda[")]
        cuda_rows = [r for r in cuda_all if not r["impl"].endswith("+pdl")]
        cuda_pdl_rows = [r for r in cuda_all if r["impl"].endswith("+pdl")]
        rows = [r for r in at50 if r["shape"] == name and r["impl"] != "triton+pdl" and not r["impl"].startswith("cuda[")]
        if not rows:
            continue
        d = next((r["speedup"] for r in rows if r["impl"] == "triton"), float("nan"))
        top = max(rows, key=lambda r: r["speedup"])
        is_default = top["impl"] == "triton"
        label = defaults[name].label() if is_default else top["impl"][len("triton["):-1]
        best[name] = {"class": shape_class(n, k), "label": label, "speedup": top["speedup"], "default_speedup": d}
        best[name]["pdl_speedup"] = with_pdl
        top_cuda = max(cuda_rows, key=lambda r: r["speedup"]) if cuda_rows else None
        if top_cuda is not None:
            best[name]["cuda"] = {"label": top_cuda["impl"][len("cuda["):-1], "speedup": top_cuda["speedup"],
                                  "live_gbs": gbs.get((name, top_cuda["impl"]), 0.0)}
        top_pdl = max(cuda_pdl_rows, key=lambda r: r["speedup"]) if cuda_pdl_rows else None
        if top_pdl is not None:
            best[name]["cuda_pdl"] = {"label": top_pdl["impl"][len("cuda["):-len("]+pdl")],
                                      "speedup": top_pdl["speedup"]}
        cuda_txt = f"{top_cuda['speedup']:8.2f}x" if top_cuda else f"{'-':>9s}"
        cuda_txt += f" {top_pdl['speedup']:5.2f}x" if top_pdl else f" {'-':>6s}"
        print(f"{name:8s} {best[name]['class']:7s} {d:10.2f}x {'-' if with_pdl != with_pdl else f'{with_pdl:.2f}x':>6s} {top['speedup']:8.2f}x "
              f"{gbs.get((name, top['impl']), 0.0):9.0f} {cuda_txt}  {label}{' (the default)' if is_default else ''}"
              + (f"; {top_cuda['impl']} ({best[name]['cuda']['live_gbs']:.0f} live GB/s)" if top_cuda else "")
              + (f"; {top_pdl['impl']}" if top_pdl else ""))
    if best:
        per_class = {b["class"]: b["label"] for b in best.values()}
        print(f"\nto make the winners default:\n  export {ENV}=\"" +
              ";".join(f"{c}:{lab}" for c, lab in per_class.items()) + "\"")
        print("  or in kernels/sparse_gemv/config.py DEFAULTS:")
        for c, lab in per_class.items():
            print(f"    \"{c}\": GemvConfig.parse(\"{lab}\"),")
    return best


def check_sweeps(shapes: dict[str, tuple[int, int]], operands: dict[str, Any], defaults: dict[str, GemvConfig],
                 sm_count: int, cpu: bool, deadline: float) -> tuple[dict[str, list[GemvConfig]], list[dict[str, str]]]:
    """The sweep variants that match the reference at each shape, and those left out (why).
    Checking compiles each variant: past ``deadline`` (time.time()) the rest are left out."""
    sweeps: dict[str, list[GemvConfig]] = {}
    excluded: list[dict[str, str]] = []
    for name in shapes:
        sweeps[name] = []
        for cfg in sweep_for(name, defaults[name], sm_count, cpu):
            if time.time() > deadline:
                excluded.append({"shape": name, "config": cfg.label(), "error": "not checked: time budget"})
                continue
            errors, why = try_check(cfg, {name: operands[name]}, (0.5,), False)
            if errors is None:
                excluded.append({"shape": name, "config": cfg.label(), "error": why})
                print(f"!! {name}: left out {cfg.label()}: {why}", file=sys.stderr)
            else:
                sweeps[name].append(cfg)
    return sweeps, excluded


def check_cuda(shapes: dict[str, tuple[int, int]], operands: dict[str, Any], rows: int,
               sparsities: tuple[float, ...]) -> tuple[dict[str, list[sg_cuda.Config]], list[dict[str, str]], str]:
    """The CUDA configurations that match the reference at each shape, those left out (why),
    and why none were tried (empty when they were)."""
    from sparsebench.kernels import cuda_rtc

    ok, why = cuda_rtc.available()
    if not ok:
        return {n: [] for n in shapes}, [], why
    passed: dict[str, list[sg_cuda.Config]] = {}
    excluded: list[dict[str, str]] = []
    for name, (k, n) in shapes.items():
        passed[name] = []
        for cfg in CUDA_CONFIGS:
            refused = sg_cuda.why_not(rows, n, k, torch.bfloat16, torch.device("cuda"), cfg)
            if refused:
                excluded.append({"shape": name, "config": f"cuda[{cfg.label()}]", "error": refused})
                continue
            errors, err = try_check(cfg, {name: operands[name]}, sparsities, True)
            if errors is None:
                excluded.append({"shape": name, "config": f"cuda[{cfg.label()}]", "error": err})
                print(f"!! {name}: left out cuda[{cfg.label()}]: {err}", file=sys.stderr)
            else:
                passed[name].append(cfg)
    return passed, excluded, ""


def make_record(correctness: dict[str, Any], defaults: dict[str, GemvConfig], fell_back: list[str], cpu: bool,
                ceilings: bool, profile: str | None) -> Any:
    from sparsebench.store.kernel_records import new_kernel_record

    measured = None
    if not cpu and ceilings:
        from sparsebench.measure.ceilings import run_ceilings

        measured = run_ceilings()
    rec = new_kernel_record("sparse_gemv", "cublas", correctness, profile=profile or ("cpu" if cpu else None),
                            ceilings=measured)
    if cpu:
        rec.notes.append("dry run under the Triton interpreter on CPU: timings are meaningless")
    else:
        rec.hardware["device_name"] = torch.cuda.get_device_name()
    for name, cfg in defaults.items():
        rec.notes.append(f"triton at {name}: {cfg.label()}"
                         + (" (FALLBACK: the shape's default failed its check)" if name in fell_back else ""))
    rec.notes.append("cublas: F.linear(x, W) with W [N, K] row-major (nn.Linear); triton: sparse_gemv on "
                     "W_t [K, N] contiguous with the threshold fused; x ~ N(0, 1), threshold = the "
                     "sparsity-quantile of |x|; distinct weight copies per timed call, one CUDA graph; "
                     "live_gbs: bytes of the weight rows of live inputs / time")
    return rec


def _case(impl: str, params: dict[str, Any], samples: list[float], weight_bytes: int, live: float) -> Any:
    from sparsebench.measure.stats import summarize
    from sparsebench.store.kernel_records import KernelCase

    st = summarize(samples)
    return KernelCase(impl=impl, params=params, samples_ms=[round(s, 5) for s in samples], p50_ms=st["p50"],
                      p90_ms=st["p90"], extra={"dense_equiv_gbs": weight_bytes / (st["p50"] * 1e-3) / 1e9,
                                               "live_gbs": live * weight_bytes / (st["p50"] * 1e-3) / 1e9})


def time_shape(rec: Any, name: str, k: int, n: int, variants_at_50: list[GemvConfig], default: GemvConfig,
               opts: argparse.Namespace, sparsities: tuple[float, ...], reps: int, g: torch.Generator,
               cuda_configs: list[sg_cuda.Config] = ()) -> None:
    """cuBLAS and the default at every sparsity, the sweep at 50%, on distinct weight copies."""
    from sparsebench.measure.kernelbench import copies_for, time_calls_on

    device, dtype, cpu = opts.device, torch.bfloat16, opts.device == "cpu"
    time_calls = partial(time_calls_on, device)
    wbytes = k * n * 2
    copies = 2 if cpu else copies_for(wbytes)
    ws = [(torch.randn(n, k, generator=g) / k ** 0.5).to(dtype).to(device) for _ in range(copies)]
    wts = [w.t().contiguous() for w in ws]
    xs = [torch.randn(opts.rows, k, generator=g).to(dtype).to(device) for _ in range(copies)]
    # 50% first: its sweep picks the variant whose whole curve is timed beside the default's
    best: GemvConfig | None = None
    lines = {}
    cuda_default = sg_cuda.default_config(n, k)
    cuda_curve, cuda_curve_pdl = {cuda_default}, {cuda_default}
    for s in sorted(sparsities, key=lambda v: v != 0.5):
        ts = [threshold_for(x, s) for x in xs]
        achieved = sum(float((x.float().abs() <= t).float().mean()) for x, t in zip(xs, ts, strict=True)) / copies
        live = sum(float((x.float().abs() > t).any(0).float().mean()) for x, t in zip(xs, ts, strict=True)) / copies
        params = {"shape": name, "k": k, "n": n, "m": opts.rows, "sparsity": s}
        dense_calls = [lambda w=w, x=x: F.linear(x, w) for w, x in zip(ws, xs, strict=True)]
        base = _case("cublas", params, time_calls(dense_calls, reps), wbytes, 1.0)
        rec.cases.append(base)
        variants = [("triton", default)] + ([("triton+pdl", default)] if opts.pdl else [])
        if s == 0.5:
            variants += [(f"triton[{c.label()}]", c) for c in variants_at_50]
        elif best is not None:
            variants.append((f"triton[{best.label()}]", best))
        # every CUDA configuration at 50%, with and without PDL; elsewhere the shape's default
        # and the fastest of each kind at 50% (their whole curves)
        on_curve = cuda_configs if s == 0.5 else [c for c in cuda_configs if c in cuda_curve]
        variants += [(f"cuda[{c.label()}]", c) for c in on_curve]
        on_curve = cuda_configs if s == 0.5 else [c for c in cuda_configs if c in cuda_curve_pdl]
        variants += [(f"cuda[{c.label()}]+pdl", c) for c in on_curve if opts.pdl]
        timed, cfg_of = [], {}
        for impl, cfg in variants:
            fn = _call(cfg)
            calls = [lambda wt=wt, x=x, t=t, fn=fn: fn(x, wt, t) for wt, x, t in zip(wts, xs, ts, strict=True)]
            try:
                with pdl_launches() if impl.endswith("+pdl") else nullcontext():
                    c = _case(impl, params, time_calls(calls, reps), wbytes, live)
            except Exception:  # e.g. fails only under graph capture: report it, time the others
                print(f"!! {name} s={s:.1f}: timing {impl} failed:\n{traceback.format_exc(limit=2)}", file=sys.stderr)
                rec.notes.append(f"timing failed at {name} s={s}: {impl}")
                continue
            c.extra["achieved_sparsity"] = achieved
            rec.cases.append(c)
            timed.append(c)
            cfg_of[c.impl] = cfg
        line = f"cublas {base.p50_ms * 1e3:8.2f}us"
        for c in timed[:1] if timed and timed[0].impl == "triton" else []:
            line += f"  triton {c.p50_ms * 1e3:8.2f}us  speed-up {base.p50_ms / c.p50_ms:5.2f}x"
        for c in (c for c in timed if c.impl == "triton+pdl"):
            line += f"  +pdl {base.p50_ms / c.p50_ms:5.2f}x"
        others = [c for c in timed if c.impl not in ("triton", "triton+pdl") and not c.impl.startswith("cuda[")]
        cudas = [c for c in timed if c.impl.startswith("cuda[") and not c.impl.endswith("+pdl")]
        cudas_pdl = [c for c in timed if c.impl.startswith("cuda[") and c.impl.endswith("+pdl")]
        if s == 0.5 and others:
            fastest = min(others, key=lambda c: c.p50_ms)
            line += f"  best of {len(timed)}: {base.p50_ms / fastest.p50_ms:5.2f}x {fastest.impl}"
            default_ms = timed[0].p50_ms if timed[0].impl == "triton" else float("inf")
            if fastest.p50_ms < default_ms:
                best = cfg_of[fastest.impl]
                rec.notes.append(f"curve 0..90% also timed at {name} for the best variant at 50%: {best.label()}")
        elif others:
            line += f"  best@50% {others[0].p50_ms * 1e3:8.2f}us  {base.p50_ms / others[0].p50_ms:5.2f}x"
        if cudas:
            top = min(cudas, key=lambda c: c.p50_ms)
            line += f"  cuda best {base.p50_ms / top.p50_ms:5.2f}x {top.impl}"
            if s == 0.5:
                cuda_curve.add(cfg_of[top.impl])
        if cudas_pdl:
            top = min(cudas_pdl, key=lambda c: c.p50_ms)
            line += f"  cuda+pdl best {base.p50_ms / top.p50_ms:5.2f}x {top.impl}"
            if s == 0.5:
                cuda_curve_pdl.add(cfg_of[top.impl])
        lines[s] = f"{name:8s} s={s:.1f}  {line}"
        if s == 0.5:
            print(lines[s], flush=True)
    for s in sorted(lines):
        if s != 0.5:
            print(lines[s], flush=True)
    del ws, wts, xs
    if not cpu:
        torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--shapes", nargs="+", help=f"subset of {', '.join(SHAPES)} (cpu: {', '.join(TINY)})")
    p.add_argument("--rows", type=int, default=1, help="activation rows (decode batch), default 1")
    p.add_argument("--reps", type=int, default=50)
    p.add_argument("--no-sweep", action="store_true", help="skip timing the other variants at 50%%")
    p.add_argument("--results", default=None, help="results directory (default: results on cuda, none on cpu)")
    p.add_argument("--no-ceilings", action="store_true", help="skip measuring copy bandwidth / GEMM rate")
    p.add_argument("--budget-s", type=float, default=150.0,
                   help="sweep variants still unchecked (uncompiled) after 60%% of this are left out")
    p.add_argument("--profile", default=None, help="hardware profile id for the record (default: auto; cpu on cpu)")
    p.add_argument("--no-cuda", dest="cuda", action="store_false",
                   help="skip the CUDA kernel (sparse_gemv.cu) cases")
    p.add_argument("--no-pdl", dest="pdl", action="store_false",
                   help="skip the triton+pdl and cuda[...]+pdl cases (taken only on a Hopper or newer GPU)")
    args = p.parse_args(argv)
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device (use --device cpu with TRITON_INTERPRET=1 for a dry run)", file=sys.stderr)
        return 2
    if args.pdl:
        from sparsebench.kernels.launch import hopper_or_newer

        args.pdl = hopper_or_newer(torch.device(device))
    table = SHAPES if device == "cuda" else TINY
    names = args.shapes or (list(DEFAULT_SHAPES) if device == "cuda" else list(table))
    unknown = [s for s in names if s not in table]
    if unknown:
        print(f"error: unknown shape(s) {unknown}; known here: {', '.join(table)}", file=sys.stderr)
        return 2
    shapes = {s: table[s] for s in names}
    dtype = torch.bfloat16
    cpu = device == "cpu"
    results = args.results if args.results is not None else (None if cpu else "results")
    started = time.time()

    operands = make_operands(shapes, args.rows, device, dtype)
    try:
        defaults, report = choose_defaults(shapes, operands, (0.0, 0.5, 0.9))
    except AssertionError as exc:
        print(f"kernel does not match the reference; nothing recorded:\n{exc}", file=sys.stderr)
        return 1
    from sparsebench.kernels.launch import sm_count

    sm = sm_count(torch.device(device))
    sweeps, excluded = ({n: [] for n in shapes}, []) if args.no_sweep else check_sweeps(
        shapes, operands, defaults, sm, cpu, started + 0.6 * args.budget_s)
    cuda_cfgs, cuda_excluded, cuda_why = ({n: [] for n in shapes}, [], "not asked for (--no-cuda)" if not args.cuda
                                          else "no GPU (dry run)")
    if args.cuda and not cpu:
        cuda_cfgs, cuda_excluded, cuda_why = check_cuda(shapes, operands, args.rows, (0.0, 0.5, 0.9))
    if cuda_why:
        print(f"cuda cases skipped: {cuda_why}")
    else:
        print(f"cuda: {sum(map(len, cuda_cfgs.values()))} configuration cases match ref, "
              f"{len(cuda_excluded)} left out")
    excluded = excluded + cuda_excluded
    del operands
    fell_back = [n for n in shapes if defaults[n] == FALLBACK]
    print(f"correctness vs ref passed for the defaults{f' (FALLBACK at {fell_back})' if fell_back else ''}; "
          f"{sum(map(len, sweeps.values()))} sweep cases pass, {len(excluded)} left out ({time.time() - started:.0f}s)")
    correctness = {"passed": True, "against": "sparsebench.kernels.sparse_gemv.ref",
                   "dtype": str(dtype).removeprefix("torch."), "rows": args.rows,
                   "tolerance": TOLERANCES[str(dtype).removeprefix("torch.")], "defaults": report,
                   "sweep": "each timed triton[...] variant matched ref at 50% (scalar threshold) at its shape",
                   "cuda": ("each timed cuda[...] configuration matched ref at 0/50/90% (scalar and per-input "
                            "thresholds) at its shape") if not cuda_why else f"not run: {cuda_why}",
                   "excluded": excluded}
    rec = make_record(correctness, defaults, fell_back, cpu, not args.no_ceilings, args.profile)
    g = torch.Generator().manual_seed(1)
    for name, (k, n) in shapes.items():
        time_shape(rec, name, k, n, sweeps[name], defaults[name], args, (0.0, 0.5, 0.9) if cpu else SPARSITIES,
                   min(args.reps, 2) if cpu else args.reps, g, cuda_cfgs[name])
    rec.add_ratios(("shape", "sparsity"))
    best = summary_table(rec, shapes, defaults)
    for name, b in best.items():
        rec.notes.append(f"best at 50% for {name} ({b['class']}): {b['speedup']:.3f}x with {b['label']} "
                         f"(default {b['default_speedup']:.3f}x)")
        if "cuda" in b:
            rec.notes.append(f"best cuda at 50% for {name}: {b['cuda']['speedup']:.3f}x with cuda[{b['cuda']['label']}]")
        if "cuda_pdl" in b:
            rec.notes.append(f"best cuda with PDL at 50% for {name}: {b['cuda_pdl']['speedup']:.3f}x with "
                             f"cuda[{b['cuda_pdl']['label']}]+pdl")
    print(f"\ntotal {time.time() - started:.0f}s")
    if results:
        from sparsebench.store.kernel_records import write_kernel_record

        print(f"wrote {write_kernel_record(rec, results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
