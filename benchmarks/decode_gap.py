"""Why the suite's decode figure and the probe's differ on the same path: one process runs
the suite's dense run (``benchgpu``'s spec) with its decode timing widened to the probe's
three modes and a kernel breakdown, then the probe's variant on a freshly loaded model.

    python benchmarks/decode_gap.py [--order suite-first|probe-first]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

VARIANT = "compile+fuse+cdt+gemv+pdl+opt:triton.enable_pdl=True+prof"


def _suite(results: str) -> None:
    import decode_probe
    import torch

    from sparsebench.api import (
        CalibrationSpec,
        MeasureSpec,
        MethodSpec,
        ModelRef,
        RunSpec,
        TaskSpec,
    )
    from sparsebench.measure import decode_graph
    from sparsebench.measure.stats import percentile
    from sparsebench.runner import Runner

    def widened(model, ids, *, batch, context, tokens, warmup, repetitions, progress, compile=None):
        forward = torch.compile(model.forward, dynamic=False, options=decode_graph.compile_options(compile))
        seen = {}
        res = decode_graph.decode_timings(
            model, ids, batch=batch, context=context, tokens=tokens, warmup=warmup, repetitions=repetitions,
            progress=progress, forward=forward, modes=("synced", "primed", "pipelined"),
            on_graph=lambda mode, replay: seen.setdefault(mode, decode_probe.kernel_breakdown(replay)))
        for mode, (samples, _) in res.items():
            print(f"suite {mode:9s} p50 {percentile(samples, 50):.3f} ms", flush=True)
        decode_probe._print_breakdown("suite synced", seen["synced"])
        return res["synced"]

    decode_graph.measure_decode_graphed = widened
    measure = MeasureSpec(warmup=3, repetitions=10, prefill_lengths=(16,), decode_context=512, decode_tokens=32,
                          decode_path="compile-tuned+gemv+pdl+graph")
    spec = RunSpec(model=ModelRef(name="shape:llama-3.1-8b"), method=MethodSpec(name="dense"),
                   tasks=(TaskSpec(name="perplexity"),), profile="auto", measure=measure,
                   calibration=CalibrationSpec(samples=8, seq_len=512), kernel="fast")
    Runner(results, progress=False).run(spec)


def _probe() -> None:
    import decode_probe
    import torch

    from sparsebench.measure.ceilings import decode_bytes_per_token, run_ceilings

    bandwidth = run_ceilings()["copy_bandwidth_gbs"] * 1e9
    model, ids = decode_probe.load_model()
    args = argparse.Namespace(context=512, tokens=32, warmup=3, reps=10)
    row = decode_probe.run_variant(decode_probe.parse_variant(VARIANT), model, ids, args,
                                   decode_bytes_per_token(model, 1, 512), bandwidth)
    for mode in ("synced", "primed", "pipelined"):
        print(f"probe {mode:9s} p50 {row.get(f'{mode}_p50_ms', float('nan')):.3f} ms", flush=True)
    if "kernels" in row:
        decode_probe._print_breakdown("probe synced", row["kernels"])
    if "error" in row:
        print("probe error:", row["error"])
    del model
    torch.cuda.empty_cache()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--order", choices=["suite-first", "probe-first"], default="suite-first")
    p.add_argument("--results", default="/tmp/decode-gap-results")
    args = p.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("needs a CUDA device", file=sys.stderr)
        return 2
    steps = [lambda: _suite(args.results), _probe]
    for step in steps if args.order == "suite-first" else steps[::-1]:
        step()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
