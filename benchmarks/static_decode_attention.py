"""Decode attention over a static KV cache at short contexts: the paged kernel's launch
configs against SDPA with a mask (what transformers runs), Llama-3.1-8B heads (GPU).

    python benchmarks/static_decode_attention.py --best-to FILE     # FILE: the best config at 544 slots

One new token, batch 1, 32 query / 8 KV heads, D=128, bf16, caches of ``context + 32``
slots (a decode step's static cache) with ``context`` tokens filled. Each case runs 32
distinct caches back to back in one CUDA graph (one per layer of a step, so L2 holds none
of them) and reports microseconds per call. Every config is checked against SDPA first.
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F

from sparsebench.kernels.tolerances import assert_close
from sparsebench.kernels.topk_decode_attn.config import ENV, DecodeConfig
from sparsebench.kernels.topk_decode_attn.static_cache import (
    STATIC_DEFAULT,
    static_decode_attention,
)
from sparsebench.kernels.tuning import back_to_back_ms, median

CONFIGS = tuple(DecodeConfig.parse(s) for s in (
    STATIC_DEFAULT.label(), "bn=64,w=4,s=3,p=8", "bn=64,w=4,s=3,ms=1", "bn=32,w=4,s=2,ms=1", "bn=128,w=4,s=2,p=8",
    "bn=64,w=4,s=2,p=16", "bn=32,w=2,s=3,ms=1", "bn=64,w=8,s=3,ms=1", "bn=128,w=8,s=2,ms=1",
    "bn=128,w=8,s=2,ms=1,fm=1", "bn=64,w=4,s=3,fm=1", "bn=64,w=4,s=3,ms=1,fm=1", "bn=128,w=4,s=2,ms=1,fm=1",
    "bn=64,w=8,s=3,ms=1,fm=1",
))


def sdpa_masked(q, k, v, mask):
    g = q.shape[1] // k.shape[1]
    return F.scaled_dot_product_attention(q, k.repeat_interleave(g, 1), v.repeat_interleave(g, 1), attn_mask=mask)


def time_context(ctx: int, layers: int) -> list[tuple[str, float]]:
    """(case, us per call) at one context, fastest first."""
    L = ctx + 32
    q = [torch.randn(1, 32, 1, 128, device="cuda", dtype=torch.bfloat16) for _ in range(layers)]
    k = [torch.randn(1, 8, L, 128, device="cuda", dtype=torch.bfloat16) for _ in range(layers)]
    v = [torch.randn(1, 8, L, 128, device="cuda", dtype=torch.bfloat16) for _ in range(layers)]
    seq = torch.tensor([ctx], dtype=torch.int32, device="cuda")
    mask = (torch.arange(L, device="cuda") < ctx)[None, None, None, :]
    want = sdpa_masked(q[0], k[0], v[0], mask)[:, :, 0]
    us = {"sdpa+mask (K/V repeated)": 1e3 * back_to_back_ms(
        [lambda i=i: sdpa_masked(q[i], k[i], v[i], mask) for i in range(layers)], replays=5, statistic=median)}
    for cfg in CONFIGS:
        try:
            assert_close(static_decode_attention(q[0], k[0], v[0], seq, 128 ** -0.5, config=cfg), want)
            us[cfg.label()] = 1e3 * back_to_back_ms(
                [lambda i=i, c=cfg: static_decode_attention(q[i], k[i], v[i], seq, 128 ** -0.5, config=c)
                 for i in range(layers)], replays=5, statistic=median)
        except Exception as exc:  # a config that fails is reported, not fatal
            print(f"  ctx {ctx}: {cfg.label()} left out: {type(exc).__name__}: {str(exc)[:160]}")
    return sorted(us.items(), key=lambda kv: kv[1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--contexts", type=int, nargs="+", default=[512, 2048, 8192])
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--best-to", help="write the best config at the first context here")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("skipped: no CUDA device")
        return 0
    best_first = None
    for ctx in args.contexts:
        ranked = time_context(ctx, args.layers)
        print(f"context {ctx} ({ctx + 32} slots): " + "  ".join(f"{n} {t:.2f} us" for n, t in ranked), flush=True)
        best_first = best_first or next(n for n, _ in ranked if not n.startswith("sdpa"))
    print(f"\nbest at {args.contexts[0]}: {best_first}\n  export {ENV}=\"{best_first}\"")
    if args.best_to:
        with open(args.best_to, "w") as f:
            f.write(best_first + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
