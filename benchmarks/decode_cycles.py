"""Which repeated step slows a later decode figure in the same process: one fused, GEMV-routed,
compiled forward timed over several fresh static caches and graph captures (no recompile),
then once more after a fresh compile; each line gives the synced p50, the graph's span and
the kernels whose time moved.

    python benchmarks/decode_cycles.py [--cycles 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--cycles", type=int, default=3)
    args = p.parse_args(argv)

    import decode_probe
    import torch

    from sparsebench.measure.decode_graph import decode_timings
    from sparsebench.measure.decode_kernels import gemv_decode
    from sparsebench.measure.fuse import fuse_checked_
    from sparsebench.measure.stats import percentile

    if not torch.cuda.is_available():
        print("needs a CUDA device", file=sys.stderr)
        return 2
    model, ids = decode_probe.load_model()
    check = ids[:16].view(1, -1).cuda()
    options = {"coordinate_descent_tuning": True, "triton.enable_pdl": True}
    fuse_checked_(model, check)
    base: dict[str, float] = {}

    def timed(label: str, forward) -> None:
        seen = {}
        res = decode_timings(model, ids, batch=1, context=512, tokens=32, warmup=3, repetitions=10,
                             progress=lambda it, **_: it, forward=forward, modes=("synced",),
                             on_graph=lambda mode, replay: seen.setdefault(mode, decode_probe.kernel_breakdown(replay)))
        b = seen["synced"]
        tops = {t["kernel"]: t["us_per_step"] for t in b["top"]}
        moved = {k[:70]: round(v - base[k], 1) for k, v in tops.items() if k in base and abs(v - base[k]) > 15}
        base.update({k: v for k, v in tops.items() if k not in base})
        print(f"{label:22s} synced p50 {percentile(res['synced'][0], 50):.3f} ms  span {b['span_us_per_step']:.0f} us  "
              f"kernels {b['kernels_per_step']:.0f}  moved vs first: {moved}", flush=True)

    with gemv_decode(model, "cuda", pdl=True, check_ids=check):
        torch._dynamo.reset()
        forward = torch.compile(model.forward, dynamic=False, options=options)
        for i in range(1, args.cycles + 1):
            timed(f"same compile, cycle {i}", forward)
        torch._dynamo.reset()
        forward = torch.compile(model.forward, dynamic=False, options=options)
        timed("after a fresh compile", forward)
        timed("eager forward, graphed", None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
