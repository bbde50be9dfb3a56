"""Whole-model prefill latency of the sparse-attention methods at 8k-128k tokens, against
dense SDPA (GPU benchmark, one call, a few minutes).

    python3 benchmarks/sparse_prefill.py --results R                    # 8B shape, 8k..128k
    python3 benchmarks/sparse_prefill.py --lengths 32768 131072 --methods dense streaming --results R
    python3 benchmarks/sparse_prefill.py --device cpu --results R       # dry run: tiny Llama, reference paths

The model is ``shape:llama-3.1-8b`` (random weights, bf16: latency and memory only). Each
case times ``model(input_ids, use_cache=False, logits_to_keep=1)`` with CUDA events: one
warm-up (which the method's density counting sees, and which is profiled to list the
attention kernels that ran), then ``--reps`` repetitions, raw samples kept; the peak GPU
memory of the case is ``torch.cuda.max_memory_allocated`` after a reset (weights included;
the record notes their bytes). Every case, dense included, runs inside
``sdpa_kernel([CUDNN_ATTENTION, FLASH_ATTENTION])`` (cuDNN first where the priority can be
set; if that pair refuses the model's causal GQA call, the efficient backend is added, then
no restriction, with a note), so a method's dense layers and fallbacks use the baseline's
SDPA; the profiled warm-ups say which backend ran (``sdpa_backend`` per case).

Rows (methods applied through their registered classes and ``apply_``, so what is timed is
the method's code; kernel choice ``--kernel``, default ``auto``: the Triton kernel on CUDA):

- ``dense``: the model as loaded (transformers' ``sdpa``), the baseline of every ratio;
- ``streaming[w=...]``: ``--sinks`` (4) plus each of ``--windows`` (``4096`` and ``1/8`` of
  the length), through ``kernels.block_sparse_attn`` with the sinks/window token mask;
- ``minference[P]`` at ``--density`` (0.1), one row per ``--minference-patterns`` entry
  (default ``vertical_slash`` and ``block_sparse``). Calibration is one row of
  ``--calib-length`` random ids of the shape model: with a single candidate pattern every
  head takes it, which is how the rows set "all heads vertical-slash" through the method's
  own code (a comma list, e.g. ``vertical_slash,block_sparse``, runs the real choice, on
  random ids). Vertical-slash heads run as the blocks their lines touch, so their reported
  density (what was computed) can be far above the target; the pattern's own density is
  recorded beside it (``pattern_density``);
- ``quest``, ``tidaldecode``: their prefill is dense by design (they sparsify decode); timed
  with ``--dense-reps`` (1) repetitions to show it costs what dense costs.

Time on an H200 (estimated, not yet measured): about 11 s per dense forward at 128k, the
whole default grid ~350 s; ``--budget-s`` (default 390) keeps it inside gpu_session's 420 s.

Correctness first, at ``--check-length`` (2048) and on all logits: dense with the math SDPA
backend against the preferred backend gives the noise floor of two correct bf16 models;
each row's method with a covering setting (streaming ``window >= L``, MInference density
1.0, Quest/TidalDecode as run) must match dense, and streaming's kernel prefill (window L/4)
its own masked reference (``--kernel ref``), within ``max(TOL, 4 x floor)`` relative
Frobenius error. A failed check records nothing (exit 1). Bad arguments exit 2 before
anything runs. ``--budget-s``: cases predicted (quadratically from the previous length) to
end past the budget are skipped and listed in the record, so a step limit never loses the
whole record. One record under ``results/kernels/`` (op ``sparse_prefill``, baseline
``dense``, ratios dense p50 / method p50 per length).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import torch

LENGTHS = (8192, 16384, 32768, 65536, 131072)
METHODS = ("dense", "streaming", "minference", "quest", "tidaldecode")
WINDOWS = ("4096", "1/8")
MINF_PATTERNS = ("vertical_slash", "block_sparse")
CHECK_L = 2048
CALIB_L = 2048
TOL = 2e-2  # relative Frobenius error of bf16 logits (or 4x the dense-vs-dense floor, if larger)
# --device cpu: a tiny Llama in fp32, the reference paths (4 layers: Quest keeps 2 dense, TidalDecode
# selects at layer 2 and needs one after it)
CPU = {"config": {"vocab_size": 256, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 4,
                  "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
                  "max_position_embeddings": 4096},
       "lengths": (128, 256), "check_l": 96, "calib_l": 96,
       "minference": {"block_size": 32, "last_q": 16, "min_length": 64}}
ATTN_NAMES = ("flash", "fmha", "cudnn", "sdpa", "attention", "attn", "_bsa_fwd")


# ----------------------------------------------------------------------------- arguments


def parse_window(spec: str, L: int) -> int:
    """``"4096"`` -> 4096 tokens; ``"1/8"`` (or ``"0.125"``) -> that fraction of ``L`` (>= 1 token)."""
    spec = spec.strip()
    if spec.isdigit():
        if int(spec) < 1:
            raise ValueError(spec)
        return int(spec)
    value = Fraction(spec)
    if not 0 < value <= 1:
        raise ValueError(spec)
    return max(1, int(L * value))


def check_args(args: argparse.Namespace) -> str | None:
    """What is wrong with the arguments, or None."""
    if any(L < 16 for L in args.lengths or ()) or args.check_length < 16:
        return f"lengths must be >= 16 tokens, got {args.lengths} (check length {args.check_length})"
    if not 0 < args.density <= 1:
        return f"density must be in (0, 1] (fraction of causal query-key pairs computed), got {args.density:g}"
    if args.reps < 1 or args.dense_reps < 1:
        return f"reps must be >= 1, got {args.reps} / {args.dense_reps}"
    if args.sinks < 0:
        return f"sinks must be >= 0, got {args.sinks}"
    for w in args.windows:
        try:
            parse_window(w, 1 << 20)
        except (ValueError, ZeroDivisionError):
            return f"windows must be token counts >= 1 or fractions of the length in (0, 1] like 1/8, got {w!r}"
    bad = [m for m in args.methods if m not in METHODS]
    if bad:
        return f"methods must be among {', '.join(METHODS)}, got {bad}"
    from sparsebench.methods.sparse_attention.config import PATTERNS

    for spec in args.minference_patterns:
        if not spec or any(p not in PATTERNS for p in spec.split(",")):
            return f"minference patterns must be comma lists of {', '.join(PATTERNS)}, got {spec!r}"
    return None


# ----------------------------------------------------------------------------- cases


def cases(args: argparse.Namespace, L: int, cpu: bool) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, method name, config) of every row at length ``L``, dense first."""
    out: list[tuple[str, str, dict[str, Any]]] = []
    for name in args.methods:
        if name == "dense":
            out.insert(0, ("dense", "dense", {}))
        elif name == "streaming":
            out += [(f"streaming[w={w}]", name, {"sinks": args.sinks, "window": parse_window(w, L)})
                    for w in args.windows]
        elif name == "minference":
            extra = dict(CPU["minference"]) if cpu else {}
            if args.block_size:
                extra["block_size"] = args.block_size
            out += [(f"minference[{p}]", name, {"density": args.density, "patterns": p, **extra})
                    for p in args.minference_patterns]
        else:
            out.append((name, name, {}))
    return out


def covering(name: str, cfg: dict[str, Any], L: int) -> dict[str, Any]:
    """The row's config with a pattern covering every pair at length ``L`` (must equal dense)."""
    if name == "streaming":
        return {**cfg, "window": L}
    if name == "minference":
        return {**cfg, "density": 1.0}
    return cfg


# ----------------------------------------------------------------------------- model and calls


def load_model(args: argparse.Namespace, cpu: bool) -> Any:
    if cpu:
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        return LlamaForCausalLM(LlamaConfig(**CPU["config"])).eval()
    from sparsebench.models.shape import ShapeModel

    model, _ = ShapeModel(args.model).load(torch.bfloat16, "cuda")
    return model.eval()


#: SDPA backends every case runs under (set by ``choose_backends``)
BACKENDS: list[Any] = []


def choose_backends(model: Any) -> str:
    """cuDNN then flash, if that pair runs the model's causal GQA call (``enable_gqa``, as
    transformers makes it); else with the memory-efficient backend added; else torch's
    default choice. Returns a note when the preferred pair could not run it."""
    from torch.nn.attention import SDPBackend

    cfg = model.config
    hq, hkv = cfg.num_attention_heads, cfg.num_key_value_heads
    d = getattr(cfg, "head_dim", None) or cfg.hidden_size // hq
    q = torch.randn(1, hq, 256, d, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, hkv, 256, d, device="cuda", dtype=torch.bfloat16)
    why = ""
    for backends in ([SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION],
                     [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]):
        BACKENDS[:] = backends
        try:
            with sdpa_context("cuda"):
                torch.nn.functional.scaled_dot_product_attention(q, k, k, is_causal=True, enable_gqa=True)
            return why
        except RuntimeError as exc:
            why = f"SDPA {[b.name for b in backends]} refused the causal GQA call ({str(exc).splitlines()[0][:160]})"
    BACKENDS.clear()
    return why + "; torch's default backend choice ran"


def sdpa_context(device: str, math: bool = False) -> Any:
    """SDPA restricted to ``BACKENDS`` in that order (``math``: the math backend only);
    nothing on CPU or when no restriction could run."""
    if device != "cuda" or not (BACKENDS or math):
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if math:
        return sdpa_kernel([SDPBackend.MATH])
    try:
        return sdpa_kernel(list(BACKENDS), set_priority=True)
    except TypeError:  # a torch without priorities: its own order among them
        return sdpa_kernel(list(BACKENDS))


def apply(model: Any, name: str, cfg: dict[str, Any], device: str, kernel: str, calib_l: int
          ) -> tuple[Any, Any]:
    """(method, MethodResult) after switching the model back to dense and applying ``name``."""
    from sparsebench import registry
    from sparsebench.api import ApplyContext
    from sparsebench.methods.sparse_attention.attention import uninstall

    uninstall(model)
    if name == "dense":
        return None, None
    cls = registry.methods().get(name)
    method = cls(cls.Config(**cfg))
    calibration = None
    if getattr(method, "needs_calibration", False):
        g = torch.Generator().manual_seed(1)
        calibration = [torch.randint(0, model.config.vocab_size, (1, calib_l), generator=g)]
    result = method.apply_(model, ApplyContext(device=device, kernel=kernel, calibration=calibration))
    return method, result


def prefill(model: Any, ids: torch.Tensor, all_logits: bool = False) -> torch.Tensor:
    with torch.inference_mode():
        if all_logits:
            return model(input_ids=ids, use_cache=False).logits
        return model(input_ids=ids, use_cache=False, logits_to_keep=1).logits


def time_once(fn: Callable[[], Any], device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return float(start.elapsed_time(end))
    t = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - t) / 1e6


def attention_kernels(fn: Callable[[], Any], device: str) -> tuple[list[str], str]:
    """Run ``fn`` once under the profiler: the names of the attention kernels that ran and
    which SDPA backend they were (cudnn / flash / efficient / none); ("", "cpu") on CPU."""
    if device != "cuda":
        fn()
        return [], "not profiled (cpu)"
    try:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
        names = sorted({e.key for e in prof.key_averages() if any(a in e.key.lower() for a in ATTN_NAMES)})
    except Exception as exc:  # no CUPTI: still run the call, say why nothing is listed
        fn()
        return [], f"unknown (profiler failed: {type(exc).__name__})"
    low = " ".join(names).lower()
    backend = ("cudnn" if "cudnn" in low else "flash" if "flash" in low else
               "efficient" if "fmha" in low or "efficient" in low else "none")
    return [n[:160] for n in names[:8]], backend


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    g, w = got.float(), want.float()
    return float((g - w).norm() / w.norm().clamp_min(1e-12))


# ----------------------------------------------------------------------------- checks


def check(model: Any, args: argparse.Namespace, rows: list[tuple[str, str, dict[str, Any]]], device: str,
          L: int, calib_l: int) -> tuple[bool, dict[str, Any]]:
    """Each row's method against dense at length ``L`` (see the module docstring)."""
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(0, model.config.vocab_size, (1, L), generator=g).to(device)
    apply(model, "dense", {}, device, args.kernel, calib_l)
    with sdpa_context(device):
        dense = prefill(model, ids, all_logits=True).float()
    with sdpa_context(device, math=True):
        floor = rel_err(prefill(model, ids, all_logits=True), dense) if device == "cuda" else 0.0
    tol = max(TOL, 4 * floor)
    errors: dict[str, float] = {}
    kernels: dict[str, Any] = {}
    for label, name, cfg in rows:
        if name == "dense":
            continue
        _, result = apply(model, name, covering(name, cfg, L), device, args.kernel, calib_l)
        with sdpa_context(device):
            errors[f"{label} covering"] = rel_err(prefill(model, ids, all_logits=True), dense)
        kernels[label] = result.kernels
        if name == "streaming" and f"{name} kernel vs ref" not in errors:
            sparse = {**cfg, "window": max(1, L // 4)}
            apply(model, name, sparse, device, "ref", calib_l)
            with sdpa_context(device):
                want = prefill(model, ids, all_logits=True).float()
            apply(model, name, sparse, device, args.kernel, calib_l)
            with sdpa_context(device):
                errors[f"{name} kernel vs ref"] = rel_err(prefill(model, ids, all_logits=True), want)
    apply(model, "dense", {}, device, args.kernel, calib_l)
    bad = {k: e for k, e in errors.items() if not e <= tol}
    info = {"passed": not bad, "check_length": L, "metric": "relative Frobenius error of all logits",
            "dense_math_vs_preferred_floor": floor, "tolerance": tol, "errors": errors, "kernels": kernels}
    return not bad, info


# ----------------------------------------------------------------------------- timing


def run_case(model: Any, label: str, name: str, cfg: dict[str, Any], L: int, args: argparse.Namespace,
             device: str, calib_l: int) -> tuple[list[float], dict[str, float], dict[str, Any]]:
    """(samples ms, extra, info) of one (row, length)."""
    g = torch.Generator().manual_seed(L)
    ids = torch.randint(0, model.config.vocab_size, (1, L), generator=g).to(device)
    method, result = apply(model, name, cfg, device, args.kernel, calib_l)
    reps = args.dense_reps if name in ("quest", "tidaldecode") else args.reps
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    with sdpa_context(device):
        names, backend = attention_kernels(lambda: prefill(model, ids), device)  # the warm-up
        report = method.report(model) if method is not None else {}  # counting stops: timing is clean
        samples = [time_once(lambda: prefill(model, ids), device) for _ in range(reps)]
    extra: dict[str, float] = {}
    if device == "cuda":
        extra["peak_allocated_bytes"] = float(torch.cuda.max_memory_allocated())
    density = report.get("attention_density_prefill_mean")
    extra["density"] = density.value if density is not None else 1.0
    if "attention_density_prefill_pattern_mean" in report:
        extra["pattern_density"] = report["attention_density_prefill_pattern_mean"].value
    if "attention_prefill_dense_forwards" in report:
        extra["dense_forwards"] = float(report["attention_prefill_dense_forwards"].value)
    if device == "cuda" and name in ("streaming", "minference") and args.kernel != "ref" \
            and not any("_bsa_fwd" in n for n in names) and extra["density"] < 1.0:
        print(f"!! {label} L={L}: the block-sparse kernel did not show in the profile", file=sys.stderr)
        extra["kernel_missing"] = 1.0
    info = {"attention_kernels": names, "sdpa_backend": backend,
            "method_kernels": result.kernels if result is not None else {"attention": "transformers sdpa"},
            "method_notes": result.notes if result is not None else []}
    from sparsebench.methods.sparse_attention.attention import uninstall

    uninstall(model)
    return samples, extra, info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="shape:llama-3.1-8b")
    p.add_argument("--lengths", type=int, nargs="+", help=f"default {' '.join(map(str, LENGTHS))}")
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--sinks", type=int, default=4)
    p.add_argument("--windows", nargs="+", default=list(WINDOWS), help="token counts or fractions of L (1/8)")
    p.add_argument("--density", type=float, default=0.1, help="MInference's target density")
    p.add_argument("--minference-patterns", nargs="+", default=list(MINF_PATTERNS),
                   help="one row per entry: a pattern, or a comma list calibrated on random ids")
    p.add_argument("--block-size", type=int, default=None, help="MInference's block size (default: the method's)")
    p.add_argument("--kernel", choices=["auto", "fast", "ref"], default="auto")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--dense-reps", type=int, default=1, help="repetitions of the rows whose prefill is dense")
    p.add_argument("--check-length", type=int, default=None, help=f"default {CHECK_L}")
    p.add_argument("--calib-length", type=int, default=None, help=f"default {CALIB_L}")
    p.add_argument("--budget-s", type=float, default=None,
                   help="skip cases predicted to end past this many seconds (default 390 on cuda, none on cpu)")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--profile", default="auto")
    p.add_argument("--results", default="results")
    args = p.parse_args(argv)
    cpu = args.device == "cpu"
    args.check_length = args.check_length or (CPU["check_l"] if cpu else CHECK_L)
    why = check_args(args)
    if why:
        print(f"error: {why}", file=sys.stderr)
        return 2
    if not cpu and not torch.cuda.is_available():
        print("error: no CUDA device (use --device cpu for a dry run with a tiny Llama)", file=sys.stderr)
        return 2
    if not cpu:
        return run(args, cpu)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a dry run: one pinned thread (a shared CPU oversubscribed is 3x slower)
    try:
        return run(args, cpu)
    finally:
        torch.set_num_threads(threads)


def run(args: argparse.Namespace, cpu: bool) -> int:
    started = time.time()
    lengths = sorted(set(args.lengths or (CPU["lengths"] if cpu else LENGTHS)))
    calib_l = args.calib_length or (CPU["calib_l"] if cpu else CALIB_L)
    budget = args.budget_s if args.budget_s is not None else (None if cpu else 390.0)

    from sparsebench.measure.stats import summarize
    from sparsebench.store.kernel_records import KernelCase, new_kernel_record

    model = load_model(args, cpu)
    model_bytes = sum(t.numel() * t.element_size() for t in model.parameters())
    backend_note = "" if cpu else choose_backends(model)
    if backend_note:
        print(f"note: {backend_note}", flush=True)
    print(f"model {'tiny llama (cpu)' if cpu else args.model}: {model_bytes / 2**30:.2f} GiB "
          f"({time.time() - started:.0f}s)", flush=True)
    ok, correctness = check(model, args, cases(args, args.check_length, cpu), args.device, args.check_length,
                            calib_l)
    print(f"checks at L={args.check_length} (tolerance {correctness['tolerance']:.3g}, dense floor "
          f"{correctness['dense_math_vs_preferred_floor']:.3g}): "
          + ", ".join(f"{k} {e:.2e}" for k, e in correctness["errors"].items()), flush=True)
    if not ok:
        print("a method does not match dense (or its reference); nothing recorded", file=sys.stderr)
        return 1
    rec = new_kernel_record("sparse_prefill", "dense", correctness, profile=args.profile if not cpu else "cpu")
    shape = CPU["config"] if cpu else args.model
    rec.notes.append(f"model {shape}, random weights, {'fp32' if cpu else 'bf16'}; batch 1; "
                     f"model(input_ids, use_cache=False, logits_to_keep=1); 1 warm-up (profiled), then "
                     f"{args.reps} repetitions ({args.dense_reps} for quest/tidaldecode, whose prefill is dense by "
                     f"design); weights {model_bytes} bytes (included in peak_allocated_bytes)")
    rec.notes.append(f"minference calibration: 1 x {calib_l} random ids of the shape model (latency only; a single "
                     "candidate pattern puts every head on it)")
    rec.notes.append("density = the method's report of pairs computed / causal pairs (vertical-slash heads: the "
                     "blocks their lines touch); pattern_density = the pairs of the pattern itself")
    if backend_note:
        rec.notes.append(backend_note)
    if cpu:
        rec.notes.append("dry run on CPU (reference paths, tiny Llama): timings are meaningless")
    else:
        rec.hardware["device_name"] = torch.cuda.get_device_name()
    rec.correctness["cases"] = {}
    walls: dict[str, tuple[int, float]] = {}  # label -> (last length, its wall seconds)
    skipped: list[str] = []
    table: dict[tuple[int, str], float] = {}
    for L in lengths:
        for label, name, cfg in cases(args, L, cpu):
            if budget is not None and label in walls:
                prev_l, prev_s = walls[label]
                predicted = prev_s * (L / prev_l) ** 2
                if time.time() - started + predicted > budget:
                    skipped.append(f"{label}@{L}")
                    print(f"skip {label} L={L}: predicted {predicted:.0f}s past the {budget:.0f}s budget", flush=True)
                    continue
            t0 = time.time()
            try:
                samples, extra, info = run_case(model, label, name, cfg, L, args, args.device, calib_l)
            except torch.cuda.OutOfMemoryError as exc:
                from sparsebench.methods.sparse_attention.attention import uninstall

                uninstall(model)
                torch.cuda.empty_cache()
                skipped.append(f"{label}@{L} (out of memory)")
                print(f"OOM {label} L={L}: {str(exc).splitlines()[0][:200]}", flush=True)
                continue
            walls[label] = (L, time.time() - t0)
            st = summarize(samples)
            extra["tokens_per_s"] = L / (st["p50"] * 1e-3)
            rec.cases.append(KernelCase(impl=label, params={"L": L, "method": name, "config": cfg},
                                        samples_ms=[round(s, 4) for s in samples], p50_ms=st["p50"],
                                        p90_ms=st["p90"], extra=extra))
            rec.correctness["cases"][f"{label}@{L}"] = info
            table[(L, label)] = st["p50"]
            dense_ms = table.get((L, "dense"))
            ratio = f"  {dense_ms / st['p50']:.2f}x vs dense" if dense_ms and label != "dense" else ""
            mem = f"  peak {extra['peak_allocated_bytes'] / 2**30:.1f} GiB" if "peak_allocated_bytes" in extra else ""
            pat = f" (pattern {extra['pattern_density']:.3f})" if "pattern_density" in extra else ""
            print(f"L={L:>6} {label:<28} {st['p50']:10.2f} ms  density {extra['density']:.3f}{pat}{mem}{ratio}"
                  f"  [{info['sdpa_backend']}]", flush=True)
    for c in rec.cases:
        base = table.get((c.params["L"], "dense"))
        if base and c.impl != "dense":
            rec.ratios.append({"L": c.params["L"], "impl": c.impl, "speedup": base / c.p50_ms})
    if skipped:
        rec.notes.append(f"skipped (time budget {budget}s or memory): {', '.join(skipped)}")
    backends = {i["sdpa_backend"] for k, i in rec.correctness["cases"].items() if k.startswith("dense@")}
    rec.notes.append(f"dense SDPA backend that ran (profiled warm-ups): {', '.join(sorted(backends)) or 'none'}")
    from sparsebench.store.kernel_records import write_kernel_record

    path = write_kernel_record(rec, args.results)
    print(f"wrote {path} ({time.time() - started:.0f}s)")
    print(json.dumps(rec.ratios, indent=None)[:2000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
