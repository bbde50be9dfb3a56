"""Decode latency with a compressed KV cache: what a token costs when the cache holds a
budget of the context, against the full cache (GPU benchmark, one call, a few minutes).

    python3 benchmarks/kv_decode.py --results R                      # 8B shape, 8k/32k/64k
    python3 benchmarks/kv_decode.py --contexts 32768 --budgets 1 0.125 --results R
    python3 benchmarks/kv_decode.py --device cpu --results R         # dry run, tiny shapes

For each context ``L`` and budget ``b`` the cache holds ``ceil(b x L)`` tokens (``b = 1``: the
full cache). Measured per (L, b):

- ``attention``: the decode attention of every layer over the held tokens (one new query
  per sequence, GQA, bf16), each layer on its own K/V (as in the model), all layers captured
  in one CUDA graph: the part of a step a KV-cache method changes. It is the family's own
  attention function (``methods.kv_cache.attention.attend``, which runs SDPA with the GQA
  keys read in place).
- ``attention+votes``: the same function asked for one query's votes, H2O's per-step
  bookkeeping (fp32 softmax probabilities from one grouped matmul per KV head, their output
  product, the votes summed into the per-token scores): the costliest policy per step.
- ``step``: the whole Llama-3.1-8B-shaped decode step (random weights) over a static cache
  of the held tokens, the suite's graph-captured decode path, with the peak GPU memory.

The evicting methods (streaming-kv, h2o, snapkv) hold exactly ``ceil(b x L)`` tokens during
decode, so ``step`` is their per-token cost apart from eviction itself (streaming: none; h2o:
the vote update timed in ``attention+votes``; snapkv: none after prefill). KIVI and
Mustafar need attention kernels over packed caches, which this suite does not have yet: their
rows are not measured here. Every timed attention path is first checked against an fp32
reference on the same operands.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

import torch

CONTEXTS = (8192, 32768, 65536)
BUDGETS = (1.0, 0.5, 0.25, 0.125, 0.0625)
CPU_SHAPE = {"layers": 2, "heads": 4, "kv_heads": 2, "head_dim": 32}
TOL = 2e-2  # bf16 attention output vs the fp32 reference, relative Frobenius error


def held_tokens(context: int, budget: float) -> int:
    return context if budget >= 1 else max(1, math.ceil(budget * context - 1e-9))


def attention_shape(model_name: str) -> dict[str, int]:
    from sparsebench.models.shape import ShapeModel

    cfg = ShapeModel(model_name).config()
    return {"layers": cfg.num_hidden_layers, "heads": cfg.num_attention_heads,
            "kv_heads": cfg.num_key_value_heads,
            "head_dim": getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads}


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """fp32 softmax attention of one query per head over all keys (the definition)."""
    groups = q.shape[1] // k.shape[1]
    kf, vf = (t.float().repeat_interleave(groups, dim=1) for t in (k, v))
    p = ((q.float() @ kf.transpose(-1, -2)) * q.shape[-1] ** -0.5).softmax(-1)
    return p @ vf


def method_decode(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The KV-cache family's attention without votes (what streaming-kv / snapkv run at decode)."""
    from sparsebench.methods.kv_cache.attention import attend

    return attend(q, k, v, q.shape[-1] ** -0.5)[0]


def voting_decode(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, votes: torch.Tensor) -> torch.Tensor:
    """The family's attention with one query's votes, added to ``votes`` (H2O's step)."""
    from sparsebench.methods.kv_cache.attention import attend

    out, step_votes = attend(q, k, v, q.shape[-1] ** -0.5, n_votes=1)
    votes.add_(step_votes)
    return out


def _rel(got: torch.Tensor, ref: torch.Tensor) -> float:
    return float((got.float() - ref).norm() / ref.norm().clamp_min(1e-12))


def attention_cases(shape: dict[str, int], held: int, device: str, dtype: torch.dtype,
                    reps: int) -> tuple[dict[str, list[float]], dict[str, float]]:
    """ms per token (all layers) of each attention path over ``held`` tokens, and the check errors."""
    from sparsebench.measure.kernelbench import time_calls_on

    gen = torch.Generator(device=device).manual_seed(held)
    layers, hq, hkv, d = shape["layers"], shape["heads"], shape["kv_heads"], shape["head_dim"]

    def rand(*s: int) -> torch.Tensor:
        return torch.randn(*s, generator=gen, device=device, dtype=torch.float32).to(dtype)

    q = [rand(1, hq, 1, d) for _ in range(layers)]
    kv = [(rand(1, hkv, held, d), rand(1, hkv, held, d)) for _ in range(layers)]
    votes = [torch.zeros(1, hkv, held, device=device) for _ in range(layers)]
    ref = reference(q[0], *kv[0])
    errors = {"attention": _rel(method_decode(q[0], *kv[0]), ref),
              "attention+votes": _rel(voting_decode(q[0], *kv[0], votes[0].clone()), ref)}
    bad = {k: e for k, e in errors.items() if not e < TOL}
    if bad:
        raise RuntimeError(f"attention paths differ from the fp32 reference at {held} tokens: {bad}")
    calls = {
        "attention": [lambda i=i: method_decode(q[i], *kv[i]) for i in range(layers)],
        "attention+votes": [lambda i=i: voting_decode(q[i], *kv[i], votes[i]) for i in range(layers)],
    }
    # time_calls_on gives ms per call (one layer); a token runs every layer once
    samples = {name: [ms * layers for ms in time_calls_on(device, fs, reps=reps)] for name, fs in calls.items()}
    return samples, errors


def step_case(model: Any, ids: torch.Tensor, held: int, tokens: int, reps: int) -> tuple[list[float], dict[str, float]]:
    """The whole decode step over a static cache of ``held`` tokens, and its peak memory."""
    from sparsebench.api import no_progress
    from sparsebench.measure.decode_graph import decode_timings

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    timings = decode_timings(model, ids, batch=1, context=held, tokens=tokens, warmup=1,
                             repetitions=reps, progress=no_progress)
    samples, err = timings["synced"]
    return samples, {"peak_allocated_bytes": float(torch.cuda.max_memory_allocated()), "graph_check_rel_err": err}


def kv_bytes(shape: dict[str, int], held: int, itemsize: int = 2) -> float:
    return float(2 * shape["layers"] * shape["kv_heads"] * held * shape["head_dim"] * itemsize)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="shape:llama-3.1-8b")
    p.add_argument("--contexts", type=int, nargs="+", default=list(CONTEXTS))
    p.add_argument("--budgets", type=float, nargs="+", default=list(BUDGETS))
    p.add_argument("--tokens", type=int, default=8, help="decode steps per repetition (step timing)")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--no-step", action="store_true", help="attention only (no model, no prefill)")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--profile", default="auto")
    p.add_argument("--results", default="results")
    args = p.parse_args(argv)
    bad = [b for b in args.budgets if not 0 < b <= 1]
    if bad or any(c < 16 for c in args.contexts):
        print(f"error: budgets must be fractions in (0, 1] (got {bad}) and contexts >= 16 tokens", file=sys.stderr)
        return 2
    cpu = args.device == "cpu"
    if not cpu and not torch.cuda.is_available():
        print("error: no CUDA device (use --device cpu for a dry run with tiny shapes)", file=sys.stderr)
        return 2

    from sparsebench.measure.stats import summarize
    from sparsebench.store.kernel_records import KernelCase, new_kernel_record, write_kernel_record

    shape = CPU_SHAPE if cpu else attention_shape(args.model)
    contexts = [min(c, 256) for c in args.contexts] if cpu else args.contexts
    dtype = torch.float32 if cpu else torch.bfloat16
    ceilings = None
    if not cpu:
        from sparsebench.measure.ceilings import run_ceilings

        ceilings = run_ceilings()
    rec = new_kernel_record("kv_decode", "attention@full", {"tolerance_rel": TOL, "errors": {}},
                            profile=args.profile, ceilings=ceilings)
    rec.notes.append(f"shape {args.model if not cpu else CPU_SHAPE}; held tokens = ceil(budget x context)")
    if cpu:
        rec.notes.append("dry run on CPU with tiny shapes: timings are meaningless")
    model = ids = None
    if not cpu and not args.no_step:
        from sparsebench.models.shape import ShapeModel

        model, _ = ShapeModel(args.model).load(torch.bfloat16, "cuda")
        ids = torch.randint(0, model.config.vocab_size, (max(contexts) + 1,), generator=torch.Generator().manual_seed(0))
    for context in contexts:
        for budget in args.budgets:
            held = held_tokens(context, budget)
            params = {"context": context, "budget": budget, "held": held, "kv_bytes": kv_bytes(shape, held)}
            samples, errors = attention_cases(shape, held, args.device, dtype, args.reps)
            rec.correctness["errors"][f"{context}/{budget:g}"] = errors
            for impl, s in samples.items():
                st = summarize(s)
                rec.cases.append(KernelCase(impl=impl, params=params, samples_ms=s, p50_ms=st["p50"], p90_ms=st["p90"]))
            if model is not None:
                s, extra = step_case(model, ids, held, args.tokens, max(2, args.reps // 4))
                st = summarize(s)
                rec.cases.append(KernelCase(impl="step", params=params, samples_ms=s, p50_ms=st["p50"],
                                            p90_ms=st["p90"], extra=extra))
            line = "  ".join(f"{c.impl} {c.p50_ms:.3f} ms" for c in rec.cases if c.params == params)
            print(f"L={context:>6} budget={budget:<7g} held={held:>6}  {line}", flush=True)
    full = {(c.impl, c.params["context"]): c.p50_ms for c in rec.cases if c.params["budget"] >= 1}
    for c in rec.cases:
        base = full.get((c.impl, c.params["context"]))
        if base and c.params["budget"] < 1:
            rec.ratios.append({"context": c.params["context"], "budget": c.params["budget"], "impl": c.impl,
                               "speedup_vs_full": base / c.p50_ms})
    path = write_kernel_record(rec, args.results)
    print(f"wrote {path}")
    for r in rec.ratios:
        print(f"  {r['impl']:<16} L={r['context']:>6} budget={r['budget']:<7g} {r['speedup_vs_full']:.2f}x vs full")
    return 0


if __name__ == "__main__":
    sys.exit(main())
