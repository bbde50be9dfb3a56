"""Thresholded sparse GEMV vs the dense bf16 cuBLAS GEMV at Llama-3-8B shapes.

    python benchmarks/kernels/sparse_gemv.py                    # on a GPU: record in results/kernels/
    TRITON_INTERPRET=1 python benchmarks/kernels/sparse_gemv.py --device cpu   # dry run, tiny shapes

For every shape (``K->N``: q/o 4096->4096, k/v 4096->1024, gate/up 4096->14336, down
14336->4096) and activation sparsity 0, 10, ..., 90%:
  * ``cublas``: ``F.linear(x, W)`` with ``W [N, K]`` row-major in bf16, as ``nn.Linear`` runs;
  * ``triton``: ``sparse_gemv(x, W_t, t)`` with ``W_t [K, N]`` contiguous and ``t`` chosen so
    that the given fraction of ``|x|`` falls at or below it (random normal activations).
Each is timed side by side with ``time_calls``: one CUDA graph replaying calls on distinct
weight copies (together well past the L2), CUDA events. Nothing is recorded unless the
kernel first matched the reference on the GPU at every shape (0/50/90% sparsity, scalar
and per-input thresholds, with the shared tolerance table). At 50% a few other tile
configurations are also timed and recorded as ``triton[<config>]`` cases (``--no-sweep``
skips them); the best can be made the default with ``SPARSEBENCH_GEMV_CONFIG``.

On ``--device cpu`` (under ``TRITON_INTERPRET=1``) the same code runs end to end on tiny
shapes: correctness is checked for real; timings are the interpreter's and meaningless;
no record is written unless ``--results`` is given.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from sparsebench.kernels.sparse_gemv import sparse_gemv_ref
from sparsebench.kernels.sparse_gemv.triton import DEFAULT_CONFIG, GemvConfig, sparse_gemv_triton
from sparsebench.kernels.tolerances import TOLERANCES, assert_close

SHAPES = {"q_o": (4096, 4096), "k_v": (4096, 1024), "gate_up": (4096, 14336), "down": (14336, 4096)}
TINY = {"tiny_a": (37, 53), "tiny_b": (300, 40)}
SPARSITIES = tuple(i / 10 for i in range(10))
SWEEP = (GemvConfig(block_n=128, block_k=32, num_warps=4), GemvConfig(block_n=256, block_k=64, num_warps=8),
         GemvConfig(block_n=512, block_k=16, num_warps=4), GemvConfig(block_n=512, block_k=32, num_warps=8),
         GemvConfig(block_n=256, block_k=32, num_warps=4, programs=528),
         GemvConfig(block_n=256, block_k=16, num_warps=4, programs=1056))


def threshold_for(x: torch.Tensor, sparsity: float) -> float:
    """A threshold with the fraction ``sparsity`` of ``|x|`` at or below it."""
    if sparsity <= 0:
        return 0.0
    a = x.float().abs().flatten().sort().values
    return float(a[min(a.numel() - 1, max(0, round(sparsity * a.numel()) - 1))])


def check(shapes: dict[str, tuple[int, int]], rows: int, device: str, dtype: torch.dtype) -> dict[str, Any]:
    """Kernel vs reference on the device; raises AssertionError on a mismatch."""
    g = torch.Generator().manual_seed(0)
    errors = {}
    for name, (k, n) in shapes.items():
        w_t = (torch.randn(k, n, generator=g) / k ** 0.5).to(dtype).to(device)
        x = torch.randn(rows, k, generator=g).to(dtype).to(device)
        for s in (0.0, 0.5, 0.9):
            for per_input in (False, True):
                t: float | torch.Tensor = threshold_for(x, s)
                if per_input:
                    t = torch.rand(k, generator=g).to(device) * 2 * max(float(t), 1e-3)
                got = sparse_gemv_triton(x, w_t, t)
                want = sparse_gemv_ref(x, w_t, t)
                assert_close(got, want)
                errors[f"{name}_s{s:g}_{'per_input' if per_input else 'scalar'}"] = float(
                    (got.float() - want.float()).abs().max())
    return {"passed": True, "against": "sparsebench.kernels.sparse_gemv.ref", "dtype": str(dtype).removeprefix("torch."),
            "rows": rows, "tolerance": TOLERANCES[str(dtype).removeprefix("torch.")], "max_abs_err": errors}


def _timer(device: str) -> Callable[[list[Callable[[], Any]], int], list[float]]:
    if device == "cuda":
        from sparsebench.measure.kernelbench import time_calls

        return lambda calls, reps: time_calls(calls, reps=reps)

    def cpu_time(calls: list[Callable[[], Any]], reps: int) -> list[float]:
        out = []
        for _ in range(reps):
            t0 = time.perf_counter_ns()
            for c in calls:
                c()
            out.append((time.perf_counter_ns() - t0) / 1e6 / len(calls))
        return out
    return cpu_time


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--shapes", nargs="+", help=f"subset of {', '.join(SHAPES)} (cpu: {', '.join(TINY)})")
    p.add_argument("--rows", type=int, default=1, help="activation rows (decode batch), default 1")
    p.add_argument("--reps", type=int, default=50)
    p.add_argument("--no-sweep", action="store_true", help="skip timing other tile configurations at 50%%")
    p.add_argument("--results", default=None, help="results directory (default: results on cuda, none on cpu)")
    p.add_argument("--no-ceilings", action="store_true", help="skip measuring copy bandwidth / GEMM rate")
    args = p.parse_args(argv)
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device (use --device cpu with TRITON_INTERPRET=1 for a dry run)", file=sys.stderr)
        return 2
    table = SHAPES if device == "cuda" else TINY
    names = args.shapes or list(table)
    unknown = [s for s in names if s not in table]
    if unknown:
        print(f"error: unknown shape(s) {unknown}; known here: {', '.join(table)}", file=sys.stderr)
        return 2
    shapes = {s: table[s] for s in names}
    dtype = torch.bfloat16
    results = args.results if args.results is not None else ("results" if device == "cuda" else None)
    reps = args.reps if device == "cuda" else min(args.reps, 3)

    try:
        correctness = check(shapes, args.rows, device, dtype)
    except AssertionError as exc:
        print(f"kernel does not match the reference; nothing recorded:\n{exc}", file=sys.stderr)
        return 1
    print(f"correctness vs ref passed ({len(correctness['max_abs_err'])} cases)")

    from sparsebench.store.kernel_records import KernelCase, new_kernel_record, write_kernel_record

    ceilings = None
    if device == "cuda" and not args.no_ceilings:
        from sparsebench.measure.ceilings import measure_ceilings

        ceilings = measure_ceilings()
    rec = new_kernel_record("sparse_gemv", "cublas", correctness, profile=None if device == "cuda" else "cpu",
                            ceilings=ceilings)
    if device == "cuda":
        rec.hardware["device_name"] = torch.cuda.get_device_name()
    else:
        rec.notes.append("dry run under the Triton interpreter on CPU: timings are meaningless")
    rec.notes.append(f"triton default config: {DEFAULT_CONFIG.label()}")
    rec.notes.append("cublas: F.linear(x, W) with W [N, K] row-major (nn.Linear); triton: sparse_gemv on "
                     "W_t [K, N] contiguous with the threshold fused; x ~ N(0, 1), threshold = the "
                     "sparsity-quantile of |x|; distinct weight copies per timed call, one CUDA graph")
    from sparsebench.measure.kernelbench import copies_for
    from sparsebench.measure.stats import summarize

    time_calls = _timer(device)
    g = torch.Generator().manual_seed(1)

    def case(impl: str, params: dict[str, Any], samples: list[float], weight_bytes: int) -> KernelCase:
        st = summarize(samples)
        return KernelCase(impl=impl, params=params, samples_ms=[round(s, 5) for s in samples], p50_ms=st["p50"],
                          p90_ms=st["p90"], extra={"dense_equiv_gbs": weight_bytes / (st["p50"] * 1e-3) / 1e9})

    for name, (k, n) in shapes.items():
        wbytes = k * n * 2
        copies = copies_for(wbytes) if device == "cuda" else 2
        ws = [(torch.randn(n, k, generator=g) / k ** 0.5).to(dtype).to(device) for _ in range(copies)]
        wts = [w.t().contiguous() for w in ws]
        xs = [torch.randn(args.rows, k, generator=g).to(dtype).to(device) for _ in range(copies)]
        configs: list[tuple[str, GemvConfig]] = [("triton", DEFAULT_CONFIG)]
        for s in SPARSITIES:
            ts = [threshold_for(x, s) for x in xs]
            achieved = sum(float((x.float().abs() <= t).float().mean()) for x, t in zip(xs, ts, strict=True)) / copies
            params = {"shape": name, "k": k, "n": n, "m": args.rows, "sparsity": s}
            dense_calls = [lambda w=w, x=x: F.linear(x, w) for w, x in zip(ws, xs, strict=True)]
            rec.cases.append(case("cublas", params, time_calls(dense_calls, reps), wbytes))
            sweep = [(f"triton[{c.label()}]", c) for c in SWEEP] if not args.no_sweep and s == 0.5 else []
            for impl, cfg in configs + sweep:
                calls = [lambda wt=wt, x=x, t=t, cfg=cfg: sparse_gemv_triton(x, wt, t, config=cfg)
                         for wt, x, t in zip(wts, xs, ts, strict=True)]
                c = case(impl, params, time_calls(calls, reps), wbytes)
                c.extra["achieved_sparsity"] = achieved
                rec.cases.append(c)
            base = rec.cases[-1 - len(configs + sweep)]
            line = "  ".join(f"{c.impl} {c.p50_ms * 1e3:8.2f}us" for c in rec.cases[-len(configs + sweep) - 1:])
            print(f"{name:8s} s={s:.1f}  {line}  speed-up {base.p50_ms / rec.cases[-1 - len(sweep)].p50_ms:5.2f}x")
        del ws, wts, xs
        if device == "cuda":
            torch.cuda.empty_cache()
    rec.add_ratios(("shape", "sparsity"))
    at50 = {r["shape"]: round(r["speedup"], 3) for r in rec.ratios if r["impl"] == "triton" and r["sparsity"] == 0.5}
    print(f"speed-up over cuBLAS at 50% sparsity: {at50}")
    if results:
        path = write_kernel_record(rec, results)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
