"""Where one MInference prefill layer's time goes, stage by stage, against dense SDPA (GPU).

    python3 benchmarks/minference_stages.py --results R            # 8B attention shape, 32k and 64k
    python3 benchmarks/minference_stages.py --device cpu           # dry run, tiny shape, no record

One layer of the Llama-3.1-8B attention shape (32 query heads, 8 KV heads, D=128, bf16,
random operands) at each ``--lengths``, MInference's defaults (last 64 queries, blocks of
``--block``, density ``--density``). Stages, each timed alone (CUDA events, no graph:
some stages synchronise the host), in the order a vertical-slash head runs them:
``expand_kv`` (GQA keys per query head), ``scores`` (last queries x all keys, fp32),
``softmax``, ``line_scores`` (column and diagonal sums, one scatter-add), ``select_lines``,
``block_mask`` (the blocks the lines touch), ``kernel`` (block-sparse attention over them);
then the block-sparse head's ``pooled_mask`` and its ``kernel``; and ``sdpa`` (dense causal,
the default backend) as the yardstick. Checked before timing: the diagonal sums equal a
second computation of them by a strided (no-scatter) view (relative error in the record).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from sparsebench.methods.scores import scores_fp32
from sparsebench.methods.sparse_attention import ops
from sparsebench.methods.sparse_attention import patterns as P

LENGTHS = (32768, 65536)
CPU = {"lengths": (300,), "heads": (4, 2), "head_dim": 16, "block": 32}


def tail_diagonal_sums(p: torch.Tensor) -> torch.Tensor:
    """The diagonal sums of the last ``m`` queries of an ``n``-token prefill without a scatter
    (``p [..., m, n]``, zero above the diagonal): reversed, row ``i`` holds offset ``o`` at
    column ``o + m - 1 - i``; a strided view of the zero-padded rows lines each offset up in
    one column. The alternative the method measured against (slower on an H200)."""
    *lead, m, n = p.shape
    rev = F.pad(p.float().flip(-1), (0, m)).reshape(-1, m * (n + m))
    skew = rev.as_strided((rev.shape[0], m, n), (rev.stride(0), n + m - 1, 1), storage_offset=m - 1)
    return skew.sum(-2).view(*lead, n)


def stages(L: int, heads: tuple[int, int], d: int, block: int, density: float, last_q: int,
           device: str) -> tuple[dict[str, Callable[[], Any]], dict[str, float]]:
    """The stage calls over one layer's operands, and the check of the strided sums."""
    hq, hkv = heads
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    g = torch.Generator(device=device).manual_seed(L)
    q = torch.randn(1, hq, L, d, generator=g, device=device).to(dtype)
    k = torch.randn(1, hkv, L, d, generator=g, device=device).to(dtype)
    v = torch.randn(1, hkv, L, d, generator=g, device=device).to(dtype)
    scale = d ** -0.5
    m = min(last_q, L)
    q_pos = torch.arange(L - m, L, device=device)
    kx = ops.expand_kv(k, hq)
    scores = scores_fp32(q[:, :, L - m:], kx) * scale
    masked = scores.masked_fill(torch.arange(L, device=device)[None, :] > q_pos[:, None], -P.INF)
    probs = masked.softmax(-1)
    col, diag = P.line_scores(probs, q_pos)
    strided = tail_diagonal_sums(probs)
    check = {"strided_vs_scatter_rel_err": float((diag - strided).norm() / diag.norm().clamp_min(1e-30))}
    cols, diags = P.select_lines(col, diag, L, density)
    vs_mask = ops.vertical_slash_blocks(cols, diags, block)
    bs_mask = P.block_sparse_mask(q, kx, block, density, scale)
    impl = "triton" if device == "cuda" else "ref"
    check["vertical_slash_block_density"] = float(P.block_mask_pairs(vs_mask, L, block) / (hq * P.causal_pairs(L)))
    calls = {
        "sdpa": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=True),
        "expand_kv": lambda: ops.expand_kv(k, hq),
        "scores": lambda: scores_fp32(q[:, :, L - m:], kx),
        "softmax": lambda: masked.softmax(-1),
        "line_scores": lambda: P.line_scores(probs, q_pos),
        "diagonal_sums[strided]": lambda: tail_diagonal_sums(probs),
        "select_lines": lambda: P.select_lines(col, diag, L, density),
        "block_mask": lambda: ops.vertical_slash_blocks(cols, diags, block),
        "kernel[vertical_slash]": lambda: ops.block_sparse_prefill(q, k, v, vs_mask, block, scale, impl),
        "estimate[vertical_slash]": lambda: P.estimate_vertical_slash(q, kx, scale, last_q, density),
        "pooled_mask[block_sparse]": lambda: P.block_sparse_mask(q, kx, block, density, scale),
        "kernel[block_sparse]": lambda: ops.block_sparse_prefill(q, k, v, bs_mask, block, scale, impl),
    }
    return calls, check


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="+")
    p.add_argument("--block", type=int, default=None, help="MInference's block size (default 64, its default)")
    p.add_argument("--density", type=float, default=0.1)
    p.add_argument("--last-q", type=int, default=64)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--results", default=None, help="results directory for the record (cuda only)")
    p.add_argument("--profile", default="auto")
    args = p.parse_args(argv)
    cpu = args.device == "cpu"
    if not cpu and not torch.cuda.is_available():
        print("error: no CUDA device (use --device cpu for a dry run)", file=sys.stderr)
        return 2
    if not 0 < args.density <= 1 or args.last_q < 1:
        print(f"error: density must be in (0, 1] and last-q >= 1 (got {args.density}, {args.last_q})", file=sys.stderr)
        return 2
    from sparsebench.measure.kernelbench import time_calls, time_calls_on

    heads, d = (CPU["heads"], CPU["head_dim"]) if cpu else ((32, 8), 128)
    block = args.block or (CPU["block"] if cpu else 64)
    rows: list[tuple[int, str, list[float]]] = []
    checks: dict[str, dict[str, float]] = {}
    for L in args.lengths or (CPU["lengths"] if cpu else LENGTHS):
        calls, check = stages(L, heads, d, block, args.density, args.last_q, args.device)
        if not check["strided_vs_scatter_rel_err"] < 1e-4:
            print(f"strided diagonal sums differ from the scatter's at L={L}: {check}", file=sys.stderr)
            return 1
        checks[str(L)] = check
        for name, fn in calls.items():
            # no CUDA graph: some stages synchronise the host
            samples = time_calls_on("cpu", [fn], reps=1) if cpu else time_calls([fn], reps=args.reps, warmup=1,
                                                                                  graph=False)
            rows.append((L, name, samples))
            print(f"L={L:6d} {name:26s} {sorted(samples)[len(samples) // 2]:10.3f} ms", flush=True)
        print(f"L={L:6d} vertical-slash block density {check['vertical_slash_block_density']:.3f}", flush=True)
        del calls
    if cpu or not args.results:
        return 0
    from sparsebench.store.kernel_records import KernelCase, new_kernel_record, write_kernel_record

    rec = new_kernel_record("minference_stages", "sdpa", {"passed": True, "against": "line_scores scatter path",
                                                          "checks": checks}, profile=args.profile)
    rec.hardware["device_name"] = torch.cuda.get_device_name()
    rec.notes.append(f"one layer, Hq={heads[0]}, Hkv={heads[1]}, D={d}, bf16, random operands; block {block}, "
                     f"density {args.density}, last_q {args.last_q}; stages timed alone without a graph")
    for L, name, samples in rows:
        s = sorted(samples)
        rec.cases.append(KernelCase(impl=name, params={"L": L}, samples_ms=samples, p50_ms=s[len(s) // 2],
                                    p90_ms=s[min(len(s) - 1, int(0.9 * len(s)))]))
    rec.add_ratios(("L",))
    print(f"wrote {write_kernel_record(rec, args.results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
