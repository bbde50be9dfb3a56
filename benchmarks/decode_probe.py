"""Decode-step probe: the dense decode step against the bandwidth roofline, and which choices
of the measurement path move it (GPU diagnostic, one call, under 4 minutes on an H200).

    python benchmarks/decode_probe.py                  # shape:llama-3.1-8b, bs 1, context 512
    python benchmarks/decode_probe.py --variants compile+fuse+cdt compile+fuse+attn=eager --no-extras
    python benchmarks/decode_probe.py --list           # the variant grammar, no GPU needed

Each variant is ``graph`` (eager forward captured in a CUDA graph) or ``compile`` (the
``torch.compile``d forward captured in one) plus modifiers joined by ``+``:

    fuse        q/k/v and gate/up as one GEMV each (sparsebench.measure.fuse, checked)
    cdt         inductor coordinate-descent tuning of its Triton kernels (compile only)
    autotune    inductor max-autotune of GEMMs (compile only; minutes: not in the extras)
    lt          cuBLASLt as the preferred BLAS library
    attn=NAME   attention implementation (sdpa, eager, flex_attention, ...)
    opt:K=V     any other inductor option (compile only), e.g. opt:coordinate_descent_search_radius=2
    gemv        the suite's ``+gemv`` decode path (sparsebench.measure.decode_kernels): one-row
                linear products through the dense GEMV plugin (SPARSEBENCH_DENSE_GEMV_CONFIG picks
                its tiles), and one-token attention through the decode attention plugin
    perlen      (with gemv) every cache layer keeps and advances its own length counter (not one
                shared write position: sparsebench.measure.cache_length)
    glu         (with gemv) SiLU(gate) x up computed by the fused gate/up GEMV
                (sparsebench.measure.glu_fold; off on the suite's paths: slower on an H200)
    norope      (with gemv) RoPE and the k/v cache write stay three kernels a layer (not one
                rope_cache launch: sparsebench.measure.rope_fold)
    nofold      (with gemv) the RMSNorms stay kernels of their own (not folded into the fused
                q/k/v and gate/up GEMVs: sparsebench.measure.norm_fold)
    pdl         (with gemv) the plugins' kernels launched by programmatic dependent launch
                (SPARSEBENCH_PDL=1); inductor's own kernels take it with opt:triton.enable_pdl=True
    prof        after timing, profile a few replays of the step's graph: kernels per step, GPU
                busy time against the step's span, and the kernels that take the most time

The required variants run first (graph, graph+fuse, compile, compile+fuse), then the extras
while the time budget lasts (a compile costs about as long as the first one did). Each
variant prints three step times: ``synced`` (the suite's figure: host waits after every step,
picks the next token outside the timed region), ``primed`` (the same, with a spin kernel
queued before each start event so that the host's graph launch is not timed) and
``pipelined`` (next token and position computed inside the graph, steps replayed back to
back: no host gap in the step). Every graph replay is checked against an eager call, every
fusion against the unfused logits.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from dataclasses import asdict, dataclass

REQUIRED = ("graph", "graph+fuse", "compile", "compile+fuse")
EXTRAS = ("graph+fuse+lt", "compile+fuse+cdt", "compile+fuse+attn=eager", "compile+fuse+lt")
MODIFIERS = ("fuse", "cdt", "autotune", "lt", "prof", "gemv", "pdl", "nofold", "perlen", "glu", "norope")


@dataclass(frozen=True)
class Variant:
    name: str
    compile: bool
    fuse: bool = False
    cdt: bool = False
    autotune: bool = False
    lt: bool = False
    prof: bool = False
    gemv: bool = False
    pdl: bool = False
    nofold: bool = False
    perlen: bool = False
    glu: bool = False
    norope: bool = False
    attn: str | None = None
    opts: tuple[tuple[str, object], ...] = ()

    def inductor_options(self) -> dict[str, object]:
        return {**({"coordinate_descent_tuning": True} if self.cdt else {}),
                **({"max_autotune": True} if self.autotune else {}), **dict(self.opts)}


def _option_value(text: str) -> object:
    if text in ("True", "False"):
        return text == "True"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_variant(text: str) -> Variant:
    base, *mods = text.split("+")
    if base not in ("graph", "compile"):
        raise ValueError(f"variant '{text}': starts with 'graph' or 'compile', not '{base}'")
    flags: dict[str, object] = {}
    opts: list[tuple[str, object]] = []
    for m in mods:
        if m.startswith("attn="):
            flags["attn"] = m.removeprefix("attn=")
        elif m.startswith("opt:") and "=" in m:
            key, _, val = m.removeprefix("opt:").partition("=")
            opts.append((key, _option_value(val)))
        elif m in MODIFIERS:
            flags[m] = True
        else:
            raise ValueError(f"variant '{text}': unknown modifier '{m}' "
                             f"(known: {', '.join(MODIFIERS)}, attn=NAME, opt:KEY=VALUE)")
    v = Variant(name=text, compile=base == "compile", opts=tuple(opts), **flags)  # type: ignore[arg-type]
    if (v.cdt or v.autotune or v.opts) and not v.compile:
        raise ValueError(f"variant '{text}': cdt/autotune/opt: are inductor options, they need 'compile'")
    if (v.pdl or v.nofold or v.perlen or v.glu or v.norope) and not v.gemv:
        raise ValueError(f"variant '{text}': pdl, nofold, perlen, glu and norope change the gemv path, they need 'gemv'")
    return v


def load_model(name: str = "shape:llama-3.1-8b"):
    """The shape model in bf16 on the GPU, eval mode, and the 4096 token ids (seed 0) every
    decode diagnostic here feeds it: ``(model, ids)``."""
    import torch

    from sparsebench.models.shape import ShapeModel

    model, _ = ShapeModel(name).load(torch.bfloat16, "cuda")
    model.eval()
    return model, torch.randint(0, model.config.vocab_size, (4096,), generator=torch.Generator().manual_seed(0))


def kernel_breakdown(replay, replays: int = 8, top: int = 25) -> dict:
    """What one graph replay (``replay()``) runs on the GPU: kernels per step, the time they
    keep the GPU busy against the span from the step's first kernel start to its last kernel
    end (the difference is gaps between kernels inside the graph), and the kernels (names
    with inductor's trailing number dropped) that take the most time per step. Only work
    launched by the graph counts (the position reset before each replay does not)."""
    import re

    import torch
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(replays):
            replay()
            torch.cuda.synchronize()  # one replay at a time: spans do not overlap the resets
    events = list(prof.profiler.kineto_results.events())
    launches = {e.correlation_id() for e in events if "GraphLaunch" in e.name()}
    device = [e for e in events if e.device_type() == torch.autograd.DeviceType.CUDA]
    graphed = [e for e in device if e.correlation_id() in launches]
    spans = sorted((e.start_ns() / 1e3, (e.start_ns() + e.duration_ns()) / 1e3, e.name(), e.correlation_id())
                   for e in (graphed or device))  # raw: kernels, copies, memsets
    if not spans:
        return {"error": "the profiler recorded no kernels of the graph's replays"}
    busy, span, end = 0.0, 0.0, float("-inf")
    per_launch: dict[int, list[float]] = {}
    for a, b, _, corr in spans:  # union of the intervals, and each replay's first start / last end
        if b > end:
            busy += b - max(a, end)
            end = b
        lo_hi = per_launch.setdefault(corr, [a, b])
        lo_hi[0], lo_hi[1] = min(lo_hi[0], a), max(lo_hi[1], b)
    span = sum(hi - lo for lo, hi in per_launch.values()) / max(1, len(per_launch)) * replays
    by_name: dict[str, list[float]] = {}
    for a, b, name, _ in spans:
        entry = by_name.setdefault(re.sub(r"_\d+$", "", name)[:100], [0, 0.0])
        entry[0] += 1
        entry[1] += b - a
    ranked = sorted(by_name.items(), key=lambda kv: -kv[1][1])
    return {"replays": replays, "kernels_per_step": len(spans) / replays,
            "busy_us_per_step": busy / replays, "span_us_per_step": span / replays,
            "graph_kernels_found": bool(graphed),
            "top": [{"kernel": k, "per_step": c / replays, "us_per_step": t / replays} for k, (c, t) in ranked[:top]]}


def _print_breakdown(name: str, b: dict) -> None:
    if "error" in b:
        print(f"  {name}: {b['error']}", flush=True)
        return
    print(f"  {name}: {b['kernels_per_step']:.0f} kernels/step, GPU busy {b['busy_us_per_step']:.0f} us "
          f"of a {b['span_us_per_step']:.0f} us span", flush=True)
    for r in b["top"]:
        print(f"    {r['us_per_step']:8.1f} us  x{r['per_step']:<5.0f} {r['kernel']}", flush=True)


def run_variant(v: Variant, model, ids, args, nbytes: float, bandwidth: float) -> dict:
    import torch

    from sparsebench.measure.decode_graph import decode_timings
    from sparsebench.measure.decode_kernels import gemv_decode, set_attention
    from sparsebench.measure.fuse import fuse_checked_, unfuse_projections_
    from sparsebench.measure.stats import percentile

    t0 = time.time()
    row: dict = {"variant": v.name}
    attn0 = model.config._attn_implementation
    blas0 = torch.backends.cuda.preferred_blas_library()
    fused = None
    check = ids[:16].view(1, -1).cuda()
    routed = (gemv_decode(model, "cuda", pdl=v.pdl, fold_norms=not v.nofold, check_ids=check,
                          share_lengths=not v.perlen, fold_glu=v.glu, fold_rope=not v.norope) if v.gemv else contextlib.nullcontext({}))
    stack = contextlib.ExitStack()
    try:
        if v.fuse:  # before the gemv path: its norm folding works on fused groups
            fused = fuse_checked_(model, check)
            row["fused"] = fused.label
            row["fuse_check_rel_err"] = fused.rel_err
        row.update(stack.enter_context(routed))
        if v.attn:
            set_attention(model, v.attn)
        if v.lt:
            torch.backends.cuda.preferred_blas_library("cublaslt")
        torch._dynamo.reset()
        forward = (torch.compile(model.forward, dynamic=False, options=v.inductor_options() or None)
                   if v.compile else None)

        def inspect(mode: str, replay) -> None:
            if mode == "synced":
                row["kernels"] = kernel_breakdown(replay)

        res = decode_timings(model, ids, batch=1, context=args.context, tokens=args.tokens,
                             warmup=args.warmup, repetitions=args.reps, progress=lambda it, **_: it,
                             forward=forward, modes=("synced", "primed", "pipelined"),
                             on_graph=inspect if v.prof else None)
        for mode, (samples, err) in res.items():
            p50 = percentile(samples, 50)
            row[f"{mode}_p50_ms"] = p50
            row[f"{mode}_p90_ms"] = percentile(samples, 90)
            row[f"{mode}_roofline"] = nbytes / (p50 * 1e-3) / bandwidth
            row[f"{mode}_graph_check_rel_err"] = err
            row[f"{mode}_samples"] = samples
    except Exception as exc:  # one variant failing must not lose the others
        row["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        stack.close()
        if fused is not None:
            unfuse_projections_(model)
        torch.backends.cuda.preferred_blas_library(blas0)
        if v.attn:
            set_attention(model, attn0)
        torch._dynamo.reset()
        torch.cuda.empty_cache()
    row["seconds"] = time.time() - t0
    return row


def _print_row(r: dict) -> None:
    if "error" in r:
        print(f"{r['variant']:28s} FAILED after {r['seconds']:.0f} s: {r['error']}", flush=True)
        return
    err = r.get("fuse_check_rel_err")
    fuse = f"  {r['fused']} (logits vs separate {err:.1e})" if err is not None else ""
    print(f"{r['variant']:28s} {r['synced_p50_ms']:8.3f} {r['synced_roofline']:7.3f}   "
          f"{r['primed_p50_ms']:8.3f} {r['primed_roofline']:7.3f}   "
          f"{r['pipelined_p50_ms']:8.3f} {r['pipelined_roofline']:7.3f}   "
          f"{max(r['synced_graph_check_rel_err'], r['pipelined_graph_check_rel_err']):.1e} "
          f"{r['seconds']:6.0f}{fuse}", flush=True)
    if "kernels" in r:
        _print_breakdown(r["variant"], r["kernels"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="shape:llama-3.1-8b")
    p.add_argument("--variants", nargs="+", default=list(REQUIRED))
    p.add_argument("--extras", nargs="*", default=list(EXTRAS), help="run after the variants while the budget lasts")
    p.add_argument("--no-extras", dest="extras", action="store_const", const=[])
    p.add_argument("--budget-s", type=float, default=190,
                   help="start no extra that would end past this many seconds (the required variants always run)")
    p.add_argument("--context", type=int, default=512)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--json", help="also write the rows here")
    p.add_argument("--list", action="store_true", help="check and print the variants, then exit")
    args = p.parse_args(argv)
    try:
        wanted = [parse_variant(s) for s in args.variants]
        extras = [parse_variant(s) for s in args.extras]
    except ValueError as exc:
        p.error(str(exc))
    if args.list:
        for v in wanted + extras:
            print(("extra   " if v in extras and v not in wanted else "variant ") + json.dumps(asdict(v)))
        return 0

    import torch
    import transformers

    from sparsebench.measure.ceilings import decode_bytes_per_token, run_ceilings

    start = time.time()
    if not torch.cuda.is_available():
        print("needs a CUDA device", file=sys.stderr)
        return 2
    ceil = run_ceilings()
    bandwidth = ceil["copy_bandwidth_gbs"] * 1e9
    model, ids = load_model(args.model)
    nbytes = decode_bytes_per_token(model, 1, args.context)
    print(f"{torch.cuda.get_device_name()}  torch {torch.__version__}  transformers {transformers.__version__}")
    print(f"copy bandwidth {ceil['copy_bandwidth_gbs']:.0f} GB/s, bf16 GEMM {ceil['bf16_gemm_tflops']:.0f} TFLOP/s; "
          f"{args.model} bs 1 @ {args.context}: {nbytes / 1e9:.2f} GB/step -> floor "
          f"{nbytes / bandwidth * 1e3:.3f} ms; attention '{model.config._attn_implementation}'; "
          f"setup {time.time() - start:.0f} s\n")
    print(f"{'variant':28s} {'synced':>8s} {'roofl':>7s}   {'primed':>8s} {'roofl':>7s}   "
          f"{'pipelin':>8s} {'roofl':>7s}   "
          f"{'graph err':9s} {'s':>6s}   (p50 ms per step)")
    rows: list[dict] = []
    cost = {False: 15.0, True: 60.0}  # first guesses, replaced by what a variant of that kind took
    for i, v in enumerate(wanted + [e for e in extras if e not in wanted]):
        left = args.budget_s - (time.time() - start)
        need = cost[v.compile] * (2.5 if v.cdt else 1) * (5 if v.autotune else 1)  # tuning benchmarks kernels
        if i >= len(wanted) and need > left:
            print(f"{v.name:28s} skipped: about {need:.0f} s needed, {left:.0f} s of budget left", flush=True)
            continue
        row = run_variant(v, model, ids, args, nbytes, bandwidth)
        if not (v.cdt or v.autotune):
            cost[v.compile] = max(cost[v.compile] * 0.5, row["seconds"])
        rows.append(row)
        _print_row(row)
        if args.json:  # after every row: a run stopped by its time limit keeps what it measured
            with open(args.json, "w") as f:
                json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                           "transformers": transformers.__version__, "model": args.model, "context": args.context,
                           "bytes_per_step": nbytes, "ceilings": ceil, "rows": rows}, f, indent=1)
    print(f"\ntotal {time.time() - start:.0f} s")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
