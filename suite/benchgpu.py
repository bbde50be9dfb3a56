"""GPU latency/memory suite: dense and each available method on the shape models.

``python -m sparsebench.benchgpu`` (or ``nox -s bench-gpu``) writes one record per run under
``results/`` with the profile of the GPU (``h100`` on an H100). Shape models carry random
weights, so these records hold latency and memory only, never accuracy. On a machine
without CUDA every run is recorded as skipped ("no CUDA device"), never a crash.
"""

from __future__ import annotations

import argparse
import sys

from .api import DECODE_PATHS, CalibrationSpec, MeasureSpec, MethodSpec, ModelRef, RunSpec, TaskSpec
from .errors import SparsebenchError
from .report import comparison_table
from .runner import Runner

MODELS = ("shape:llama-3.2-1b", "shape:llama-3.1-8b", "shape:qwen2.5-7b")
METHODS = (("dense", {}), ("magnitude", {"pattern": "2:4"}), ("wanda", {"sparsity": 0.5}),
           ("rtn", {"bits": 4, "group_size": 128}),
           ("teal", {"sparsity": 0.5}), ("cats", {"sparsity": 0.5}), ("wina", {"sparsity": 0.5}),
           ("chess", {"sparsity": 0.5}))


FAST_PATHS = ("compile-tuned+gemv+pdl+graph", "compile-tuned+gemv+graph")


def auto_decode_path() -> str:
    """The fastest decode path for this machine's GPU: programmatic dependent launch needs
    Hopper (compute capability 9) or newer; without CUDA every run is skipped anyway."""
    import torch

    if not torch.cuda.is_available():
        return "graph"
    return FAST_PATHS[0] if torch.cuda.get_device_capability()[0] >= 9 else FAST_PATHS[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sparsebench.benchgpu", description=__doc__)
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--methods", nargs="+", default=[m for m, _ in METHODS])
    p.add_argument("--profile", default="auto")
    p.add_argument("--results", default="results")
    p.add_argument("--prefill-lengths", type=int, nargs="+", default=[512, 2048])
    p.add_argument("--decode-context", type=int, default=512)
    p.add_argument("--decode-tokens", type=int, default=32)
    p.add_argument("--repetitions", type=int, default=10)
    p.add_argument("--decode-path", choices=["auto", *DECODE_PATHS], default="auto",
                   help="decode step (see MeasureSpec.decode_path); auto = the fastest this GPU runs: "
                        f"{FAST_PATHS[0]} on Hopper and newer, else {FAST_PATHS[1]}; a path that fails "
                        "for a method is replaced by 'graph' in its record, with a note")
    p.add_argument("--no-fuse-projections", dest="fuse_projections", action="store_false", default=None,
                   help="measure with separate q/k/v and gate/up projections (default: fused, "
                        "one GEMV each; see sparsebench.measure.fuse)")
    p.add_argument("--kernel", choices=["auto", "ref", "fast"], default="auto",
                   help="pruned layers: 'ref' = dense GEMM on masked weights; 'fast' (and 'auto' on CUDA) "
                        "= sparse kernels (cuSPARSELt 2:4, Triton SpMM)")
    p.add_argument("--mlflow", action="store_true", help="also log to MLflow")
    args = p.parse_args(argv)
    configs = dict(METHODS)
    if args.decode_path == "auto":
        args.decode_path = auto_decode_path()
    measure = MeasureSpec(warmup=3, repetitions=args.repetitions, prefill_lengths=tuple(args.prefill_lengths),
                          decode_context=args.decode_context, decode_tokens=args.decode_tokens,
                          decode_path=args.decode_path, fuse_projections=args.fuse_projections)
    sinks = []
    if args.mlflow:
        from .sinks.mlflow_sink import MlflowSink

        sinks.append(MlflowSink())
    runner = Runner(args.results, sinks=sinks, progress=False)
    failed = False
    try:
        for model in args.models:
            records = []
            for method in args.methods:
                spec = RunSpec(model=ModelRef(name=model), method=MethodSpec(name=method, config=configs.get(method, {})),
                               tasks=(TaskSpec(name="perplexity"),), profile=args.profile, measure=measure,
                               calibration=CalibrationSpec(samples=8, seq_len=512), kernel=args.kernel)
                out = runner.run(spec)
                records.extend(out if not records else out[1:])
                failed |= any(r.status == "failed" for r in out)
            print(f"\n## {model}\n")
            print(comparison_table(records))
            for r in records:
                frac = {k: round(v, 3) for k, v in r.metrics.items() if k.endswith("roofline_fraction")}
                print(f"{r.spec['method']['name']:10s} {r.status:7s} {r.run_id} {frac}")
                print(f"{'':10s} kernels: {r.kernels}")
                if r.error:
                    print(f"{'':10s} error: {r.error}\n" + "\n".join(n for n in r.notes if "Traceback" in n))
    except SparsebenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
