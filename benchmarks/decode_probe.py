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
    attn=NAME   attention implementation (sdpa, eager, ...)

The required variants run first (graph, graph+fuse, compile, compile+fuse), then the extras
while the time budget lasts (a compile costs about as long as the first one did). Each
variant prints two step times: ``synced`` (the suite's figure: host waits after every step,
picks the next token outside the timed region) and ``pipelined`` (next token and position
computed inside the graph, steps replayed back to back: no host gap in the step). Every
graph replay is checked against an eager call, every fusion against the unfused logits.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass

REQUIRED = ("graph", "graph+fuse", "compile", "compile+fuse")
EXTRAS = ("graph+fuse+lt", "compile+fuse+cdt", "compile+fuse+attn=eager", "compile+fuse+lt")
MODIFIERS = ("fuse", "cdt", "autotune", "lt")


@dataclass(frozen=True)
class Variant:
    name: str
    compile: bool
    fuse: bool = False
    cdt: bool = False
    autotune: bool = False
    lt: bool = False
    attn: str | None = None

    def inductor_options(self) -> dict[str, bool]:
        return {**({"coordinate_descent_tuning": True} if self.cdt else {}),
                **({"max_autotune": True} if self.autotune else {})}


def parse_variant(text: str) -> Variant:
    base, *mods = text.split("+")
    if base not in ("graph", "compile"):
        raise ValueError(f"variant '{text}': starts with 'graph' or 'compile', not '{base}'")
    flags: dict[str, object] = {}
    for m in mods:
        if m.startswith("attn="):
            flags["attn"] = m.removeprefix("attn=")
        elif m in MODIFIERS:
            flags[m] = True
        else:
            raise ValueError(f"variant '{text}': unknown modifier '{m}' (known: {', '.join(MODIFIERS)}, attn=NAME)")
    v = Variant(name=text, compile=base == "compile", **flags)  # type: ignore[arg-type]
    if (v.cdt or v.autotune) and not v.compile:
        raise ValueError(f"variant '{text}': cdt/autotune are inductor options, they need 'compile'")
    return v


def _set_attn(model, name: str) -> None:
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(name)
    else:  # older transformers
        model.config._attn_implementation = name


def run_variant(v: Variant, model, ids, args, nbytes: float, bandwidth: float) -> dict:
    import torch

    from sparsebench.measure.decode_graph import decode_timings
    from sparsebench.measure.fuse import fuse_checked_, unfuse_projections_
    from sparsebench.measure.stats import percentile

    t0 = time.time()
    row: dict = {"variant": v.name}
    attn0 = model.config._attn_implementation
    blas0 = torch.backends.cuda.preferred_blas_library()
    fused = None
    try:
        if v.attn:
            _set_attn(model, v.attn)
        if v.lt:
            torch.backends.cuda.preferred_blas_library("cublaslt")
        if v.fuse:
            fused = fuse_checked_(model, ids[:16].view(1, -1).cuda())
            row["fused"] = fused.label
            row["fuse_check_rel_err"] = fused.rel_err
        torch._dynamo.reset()
        forward = (torch.compile(model.forward, dynamic=False, options=v.inductor_options() or None)
                   if v.compile else None)
        res = decode_timings(model, ids, batch=1, context=args.context, tokens=args.tokens,
                             warmup=args.warmup, repetitions=args.reps, progress=lambda it, **_: it,
                             forward=forward, modes=("synced", "pipelined"))
        for mode, (samples, err) in res.items():
            p50 = percentile(samples, 50)
            row[f"{mode}_p50_ms"] = p50
            row[f"{mode}_p90_ms"] = percentile(samples, 90)
            row[f"{mode}_roofline"] = nbytes / (p50 * 1e-3) / bandwidth
            row[f"{mode}_graph_check_rel_err"] = err
    except Exception as exc:  # one variant failing must not lose the others
        row["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if fused is not None:
            unfuse_projections_(model)
        torch.backends.cuda.preferred_blas_library(blas0)
        if v.attn:
            _set_attn(model, attn0)
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
          f"{r['pipelined_p50_ms']:8.3f} {r['pipelined_roofline']:7.3f}   "
          f"{max(r['synced_graph_check_rel_err'], r['pipelined_graph_check_rel_err']):.1e} "
          f"{r['seconds']:6.0f}{fuse}", flush=True)


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

    from sparsebench.measure.ceilings import decode_bytes_per_token, measure_ceilings
    from sparsebench.models.shape import ShapeModel

    start = time.time()
    if not torch.cuda.is_available():
        print("needs a CUDA device", file=sys.stderr)
        return 2
    ceil = measure_ceilings()
    bandwidth = ceil["copy_bandwidth_gbs"] * 1e9
    model, _ = ShapeModel(args.model).load(torch.bfloat16, "cuda")
    model.eval()
    ids = torch.randint(0, model.config.vocab_size, (4096,), generator=torch.Generator().manual_seed(0))
    nbytes = decode_bytes_per_token(model, 1, args.context)
    print(f"{torch.cuda.get_device_name()}  torch {torch.__version__}  transformers {transformers.__version__}")
    print(f"copy bandwidth {ceil['copy_bandwidth_gbs']:.0f} GB/s, bf16 GEMM {ceil['bf16_gemm_tflops']:.0f} TFLOP/s; "
          f"{args.model} bs 1 @ {args.context}: {nbytes / 1e9:.2f} GB/step -> floor "
          f"{nbytes / bandwidth * 1e3:.3f} ms; attention '{model.config._attn_implementation}'; "
          f"setup {time.time() - start:.0f} s\n")
    print(f"{'variant':28s} {'synced':>8s} {'roofl':>7s}   {'pipelin':>8s} {'roofl':>7s}   "
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
    print(f"\ntotal {time.time() - start:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                       "transformers": transformers.__version__, "model": args.model, "context": args.context,
                       "bytes_per_step": nbytes, "ceilings": ceil, "rows": rows}, f, indent=1)
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
