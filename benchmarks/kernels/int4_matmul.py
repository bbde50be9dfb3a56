"""int4 weight-only matmul on the GPU: our kernels (Triton, and CUDA for M <= 16) vs bf16 cuBLAS vs torch's int4pack.

    python benchmarks/kernels/int4_matmul.py --results results
    TRITON_INTERPRET=1 python benchmarks/kernels/int4_matmul.py --device cpu   # dry run, tiny shapes

Llama-3-8B projection shapes, M (tokens) 1 .. 4096, group size 128. Every implementation is
first checked against ``kernels/int4_matmul/ref.py`` on the GPU with the shared tolerance
table; one that fails is reported and not timed, and if ours fails nothing is recorded.
Our first call per (shape, M bucket) times the candidate plans (Triton gemv / mma / fold /
dequant + cuBLAS, a few tile and split-K choices each; for M <= 16 also the CUDA tensor-core
kernel ``w4mma`` in a few warp and stage configurations, where NVRTC is found) as this benchmark does (back-to-back calls
over weight copies past the L2, in a CUDA graph, median) and keeps the fastest: that is
``ours_int4``. The fastest plan of every other variant is timed beside it as
``ours_int4[<variant>]``, each checked against ``ref`` first, so the record shows what
each route reaches. Where ours is the CUDA kernel on a Hopper GPU it is also timed with
programmatic dependent launch, ``ours_int4+pdl`` (``SPARSEBENCH_PDL=1``: each call's weight
loads start while the call before it drains, as on the decode path ``...+pdl+graph``; cuBLAS
and int4pack are launched as torch launches them). Timing: ``sparsebench.measure.kernelbench.time_calls`` (distinct
operand copies per call so the L2 never holds the weights, calls captured in a CUDA graph,
CUDA events). Writes one kernel record under ``results/kernels/``; the table at the end
gives per shape and M our speed-up, int4pack's, and the plan that won.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F

from sparsebench.kernels.int4_matmul import int4_matmul, ref
from sparsebench.kernels.int4_matmul import triton as fast
from sparsebench.kernels.launch import hopper_or_newer
from sparsebench.kernels.tolerances import assert_close
from sparsebench.measure.decode_kernels import pdl_launches
from sparsebench.store.kernel_records import KernelCase, new_kernel_record, write_kernel_record

SHAPES = {  # name: (N, K) of y = x W^T, Llama-3-8B
    "q_o_proj": (4096, 4096),
    "k_v_proj": (1024, 4096),
    "gate_up_proj": (14336, 4096),
    "down_proj": (4096, 14336),
}
TINY = {"tiny_a": (100, 256), "tiny_b": (37, 384)}  # --device cpu
MS = (1, 2, 4, 8, 16, 64, 2048, 4096)
CPU_MS = (1, 3, 70)
GROUP = 128


def random_int4(n: int, k: int, group: int, seed: int, device: str = "cuda") -> tuple[torch.Tensor, ...]:
    g = torch.Generator(device=device).manual_seed(seed)
    q = torch.randint(0, 16, (n, k), generator=g, device=device, dtype=torch.uint8)
    packed = (q[:, 0::2] | (q[:, 1::2] << 4)).contiguous()
    scales = (torch.rand(n, k // group, generator=g, device=device) * 0.01 + 0.001).half()
    offsets = (-8 * scales.float()).half()
    return q, packed, scales, offsets


def to_torch_int4pack(q: torch.Tensor, scales: torch.Tensor, offsets: torch.Tensor, inner_k_tiles: int = 8):
    """torch's tinygemm layout: uint8 [N, K/2] with the even column in the HIGH nibble, and
    [K/G, N, 2] (scale, zero) in bf16 with w = (q - 8) * scale + zero."""
    u8 = ((q[:, 0::2] << 4) | q[:, 1::2]).contiguous()
    packed = torch._convert_weight_to_int4pack(u8, inner_k_tiles)
    zero = offsets.float() + 8 * scales.float()
    sz = torch.stack([scales.float().t(), zero.t()], dim=-1).to(torch.bfloat16).contiguous()
    return packed, sz


def check_correctness(shapes: dict[str, tuple[int, int]], ms: tuple[int, ...], device: str) -> tuple[dict, bool]:
    """Ours (raises on a mismatch: nothing recorded) and torch's int4pack (reported) vs ref."""
    correctness: dict[str, Any] = {"group": GROUP, "checked": []}
    torch_ok = device == "cuda"
    for name, (n, k) in shapes.items():
        q, packed, scales, offsets = random_int4(n, k, GROUP, seed=1, device=device)
        for m in ms:
            x = torch.randn(m, k, device=device, dtype=torch.bfloat16)
            want = ref.int4_matmul(x, packed, scales, offsets, GROUP)
            got = int4_matmul(x, packed, scales, offsets, GROUP, impl="triton")
            entry = {"shape": name, "m": m, "triton_max_abs_err": float((got.float() - want.float()).abs().max()),
                     "plan": fast.choose(x, packed, scales, offsets, GROUP).label()}
            assert_close(got, want)
            if device == "cuda":
                try:
                    tp, sz = to_torch_int4pack(q, scales, offsets)
                    got_t = torch._weight_int4pack_mm(x, tp, GROUP, sz)
                    entry["torch_int4pack_max_abs_err"] = float((got_t.float() - want.float()).abs().max())
                    assert_close(got_t, want)
                except Exception as exc:  # torch's path is a comparison, not ours: report and skip it
                    torch_ok = False
                    entry["torch_int4pack_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
            correctness["checked"].append(entry)
    correctness["passed"] = True
    correctness["torch_int4pack_passed"] = torch_ok
    return correctness, torch_ok


def variant_plans(x: torch.Tensor, t: tuple, device: str) -> tuple[fast.Plan, dict[str, fast.Plan]]:
    """The plan ours runs, and the fastest plan of each other variant (the tuner's timings;
    on the dry run the interpreter's default plus one plan per other variant)."""
    _, packed, scales, offsets = t
    chosen = fast.choose(x, packed, scales, offsets, GROUP)
    if device == "cuda":
        others = fast.best_per_variant(x, packed, scales, GROUP)
    else:
        others = {"fold": fast.Plan("fold", bn=32, bm=32, bk=64, stages=1),
                  "dequant": fast.Plan("dequant", bn=32, bk=64),
                  "dequant-wide": fast.Plan("dequant", bn=16, bk=64, wide=True)}
        if x.shape[0] == 1:
            others["gemv"] = fast.Plan("gemv", bn=32, bk=64, stages=1)
    return chosen, {v: p for v, p in others.items() if p != chosen}


def time_case(rec, impl: str, params: dict, calls: list, reps: int, device: str, wbytes: float) -> float | None:
    from sparsebench.measure.kernelbench import summary, time_calls_on

    try:
        samples = time_calls_on(device, calls, reps)
    except Exception:
        traceback.print_exc()
        return None
    st = summary(samples)
    m, n, k = params["m"], params["n"], params["k"]
    rec.cases.append(KernelCase(
        impl=impl, params=params, samples_ms=[round(s, 5) for s in samples], p50_ms=st["p50"], p90_ms=st["p90"],
        extra={"weight_gbs": wbytes / (st["p50"] * 1e-3) / 1e9, "tflops": 2 * m * n * k / (st["p50"] * 1e-3) / 1e12}))
    return st["p50"]


def print_summary(rec, winners: dict[tuple[str, int], str]) -> None:
    """Per shape and M: our speed-up, int4pack's, every variant's, and the plan that won."""
    speed = {(r["shape"], r["m"], r["impl"]): r["speedup"] for r in rec.ratios}
    base = {(c.params["shape"], c.params["m"]): c.p50_ms for c in rec.cases if c.impl == rec.baseline_impl}
    variants = sorted({i for (_, _, i) in speed if i.startswith("ours_int4[")})
    head = ["shape", "M", "bf16 us", "ours", "ours+pdl", "int4pack", *[v.removeprefix("ours_int4") for v in variants],
            "won"]
    print("\n| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for (shape, m), ms in base.items():
        cells = [shape, str(m), f"{ms * 1e3:.1f}"]
        cells += [f"{speed[(shape, m, i)]:.2f}x" if (shape, m, i) in speed else "-"
                  for i in ("ours_int4", "ours_int4+pdl", "torch_int4pack", *variants)]
        print("| " + " | ".join(cells + [winners.get((shape, m), "-")]) + " |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--results", default=None, help="results directory (default: results on cuda, none on cpu)")
    p.add_argument("--ms", type=int, nargs="+")
    p.add_argument("--shapes", nargs="+", help=f"subset of {', '.join(SHAPES)} (cpu: {', '.join(TINY)})")
    p.add_argument("--reps", type=int, default=30)
    args = p.parse_args(argv)
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        print("skipped: no CUDA device (this benchmark measures GPU kernels; --device cpu is a dry run)")
        return 0
    if device == "cpu" and not fast.INTERPRET:
        print("error: --device cpu needs TRITON_INTERPRET=1", file=sys.stderr)
        return 2
    table = SHAPES if device == "cuda" else TINY
    names = args.shapes or list(table)
    if any(s not in table for s in names):
        print(f"error: unknown shape(s) {names}; known here: {', '.join(table)}", file=sys.stderr)
        return 2
    shapes = {s: table[s] for s in names}
    ms = args.ms or list(MS if device == "cuda" else CPU_MS)
    reps = args.reps if device == "cuda" else 1
    results = args.results if args.results is not None else ("results" if device == "cuda" else None)
    torch.manual_seed(0)
    # 1. correctness on the device, before any timing (this also tunes those M buckets)
    correctness, torch_ok = check_correctness(shapes, (1, 5, 300) if device == "cuda" else (1, 3, 70), device)
    print("correctness:", correctness, flush=True)
    ceilings = None
    if device == "cuda":
        from sparsebench.measure.ceilings import run_ceilings

        ceilings = run_ceilings()
    rec = new_kernel_record("int4_matmul", "bf16_cublas", correctness, profile=None if device == "cuda" else "cpu",
                            ceilings=ceilings)
    rec.notes.append(f"group size {GROUP}; weights random codes; bf16 activations; M = tokens")
    if device == "cpu":
        rec.notes.append("dry run under the Triton interpreter on CPU: timings are meaningless")
    winners: dict[tuple[str, int], str] = {}
    # 2. timing
    from sparsebench.measure.kernelbench import copies_for

    for name, (n, k) in shapes.items():
        bf16_copies = copies_for(n * k * 2) if device == "cuda" else 2
        int4_copies = copies_for(n * k // 2) if device == "cuda" else 2
        ws = [torch.randn(n, k, device=device, dtype=torch.bfloat16) for _ in range(bf16_copies)]
        qs = [random_int4(n, k, GROUP, seed=10 + i, device=device) for i in range(int4_copies)]
        tps = [to_torch_int4pack(q, s, o) for q, _, s, o in qs] if torch_ok else []
        for m in ms:
            xs = torch.randn(m, k, device=device, dtype=torch.bfloat16)
            fast.int4_matmul(xs, *qs[0][1:], GROUP)  # tunes this M bucket (outside any timing)
            chosen, others = variant_plans(xs, qs[0], device)
            winners[(name, m)] = chosen.label()
            want = ref.int4_matmul(xs, *qs[0][1:], GROUP)
            for plan in (chosen, *others.values()):  # each timed plan matches ref here first
                assert_close(fast.int4_matmul(xs, *qs[0][1:], GROUP, plan=plan), want)
            impls = {
                "bf16_cublas": [lambda w=w, xs=xs: F.linear(xs, w) for w in ws],
                "ours_int4": [lambda t=t, xs=xs: int4_matmul(xs, t[1], t[2], t[3], GROUP, impl="triton") for t in qs],
            }
            if tps:
                impls["torch_int4pack"] = [lambda t=t, xs=xs: torch._weight_int4pack_mm(xs, t[0], GROUP, t[1])
                                           for t in tps]
            if chosen.variant == "w4mma" and hopper_or_newer(xs.device):  # same calls, PDL launches
                impls["ours_int4+pdl"] = impls["ours_int4"]
            for variant, plan in others.items():
                impls[f"ours_int4[{variant}]"] = [
                    lambda t=t, xs=xs, plan=plan: fast.int4_matmul(xs, t[1], t[2], t[3], GROUP, plan=plan) for t in qs]
            line = [f"{name:13s} M={m:5d}"]
            params = {"shape": name, "n": n, "k": k, "m": m, "group": GROUP}
            for impl, calls in impls.items():
                wbytes = n * k * (2 if impl == "bf16_cublas" else 0.5)
                with pdl_launches() if impl.endswith("+pdl") else nullcontext():
                    p50 = time_case(rec, impl, params, calls, reps, device, wbytes)
                if p50 is not None:
                    line.append(f"{impl}={p50 * 1e3:8.1f}us")
            print("  ".join(line) + f"  [ours: {chosen.label()}]", flush=True)
            rec.notes.append(f"{name} M={m}: ours ran {chosen.label()}; others timed: "
                             + ", ".join(f"{v}={p.label()}" for v, p in others.items()))
        del ws, qs, tps
        if device == "cuda":
            torch.cuda.empty_cache()
    rec.notes.append("tuner: " + "; ".join(
        f"N={t['n']} K={t['k']} M<={t['m_bucket']}: {t['plan']} of "
        + ", ".join(f"{lbl}={ms * 1e3:.1f}us" for lbl, ms in sorted(t["timings_ms"].items(), key=lambda kv: kv[1]))
        + (f" (rejected: {t['rejected']})" if t["rejected"] else "") for t in fast.chosen()))
    rec.add_ratios(("shape", "m"))
    print("\nspeed-up over bf16 cuBLAS (p50 / p50):")
    for r in rec.ratios:
        print(f"  {r['shape']:13s} M={r['m']:5d} {r['impl']:24s} {r['speedup']:.2f}x")
    print_summary(rec, winners)
    rejected = {f"N={t['n']} K={t['k']} M<={t['m_bucket']}": t["rejected"] for t in fast.chosen() if t["rejected"]}
    if rejected:
        print(f"\nplans the tuner rejected (compile/launch error or mismatch vs ref): {rejected}")
    if results:
        path = write_kernel_record(rec, results)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
