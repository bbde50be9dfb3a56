"""Shared by the kernel benchmarks: shapes, argument parsing, timing one case, the table."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any

# Llama-3-8B projections as (name, N = out features, K = in features)
SHAPES = (("q_o", 4096, 4096), ("gate_up", 14336, 4096), ("down", 4096, 14336))
# the same layers as serving engines run them: q/k/v and gate/up each as one GEMM (opt-in)
FUSED_SHAPES = (("qkv", 6144, 4096), ("gate_up_fused", 28672, 4096))


def parser(description: str, ms: Sequence[int]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--ms", type=int, nargs="+", default=list(ms), help="token counts (rows of x)")
    p.add_argument("--results", default="results", help="records go to RESULTS/kernels/")
    p.add_argument("--profile", default="auto", help="hardware profile id (h100 on an H100)")
    p.add_argument("--reps", type=int, default=20, help="timed replays per case")
    p.add_argument("--shapes", nargs="+", default=[s[0] for s in SHAPES],
                   choices=[s[0] for s in (*SHAPES, *FUSED_SHAPES)])
    return p


def shapes(args: argparse.Namespace) -> Iterator[tuple[str, int, int, int]]:
    """The chosen shapes as (name, N, K, operand copies that keep the weights out of L2)."""
    from sparsebench.measure.kernelbench import copies_for

    for name, n, k in (*SHAPES, *FUSED_SHAPES):
        if name in args.shapes:
            yield name, n, k, copies_for(n * k * 2)


def per_copy(fn: Callable[..., Any], *operands: Sequence[Any]) -> list[Callable[[], Any]]:
    """One call per operand copy: ``fn(a[i], b[i], ...)`` for each i."""
    return [partial(fn, *ops) for ops in zip(*operands, strict=True)]


def time_case(rec: Any, impl: str, params: dict[str, Any], calls: Sequence[Callable[[], Any]], reps: int,
              extra: dict[str, float] | None = None) -> float:
    """Time ``calls`` (one per operand copy) in a CUDA graph, falling back to eager with a note."""
    from sparsebench.measure.kernelbench import summary, time_calls
    from sparsebench.store.kernel_records import KernelCase

    try:
        samples = time_calls(calls, reps=reps, warmup=2, graph=True)
    except Exception as exc:  # e.g. a path that syncs the host cannot be captured
        rec.notes.append(f"{impl} {params}: CUDA graph capture failed ({type(exc).__name__}: {exc}); "
                         "timed eagerly, so host launch overhead is included")
        import torch

        torch.cuda.synchronize()
        samples = time_calls(calls, reps=reps, warmup=2, graph=False)
    st = summary(samples)
    rec.cases.append(KernelCase(impl=impl, params=params, samples_ms=[round(s, 5) for s in samples],
                                p50_ms=st["p50"], p90_ms=st["p90"], extra=extra or {}))
    return st["p50"]


def print_table(rec: Any, keys: tuple[str, ...], impls: Sequence[str]) -> None:
    """One row per params, dense p50 in ms then the speed-up of each impl (baseline p50 / impl p50)."""
    speed = {(tuple(r[k] for k in keys), r["impl"]): r["speedup"] for r in rec.ratios}
    base = {tuple(c.params[k] for k in keys): c.p50_ms for c in rec.cases if c.impl == rec.baseline_impl}
    head = [*keys, f"{rec.baseline_impl} ms", *impls]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row, ms in base.items():
        cells = [str(v) for v in row] + [f"{ms:.4f}"]
        cells += [f"{speed[(row, i)]:.2f}x" if (row, i) in speed else "-" for i in impls]
        print("| " + " | ".join(cells) + " |")


def check(name: str, got: Any, want: Any, correctness: dict[str, Any]) -> None:
    """Compare with the shared tolerance table; store the error; raise on failure."""
    from sparsebench.kernels.tolerances import assert_close

    err = float((got.float() - want.float()).abs().max())
    correctness.setdefault("checks", {})[name] = {"max_abs_err": err,
                                                  "scale": float(want.float().abs().max())}
    assert_close(got, want)


def start(op: str, correctness: Callable[[], dict[str, Any]], args: argparse.Namespace) -> Any:
    """Correctness against ref first, then a new record (with measured ceilings); None if
    there is no GPU or the check failed (then nothing may be recorded)."""
    profile = args.profile
    import sys
    import traceback

    import torch

    from sparsebench.measure.ceilings import run_ceilings
    from sparsebench.store.kernel_records import new_kernel_record

    if not torch.cuda.is_available():
        print("error: this benchmark needs a CUDA GPU", file=sys.stderr)
        return None
    try:
        checked = correctness()
    except Exception:
        traceback.print_exc()
        print("correctness check against ref FAILED: nothing recorded", file=sys.stderr)
        return None
    print(f"correctness vs ref passed ({len(checked['checks'])} checks) on {torch.cuda.get_device_name()}")
    return new_kernel_record(op, "dense_cublas", checked, profile=profile, ceilings=run_ceilings())


def finish(rec: Any, keys: tuple[str, ...], impls: Sequence[str], results: str, log: list[str]) -> int:
    """Ratios, the record on disk, and the table."""
    from sparsebench.store.kernel_records import write_kernel_record

    rec.notes.extend(log)
    rec.add_ratios(keys)
    path = write_kernel_record(rec, results)
    print()
    print_table(rec, keys, impls)
    print(f"\nwrote {path}")
    return 0


def device_gate(device: str) -> int | None:
    """Where an attention-kernel benchmark may run: None to go on, else its exit code
    (0 with a "skipped" line on a machine without CUDA, 2 for a CPU dry run without the
    Triton interpreter)."""
    import sys

    import torch

    from sparsebench.kernels.dispatch import interpreting

    if device != "cpu" and not torch.cuda.is_available():
        print("skipped: no CUDA device (this benchmark measures GPU kernels; --device cpu is a dry run)")
        return 0
    if device == "cpu" and not interpreting():
        print("error: --device cpu needs TRITON_INTERPRET=1", file=sys.stderr)
        return 2
    return None


def attention_parser(description: str) -> argparse.ArgumentParser:
    """The attention-kernel benchmarks' shared options: where they run and what they record."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--results", default=None, help="results directory (default: results on cuda, none on cpu)")
    p.add_argument("--no-ceilings", action="store_true", help="skip measuring copy bandwidth / GEMM rate")
    p.add_argument("--profile", default=None, help="hardware profile id for the record (default: auto; cpu on cpu)")
    return p


def results_dir(args: argparse.Namespace) -> str | None:
    """``--results``, else ``results`` on a GPU and nothing for a CPU dry run."""
    return args.results if args.results is not None else (None if args.device == "cpu" else "results")

