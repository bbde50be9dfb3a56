"""A few calls of the CUDA int4 kernel on one Llama-3-8B shape, for a profiler to read.

    ncu --clock-control none -k w4_mma -s 3 -c 1 --section SpeedOfLight --section WarpStateStats \\
        python benchmarks/kernels/int4_profile.py --shape down_proj --config w8,s4

The benchmark (``int4_matmul.py``) gives times; this gives the hardware counters of one call
(``-s 3``: skip the repack and warm-up launches). ``--config``: ``w<warps>,s<stage>`` plus
optional ``p<ring depth>``, ``t<tiles a block>``, ``l2``, ``pf``, ``sx`` (see ``kernels/int4_matmul/cuda.py``).
"""

from __future__ import annotations

import argparse
import sys

import torch

SHAPES = {"q_o_proj": (4096, 4096), "k_v_proj": (1024, 4096), "gate_up_proj": (14336, 4096), "down_proj": (4096, 14336)}


def parse_config(spec: str):
    from sparsebench.kernels.int4_matmul import cuda

    fields = {"warps": 8, "stage": 4, "pipe": 0, "l2": False, "prefetch": False, "sx": False, "tiles": 1}
    flags = {"l2": "l2", "pf": "prefetch", "sx": "sx"}
    for part in filter(None, spec.split(",")):
        if part in flags:
            fields[flags[part]] = True
        elif part[0] in "wspt" and part[1:].isdigit():
            fields[{"w": "warps", "s": "stage", "p": "pipe", "t": "tiles"}[part[0]]] = int(part[1:])
        else:
            raise SystemExit(f"--config: cannot read {part!r}; expected w<N>, s<N>, p<N>, t<N>, l2, pf or sx")
    return cuda.Config(**fields)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=list(SHAPES), default="down_proj")
    p.add_argument("--m", type=int, default=1)
    p.add_argument("--config", default="w8,s4")
    p.add_argument("--calls", type=int, default=5)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("needs a CUDA device", file=sys.stderr)
        return 2
    from sparsebench.kernels.int4_matmul import cuda

    n, k = SHAPES[args.shape]
    config = parse_config(args.config)
    q = torch.randint(0, 256, (n, k // 2), dtype=torch.uint8, device="cuda")
    scales = torch.rand(n, k // 128, device="cuda") * 0.01
    offsets = -8 * scales
    x = torch.randn(args.m, k, device="cuda", dtype=torch.bfloat16)
    for _ in range(args.calls):
        cuda.run(x, q, scales, offsets, 128, config)
    torch.cuda.synchronize()
    print(f"{args.shape} M={args.m} {config}: {args.calls} calls")
    return 0


if __name__ == "__main__":
    sys.exit(main())
