"""GPU latency/memory suite: dense and each available method on the shape models.

``python -m sparsebench.benchgpu`` (or ``nox -s bench-gpu``) writes one record per run under
``results/`` with the profile of the GPU (``h100`` on an H100). Shape models carry random
weights, so these records hold latency and memory only, never accuracy. On a machine
without CUDA every run is recorded as skipped ("no CUDA device"), never a crash.

On a GPU each (model, method) run happens in a fresh process of its own (``--isolate``, the
default there): decode figures taken later in one process come out slower (on an H200 the
same 8B decode step measured 4.25, 4.39 and 4.47 ms in three successive capture cycles of one
process, ``benchmarks/decode_cycles.py``), so a method timed after dense in the same process
would be charged for what ran before it.

The runs use the CUDA caching allocator's expandable segments (``PYTORCH_CUDA_ALLOC_CONF=
expandable_segments:True`` unless the environment sets the variable; ``--no-expandable-segments``
keeps the allocator's default): the weights, caches and graph pools then sit in one growing
mapping instead of many separately reserved blocks. On an H200 the 8B decode step took 4.18 ms
that way against 4.26-4.32 ms in five runs without (records ``20261202T050123Z-dense-*`` and
``20261202T04*-dense-*``); the probe 4.17 against 4.20-4.32. Each record's ``env.cuda_alloc_conf``
says which setting it ran with.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from .api import DECODE_PATHS, CalibrationSpec, MeasureSpec, MethodSpec, ModelRef, RunSpec, TaskSpec
from .environment import ALLOC_CONF_ENV
from .errors import SparsebenchError
from .report import comparison_table
from .runner import Runner

EXPANDABLE = "expandable_segments:True"  # the allocator setting the runs take (module docstring)
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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sparsebench.benchgpu", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
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
    p.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=None,
                   help="each (model, method) run in a fresh process (default: on when CUDA is available; "
                        "see the module docstring for why)")
    p.add_argument("--expandable-segments", action=argparse.BooleanOptionalAction, default=True,
                   help=f"set {ALLOC_CONF_ENV}={EXPANDABLE} for the runs unless the environment sets it "
                        "(default: on; see the module docstring)")
    p.add_argument("--record-ids", help=argparse.SUPPRESS)  # a child appends its records' ids here
    return p


def _check_names(args: argparse.Namespace) -> None:
    """Every model and method named resolves, before anything runs: a typo must not cost the
    runs before it (raises ``UsageError`` naming what is allowed)."""
    from .models import resolve_model
    from .registry import methods

    for model in args.models:
        resolve_model(model)
    for method in args.methods:
        methods().get(method)


def allocator_setting(args: argparse.Namespace) -> None:
    """Set the allocator's expandable segments for this process and its children, before
    anything touches CUDA (the allocator reads the variable once, at its first allocation);
    a value already in the environment is the user's and is kept."""
    if args.expandable_segments:
        os.environ.setdefault(ALLOC_CONF_ENV, EXPANDABLE)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        _check_names(args)
    except SparsebenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    allocator_setting(args)
    configs = dict(METHODS)
    if args.decode_path == "auto":
        args.decode_path = auto_decode_path()
    if args.isolate is None:
        import torch

        args.isolate = torch.cuda.is_available()
    if args.isolate:
        return _isolated(args)
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
                if args.record_ids:
                    with open(args.record_ids, "a") as f:
                        f.write(json.dumps([r.run_id for r in out]) + "\n")
                records.extend(out if not records else out[1:])
                failed |= any(r.status == "failed" for r in out)
            _summary(model, records)
    except SparsebenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 1 if failed else 0


def _summary(model: str, records: list) -> None:
    print(f"\n## {model}\n")
    print(comparison_table(records))
    for r in records:
        frac = {k: round(v, 3) for k, v in r.metrics.items() if k.endswith("roofline_fraction")}
        print(f"{r.spec['method']['name']:10s} {r.status:7s} {r.run_id} {frac}")
        print(f"{'':10s} kernels: {r.kernels}")
        if r.error:
            print(f"{'':10s} error: {r.error}\n" + "\n".join(n for n in r.notes if "Traceback" in n))


def child_argv(args: argparse.Namespace, model: str, method: str, ids_file: str) -> list[str]:
    """The options of one isolated run: this run's, for one model and one method, not isolated."""
    out = ["--models", model, "--methods", method, "--profile", args.profile, "--results", args.results,
           "--prefill-lengths", *map(str, args.prefill_lengths), "--decode-context", str(args.decode_context),
           "--decode-tokens", str(args.decode_tokens), "--repetitions", str(args.repetitions),
           "--decode-path", args.decode_path, "--kernel", args.kernel, "--no-isolate", "--record-ids", ids_file]
    if args.fuse_projections is False:
        out.append("--no-fuse-projections")
    if not args.expandable_segments:
        out.append("--no-expandable-segments")
    if args.mlflow:
        out.append("--mlflow")
    return out


def _isolated(args: argparse.Namespace) -> int:
    """Every (model, method) run in a child process; then the same summary from their records.
    A child's usage error (exit 2 and above) stops the suite with that code."""
    from .store import ResultsStore

    failed = False
    # dense first, in a child of its own: the methods' runs then reuse it as their baseline
    # instead of each measuring it in their own process before themselves
    methods = ["dense", *(m for m in args.methods if m != "dense")]
    for model in args.models:
        with tempfile.TemporaryDirectory() as tmp:
            ids_file = str(Path(tmp) / "ids.jsonl")
            for method in methods:
                rc = subprocess.call([sys.executable, "-m", "sparsebench.benchgpu",
                                      *child_argv(args, model, method, ids_file)])
                if rc >= 2:
                    return rc
                if rc < 0:  # killed by a signal: its record, if any, is what the summary shows
                    print(f"[sparsebench] the run of {method} on {model} was killed by signal {-rc}", file=sys.stderr)
                failed |= rc != 0
            ids: list[str] = []
            if Path(ids_file).exists():
                for line in Path(ids_file).read_text().splitlines():
                    ids += [i for i in json.loads(line) if i not in ids]
        store = ResultsStore(args.results)
        if ids:
            _summary(model, [store.get(i) for i in ids])
        else:
            print(f"\n## {model}\n\nno run wrote a record")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
