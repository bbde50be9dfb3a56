"""A few calls of the CUDA SpMM on one Llama-3-8B shape, for a profiler to read.

    ncu --clock-control none -k spmm_decode -s 2 -c 1 --section SpeedOfLight --section WarpStateStats \\
        python benchmarks/kernels/spmm_profile.py --shape gate_up --sparsity 0.5 --config r=16,w=8,k=1,d=8

The benchmark (``spmm.py``) gives times; this gives the hardware counters of one call
(``-s 2``: skip the warm-up launches).
"""

from __future__ import annotations

import argparse
import sys

import torch

SHAPES = {"q_o": (4096, 4096), "gate_up": (14336, 4096), "down": (4096, 14336)}


def main(argv: list[str] | None = None) -> int:
    from sparsebench.kernels.spmm import cuda, pack

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=list(SHAPES), default="gate_up")
    p.add_argument("--m", type=int, default=1)
    p.add_argument("--sparsity", type=float, default=0.5)
    p.add_argument("--config", default=cuda.Config().label())
    args = p.parse_args(argv)
    n, k = SHAPES[args.shape]
    cfg = cuda.Config.parse(args.config)
    w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
    w[torch.rand(n, k, device="cuda") < args.sparsity] = 0
    packed = pack(w)
    bounds = cuda.chunk_bounds(packed, cfg.rows)
    x = torch.randn(args.m, k, device="cuda", dtype=torch.bfloat16)
    for _ in range(4):
        cuda.spmm_cuda(x, packed, config=cfg, bounds=bounds)
    torch.cuda.synchronize()
    print(f"{args.shape} M={args.m} sparsity {args.sparsity:.0%} {cfg.label()}: 4 calls")
    return 0


if __name__ == "__main__":
    sys.exit(main())
