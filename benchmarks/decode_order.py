"""Does a decode figure depend on what ran before it in the same process? The probe's
variant (the suite's fast path) timed several times on one loaded model, with an optional
idle pause before a repeat, printing each repeat's three timings and how its synced samples
drift from the first to the last quarter.

    python benchmarks/decode_order.py [--repeats 3] [--pause-before 3:45] [--json F]

A later repeat slower than the first, and a pause that does not bring it back, points at
process state (host or allocator); a pause that does, at the GPU's thermal or power state.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

VARIANT = "compile+fuse+cdt+gemv+pdl+opt:triton.enable_pdl=True"


def _drift(samples: list[float]) -> tuple[float, float]:
    q = max(1, len(samples) // 4)
    return sum(samples[:q]) / q, sum(samples[-q:]) / q


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--pause-before", action="append", default=[], metavar="REPEAT:SECONDS",
                   help="sleep this long before that repeat (1-based)")
    p.add_argument("--variant", default=VARIANT)
    p.add_argument("--json")
    args = p.parse_args(argv)
    pauses = {int(a): float(b) for a, b in (s.split(":") for s in args.pause_before)}

    import decode_probe
    import torch

    from sparsebench.measure.ceilings import decode_bytes_per_token, run_ceilings

    if not torch.cuda.is_available():
        print("needs a CUDA device", file=sys.stderr)
        return 2
    bandwidth = run_ceilings()["copy_bandwidth_gbs"] * 1e9
    model, ids = decode_probe.load_model()
    nbytes = decode_bytes_per_token(model, 1, 512)
    run_args = argparse.Namespace(context=512, tokens=32, warmup=3, reps=10)
    variant = decode_probe.parse_variant(args.variant)
    rows = []
    for i in range(1, args.repeats + 1):
        if i in pauses:
            print(f"pause {pauses[i]:.0f} s", flush=True)
            time.sleep(pauses[i])
        t = time.strftime("%H:%M:%S")
        print(f"repeat {i}: allocated {torch.cuda.memory_allocated() / 2**30:.2f} GiB, "
              f"reserved {torch.cuda.memory_reserved() / 2**30:.2f} GiB before it", flush=True)
        row = decode_probe.run_variant(variant, model, ids, run_args, nbytes, bandwidth)
        row["repeat"], row["started"] = i, t
        rows.append(row)
        if "error" in row:
            print(f"repeat {i} ({t}): {row['error']}", flush=True)
            continue
        first, last = _drift(row["synced_samples"])
        print(f"repeat {i} ({t}): synced {row['synced_p50_ms']:.3f} ({row['synced_roofline']:.3f})  "
              f"primed {row['primed_p50_ms']:.3f}  pipelined {row['pipelined_p50_ms']:.3f}  "
              f"synced first/last quarter {first:.3f}/{last:.3f} ms  ({row['seconds']:.0f} s)", flush=True)
        if "kernels" in row:
            decode_probe._print_breakdown(f"repeat {i}", row["kernels"])
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
