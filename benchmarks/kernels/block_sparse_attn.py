"""Block-sparse causal prefill attention vs SDPA (cuDNN, flash) at the Llama-3-8B attention shape.

    python benchmarks/kernels/block_sparse_attn.py --results results           # on a GPU
    python benchmarks/kernels/block_sparse_attn.py --long --results results    # + 128k
    TRITON_INTERPRET=1 python benchmarks/kernels/block_sparse_attn.py --device cpu   # dry run

Shape: B=1, 32 query heads, 8 KV heads, D=128, bf16; lengths 8k, 16k, 32k, 64k (``--long``:
128k); pattern blocks 128x128 (``--block``), densities 1.0 (our kernel on the dense causal
pattern), 0.3, 0.2, 0.1, 0.05 of the causal block pairs (``random_block_mask``: diagonal and
first block always live, the rest uniform; seeded). Baselines: SDPA ``is_causal=True`` with
the cuDNN backend (``sdpa_cudnn``; if cuDNN cannot run it, the flash backend takes its place
as the baseline and the record says so) and with the flash backend (``sdpa_flash``); both
with ``enable_gqa=True`` where the backend takes it, else on K/V expanded to 32 heads
(made before timing).

Correctness comes first, on the device: every candidate launch config (the head dim's
default and ``config.SWEEP``) is checked against ``ref.py`` at an odd length (1031) at
densities 1.0 and 0.1 with the shared tolerance table (a candidate that fails or does not
compile is left out and listed); if the default and every candidate fail, nothing is
recorded. The baselines are checked against the reference too. Tuning: each checked
candidate is timed at ``--tune-length`` (16k) at density 1.0 and 0.1; the fastest at 1.0
runs the dense cases, the fastest at 0.1 the sparse ones (``triton``; the default config is
timed beside it as ``triton[default]`` when it differs). Before each timed (L, density)
case, the kernel's first, a middle and the last 128 rows are compared with the reference's
(nothing is recorded on a mismatch). Timing: ``sparsebench.measure.kernelbench.time_calls``
(calls captured in a CUDA graph, CUDA events, raw samples kept; the operands are far larger
than the L2). One record under ``results/kernels/``; the table gives ms and the speed-up over
cuDNN per (L, density).

Importable: ``run_case(L, density, impl)`` builds the operands, checks, times one case and
returns its median ms (``impl``: triton, sdpa_cudnn, sdpa_flash, sdpa_math).
"""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from common import attention_parser, device_gate, results_dir

from sparsebench.kernels.block_sparse_attn import (
    BsaConfig,
    block_sparse_attention_ref,
    causal_block_mask,
    default_config,
    density,
    mask_to_index,
    random_block_mask,
)
from sparsebench.kernels.block_sparse_attn.config import SWEEP
from sparsebench.kernels.tolerances import TOLERANCES, assert_close

LENGTHS = (8192, 16384, 32768, 65536)
LONG = 131072
DENSITIES = (1.0, 0.3, 0.2, 0.1, 0.05)
HEADS = (32, 8)
HEAD_DIM = 128
BLOCK = 128
CHECK_L = 1031
TUNE_L = 16384
# --device cpu (Triton interpreter): tiny shapes, a short sweep
CPU = {"lengths": (77, 130), "densities": (1.0, 0.3), "heads": (4, 1), "head_dim": 32, "block": 32,
       "check_l": 50, "tune_l": 77,
       "sweep": (BsaConfig(tile_m=32, tile_n=32, num_warps=4, num_stages=2, tma=True),
                 BsaConfig(tile_m=32, tile_n=16, num_warps=4, num_stages=2, tma=False))}
SDPA = ("sdpa_cudnn", "sdpa_flash", "sdpa_math")


def operands(L: int, heads: tuple[int, int], head_dim: int, device: str, dtype: torch.dtype = torch.bfloat16,
             seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q [1, Hq, L, D], k/v [1, Hkv, L, D], N(0, 1) (drawn on the device)."""
    g = torch.Generator(device=device).manual_seed(seed)
    hq, hkv = heads
    return tuple(torch.randn(1, h, L, head_dim, generator=g, device=device, dtype=dtype) for h in (hq, hkv, hkv))


def pattern(L: int, hq: int, block: int, dens: float, device: str, seed: int = 0
            ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(block_index, block_count, achieved density) of a random pattern at ``dens``."""
    mask = random_block_mask(1, hq, L, block, density=dens, seed=seed, device=device)
    idx, cnt = mask_to_index(mask, block, block)
    return idx, cnt, density(cnt, L, block)


def sdpa_fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, impl: str, gqa: bool) -> Callable[[], torch.Tensor]:
    """One SDPA causal call on backend ``impl`` (``gqa``: native enable_gqa, else k/v are expanded)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = {"sdpa_cudnn": SDPBackend.CUDNN_ATTENTION, "sdpa_flash": SDPBackend.FLASH_ATTENTION,
               "sdpa_math": SDPBackend.MATH}[impl]
    if not gqa and k.shape[1] != q.shape[1]:
        rep = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)

    def call() -> torch.Tensor:
        with sdpa_kernel([backend]):
            if gqa:
                return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    return call


def probe_sdpa(impl: str, device: str, heads: tuple[int, int], head_dim: int) -> tuple[bool | None, str]:
    """Whether ``impl`` runs here with native GQA (True), only on expanded K/V (False), or
    not at all (None), and why; checked against the reference at a small length."""
    L = 1024 if device == "cuda" else 100
    q, k, v = operands(L, heads, head_dim, device, seed=7)
    want = block_sparse_attention_ref(q, k, v, causal_block_mask(L, 128, 128, device), block_m=128)
    why = ""
    for gqa in (True, False):
        try:
            got = sdpa_fn(q, k, v, impl, gqa)()
            assert_close(got, want)
            return gqa, "" if gqa else f"{impl}: enable_gqa refused ({why}); K/V expanded to {heads[0]} heads"
        except Exception as exc:  # no kernel for this backend / shape, or a mismatch
            why = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}"
    return None, f"{impl} unavailable: {why}"


def triton_fn(q, k, v, idx, cnt, block: int, cfg: BsaConfig | None) -> Callable[[], torch.Tensor]:
    from sparsebench.kernels.block_sparse_attn.triton import block_sparse_attention_triton

    out = torch.empty_like(q)
    return lambda: block_sparse_attention_triton(q, k, v, idx, cnt, block_m=block, block_n=block, out=out, config=cfg)


def check_config(cfg: BsaConfig | None, L: int, heads: tuple[int, int], head_dim: int, block: int,
                 densities: tuple[float, ...], device: str) -> dict[str, float]:
    """Max abs error of ``cfg`` vs ref at length ``L`` per density; AssertionError on a mismatch."""
    q, k, v = operands(L, heads, head_dim, device, seed=L)
    errors = {}
    for d in densities:
        idx, cnt, _ = pattern(L, heads[0], block, d, device, seed=1)
        got = triton_fn(q, k, v, idx, cnt, block, cfg)()
        want = block_sparse_attention_ref(q, k, v, idx, cnt, block_m=block)
        assert_close(got, want)
        errors[f"L{L}_d{d:g}"] = float((got.float() - want.float()).abs().max())
    return errors


def check_rows(got: torch.Tensor, q, k, v, idx, cnt, block: int) -> float:
    """The kernel's first, a middle and the last 128 rows against the reference's rows."""
    L = q.shape[2]
    err = 0.0
    for r0 in sorted({0, (L // 2 // block) * block, max(0, L - 128)}):
        r1 = min(L, r0 + 128)
        want = block_sparse_attention_ref(q, k, v, idx, cnt, block_m=block, rows=(r0, r1))
        assert_close(got[:, :, r0:r1], want)
        err = max(err, float((got[:, :, r0:r1].float() - want.float()).abs().max()))
    return err


def _time(calls: list[Callable[[], Any]], reps: int, device: str) -> tuple[list[float], str]:
    """Samples in ms per call: CUDA graph + events on a GPU (eager with a note if capture
    fails), wall clock on the CPU dry run."""
    from sparsebench.measure.kernelbench import time_calls, time_calls_on

    if device != "cuda":
        return time_calls_on(device, calls, reps), ""
    try:
        return time_calls(calls, reps=reps, warmup=2, graph=True), ""
    except Exception as exc:
        torch.cuda.synchronize()
        note = f"CUDA graph capture failed ({type(exc).__name__}: {str(exc)[:120]}); timed eagerly"
        return time_calls(calls, reps=reps, warmup=2, graph=False), note


def causal_flops(L: int, hq: int, head_dim: int) -> float:
    return 4.0 * hq * head_dim * L * (L + 1) / 2


def run_case(L: int, dens: float, impl: str = "triton", *, heads: tuple[int, int] = HEADS, head_dim: int = HEAD_DIM,
             block: int = BLOCK, config: BsaConfig | None = None, reps: int = 10, device: str = "cuda",
             seed: int = 0, check: bool = True) -> float:
    """Median ms of one call of ``impl`` (triton: at ``dens``; SDPA impls: dense causal) at length
    ``L``, after checking it against the reference (rows of the output)."""
    q, k, v = operands(L, heads, head_dim, device, seed=seed)
    idx, cnt, _ = pattern(L, heads[0], block, dens if impl == "triton" else 1.0, device, seed=seed + 1)
    if impl == "triton":
        fn = triton_fn(q, k, v, idx, cnt, block, config)
    else:
        gqa, why = probe_sdpa(impl, device, heads, head_dim)
        if gqa is None:
            raise RuntimeError(why)
        fn = sdpa_fn(q, k, v, impl, gqa)
    if check:
        check_rows(fn(), q, k, v, idx, cnt, block)
    samples, _ = _time([fn], reps, device)
    return sorted(samples)[len(samples) // 2]


def _case(impl: str, params: dict[str, Any], samples: list[float], flops: float) -> Any:
    from sparsebench.measure.stats import summarize
    from sparsebench.store.kernel_records import KernelCase

    st = summarize(samples)
    return KernelCase(impl=impl, params=params, samples_ms=[round(s, 5) for s in samples], p50_ms=st["p50"],
                      p90_ms=st["p90"], extra={"tflops": flops / (st["p50"] * 1e-3) / 1e12})


def tune(candidates: list[BsaConfig], L: int, heads, head_dim: int, block: int, densities: tuple[float, ...],
         device: str, reps: int) -> tuple[dict[float, BsaConfig], dict[str, dict[str, float]]]:
    """The fastest checked candidate per density at length ``L`` (and every timing)."""
    q, k, v = operands(L, heads, head_dim, device, seed=3)
    best: dict[float, BsaConfig] = {}
    table: dict[str, dict[str, float]] = {}
    for d in densities:
        idx, cnt, _ = pattern(L, heads[0], block, d, device, seed=4)
        times = {}
        for cfg in candidates:
            try:
                samples, _ = _time([triton_fn(q, k, v, idx, cnt, block, cfg)], reps, device)
            except Exception as exc:
                print(f"!! tuning: {cfg.label()} failed to time at d={d}: {type(exc).__name__}: {exc}", file=sys.stderr)
                continue
            times[cfg.label()] = sorted(samples)[len(samples) // 2]
        table[f"d{d:g}"] = times
        if times:
            label = min(times, key=times.get)
            best[d] = BsaConfig.parse(label)
            print(f"tuning at L={L} d={d:g}: " + ", ".join(f"{lbl} {ms:.3f}ms" for lbl, ms in
                                                          sorted(times.items(), key=lambda kv: kv[1])), flush=True)
    return best, table


def main(argv: list[str] | None = None) -> int:
    p = attention_parser(__doc__)
    p.add_argument("--lengths", type=int, nargs="+", help=f"default {' '.join(map(str, LENGTHS))}")
    p.add_argument("--long", action="store_true", help=f"also L={LONG}")
    p.add_argument("--densities", type=float, nargs="+", help=f"default {' '.join(map(str, DENSITIES))}")
    p.add_argument("--block", type=int, default=None, help=f"pattern block (square), default {BLOCK}")
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--no-tune", action="store_true", help="time the default config only")
    p.add_argument("--tune-length", type=int, default=None, help=f"default {TUNE_L}")
    args = p.parse_args(argv)
    device = args.device
    cpu = device == "cpu"
    gate = device_gate(device)
    if gate is not None:
        return gate
    heads, head_dim = (CPU["heads"], CPU["head_dim"]) if cpu else (HEADS, HEAD_DIM)
    block = args.block or (CPU["block"] if cpu else BLOCK)
    lengths = list(args.lengths or (CPU["lengths"] if cpu else LENGTHS)) + ([LONG] if args.long else [])
    densities = tuple(args.densities or (CPU["densities"] if cpu else DENSITIES))
    check_l = CPU["check_l"] if cpu else CHECK_L
    tune_l = args.tune_length or (CPU["tune_l"] if cpu else min(TUNE_L, max(lengths)))
    reps = min(args.reps, 2) if cpu else args.reps
    results = results_dir(args)
    started = time.time()
    notes: list[str] = []

    # 1. correctness of every candidate config and of the baselines, before any timing
    default = default_config(head_dim).fit(block, block)
    candidates = [default] + ([] if args.no_tune else [c.fit(block, block) for c in (CPU["sweep"] if cpu else SWEEP)])
    candidates = list(dict.fromkeys(candidates))
    checked, excluded, errors = [], [], {}
    for cfg in candidates:
        try:
            errors[cfg.label()] = check_config(cfg, check_l, heads, head_dim, block, (1.0, 0.1), device)
            checked.append(cfg)
        except Exception as exc:
            why = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}"
            excluded.append({"config": cfg.label(), "error": why})
            print(f"!! left out {cfg.label()}: {why}", file=sys.stderr)
    if not checked:
        print("no kernel config matches the reference; nothing recorded", file=sys.stderr)
        return 1
    print(f"correctness vs ref: {len(checked)} configs pass, {len(excluded)} left out ({time.time() - started:.0f}s)",
          flush=True)
    baselines: dict[str, bool] = {}
    for impl in (("sdpa_math",) if cpu else ("sdpa_cudnn", "sdpa_flash")):
        gqa, why = probe_sdpa(impl, device, heads, head_dim)
        if why:
            notes.append(why)
            print(f"note: {why}", flush=True)
        if gqa is not None:
            baselines[impl] = gqa
    if not baselines:
        print("no SDPA baseline runs here; nothing recorded", file=sys.stderr)
        return 1
    baseline = next(iter(baselines))
    if not cpu and baseline != "sdpa_cudnn":
        notes.append(f"cuDNN SDPA unavailable: {baseline} is the baseline instead")

    # 2. tuning: the fastest checked candidate at the dense and at a sparse pattern
    chosen = {1.0: default, 0.1: default}
    tuning: dict[str, Any] = {}
    if len(checked) > 1:
        best, tuning = tune(checked, tune_l, heads, head_dim, block, (1.0, 0.1), device, max(3, reps // 2))
        chosen.update(best)
    print(f"configs: dense {chosen[1.0].label()}, sparse {chosen[0.1].label()} (default {default.label()})", flush=True)

    from sparsebench.store.kernel_records import new_kernel_record, write_kernel_record

    correctness = {"passed": True, "against": "sparsebench.kernels.block_sparse_attn.ref", "dtype": "bfloat16",
                   "tolerance": TOLERANCES["bfloat16"], "check_length": check_l, "configs": errors,
                   "excluded": excluded, "baselines": {k: ("enable_gqa" if g else "expanded kv") for k, g in baselines.items()},
                   "rows": {}}
    ceilings = None
    if not cpu and not args.no_ceilings:
        from sparsebench.measure.ceilings import run_ceilings

        ceilings = run_ceilings()
    rec = new_kernel_record("block_sparse_attn", baseline, correctness, profile=args.profile or ("cpu" if cpu else None),
                            ceilings=ceilings)
    if cpu:
        rec.notes.append("dry run under the Triton interpreter on CPU: timings are meaningless")
    else:
        rec.hardware["device_name"] = torch.cuda.get_device_name()
    rec.notes += notes
    rec.notes.append(f"shape B=1, Hq={heads[0]}, Hkv={heads[1]}, D={head_dim}, bf16; pattern blocks {block}x{block}, "
                     "random_block_mask (diagonal + first block always live), seeded; SDPA is_causal=True")
    rec.notes.append(f"triton configs: dense {chosen[1.0].label()}, sparse {chosen[0.1].label()}, "
                     f"default {default.label()}; tuning at L={tune_l}: {tuning}")

    # 3. timing
    table: dict[tuple[int, str, float], float] = {}
    for L in lengths:
        q, k, v = operands(L, heads, head_dim, device, seed=L)
        flops = causal_flops(L, heads[0], head_dim)
        for impl, gqa in baselines.items():
            samples, note = _time([sdpa_fn(q, k, v, impl, gqa)], reps, device)
            if note:
                rec.notes.append(f"{impl} L={L}: {note}")
            c = _case(impl, {"L": L, "density": 1.0}, samples, flops)
            rec.cases.append(c)
            table[(L, impl, 1.0)] = c.p50_ms
            print(f"L={L:6d} {impl:11s} {c.p50_ms:9.3f} ms  {c.extra['tflops']:6.1f} TFLOP/s", flush=True)
        for d in densities:
            idx, cnt, achieved = pattern(L, heads[0], block, d, device, seed=L + 1)
            cfg = chosen[1.0] if d >= 1.0 else chosen[0.1]
            variants = [("triton", cfg)] + ([("triton[default]", default)] if cfg != default else [])
            for impl, c_cfg in variants:
                fn = triton_fn(q, k, v, idx, cnt, block, c_cfg)
                try:
                    err = check_rows(fn(), q, k, v, idx, cnt, block)
                except AssertionError:
                    traceback.print_exc()
                    print(f"kernel {c_cfg.label()} does not match the reference at L={L} d={d}; nothing recorded",
                          file=sys.stderr)
                    return 1
                rec.correctness["rows"][f"{impl}_L{L}_d{d:g}"] = err
                samples, note = _time([fn], reps, device)
                if note:
                    rec.notes.append(f"{impl} L={L} d={d}: {note}")
                c = _case(impl, {"L": L, "density": d}, samples, flops * achieved)
                c.extra["achieved_density"] = achieved
                c.extra["dense_equiv_tflops"] = flops / (c.p50_ms * 1e-3) / 1e12
                rec.cases.append(c)
                table[(L, impl, d)] = c.p50_ms
                base_ms = table[(L, baseline, 1.0)]
                print(f"L={L:6d} {impl:15s} d={d:4.2f} (achieved {achieved:.3f}) {c.p50_ms:9.3f} ms  "
                      f"{base_ms / c.p50_ms:6.2f}x over {baseline}  {c.extra['tflops']:6.1f} TFLOP/s computed", flush=True)
                for over in baselines:
                    rec.ratios.append({"L": L, "density": d, "impl": impl, "over": over,
                                       "speedup": table[(L, over, 1.0)] / c.p50_ms})
        del q, k, v
        if not cpu:
            torch.cuda.empty_cache()

    # 4. the table: ms, and the speed-up over the baseline per (L, density)
    head = ["L", *[f"{b} ms" for b in baselines], *[f"d={d:g}" for d in densities]]
    print("\n| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for L in lengths:
        cells = [str(L)] + [f"{table[(L, b, 1.0)]:.3f}" for b in baselines]
        for d in densities:
            ms = table.get((L, "triton", d))
            cells.append(f"{ms:.3f} ms ({table[(L, baseline, 1.0)] / ms:.2f}x)" if ms else "-")
        print("| " + " | ".join(cells) + " |")
    print(f"(speed-up over {baseline}; triton config dense {chosen[1.0].label()}, sparse {chosen[0.1].label()})")
    if chosen[0.1] != default:
        print(f"to make the sparse winner the default: export SPARSEBENCH_BSA_CONFIG=\"{chosen[0.1].label()}\"")
    print(f"total {time.time() - started:.0f}s")
    if results:
        print(f"wrote {write_kernel_record(rec, results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
