"""Decode attention over a paged KV cache with Quest top-k pages vs SDPA on the full cache.

    python benchmarks/kernels/topk_decode_attn.py --results results               # on a GPU
    python benchmarks/kernels/topk_decode_attn.py --page-sizes 16 32 --results results
    TRITON_INTERPRET=1 python benchmarks/kernels/topk_decode_attn.py --device cpu      # dry run

Shape: Llama-3-8B decode, B=1, 32 query heads, 8 KV heads, D=128, bf16, one new token;
contexts 8k, 32k, 64k; pages of 32 tokens (``--page-sizes``), physical pages shuffled (a
fragmented allocator); budgets (kept fraction of the pages) 1, 1/2, 1/4, 1/8, 1/16.

Cases per (context, page size):
  * ``sdpa_flash`` / ``sdpa_math``: SDPA on a contiguous ``[1, 8, L, 128]`` cache of the full
    length (``enable_gqa=True`` where the backend takes it, else K/V expanded to 32 heads);
  * ``paged_dense``: our split-K paged decode over every page (the dense baseline of ours);
  * per budget and selection (``kv``: one selection per KV head, shared by its 4 query heads;
    ``head``: Quest's per-query-head selection) ``topk[<sel>]`` = the decode kernel on a
    precomputed selection (excl. selection), ``topk[<sel>]+select`` = page scores + top-k +
    decode (incl. selection), ``select[<sel>]`` = the selection alone.

Correctness first, on the device, for each context: ``paged_dense`` and every ``topk`` case
against ``ref.py`` (same selection) with the shared tolerance table, the fast selection
against the reference one (the same pages up to near-ties at the k-th score), and the SDPA
baselines against our dense reference; any mismatch of ours and nothing is recorded. A few
decode launch configs (``config.SWEEP``) are checked and timed at 32k dense first; the
fastest runs every case (``--no-sweep``: the default). Timing:
``sparsebench.measure.kernelbench.time_calls`` over distinct cache copies (together past the
L2), calls in one CUDA graph, CUDA events, raw samples kept. One record under
``results/kernels/``; the table gives ms incl. and excl. selection and the speed-up over
``sdpa_flash``.

Importable: ``run_case(context, budget, impl)`` builds a cache, checks and times one case and
returns its median ms.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from common import attention_parser, device_gate, results_dir

from sparsebench.kernels.tolerances import TOLERANCES, assert_close
from sparsebench.kernels.topk_decode_attn import (
    DecodeConfig,
    budget_pages,
    default_config,
    page_metadata,
    page_scores_ref,
    paged_from_dense,
    select_pages,
    select_pages_ref,
    topk_decode_attention_ref,
)
from sparsebench.kernels.topk_decode_attn.config import SWEEP

CONTEXTS = (8192, 32768, 65536)
BUDGETS = (1.0, 1 / 2, 1 / 4, 1 / 8, 1 / 16)
PAGE_SIZES = (32,)
HEADS = (32, 8)
HEAD_DIM = 128
SELECTIONS = ("kv", "head")
CPU = {"contexts": (77, 300), "budgets": (1.0, 1 / 4), "page_sizes": (16,), "heads": (4, 1), "head_dim": 32,
       "sweep": (DecodeConfig(block_n=16, num_stages=2), DecodeConfig(block_n=32, num_stages=2, programs=16))}


class Cache:
    """One layer's decode state: q, the contiguous K/V, the paged K/V and the page metadata."""

    def __init__(self, context: int, page_size: int, heads: tuple[int, int], head_dim: int, device: str,
                 seed: int, dtype: torch.dtype = torch.bfloat16) -> None:
        g = torch.Generator(device=device).manual_seed(seed)
        hq, hkv = heads
        self.k = torch.randn(1, hkv, context, head_dim, generator=g, device=device, dtype=dtype)
        self.v = torch.randn(1, hkv, context, head_dim, generator=g, device=device, dtype=dtype)
        self.q = torch.randn(1, hq, head_dim, generator=g, device=device, dtype=dtype)
        self.kp, self.vp, self.pt, self.sl = paged_from_dense(self.k, self.v, page_size, seed=seed)
        self.kmin, self.kmax = page_metadata(self.kp, self.pt, self.sl)
        self.page_size = page_size
        self.out = torch.empty_like(self.q)

    @property
    def max_pages(self) -> int:
        return self.pt.shape[1]

    def select(self, k: int, per: str) -> torch.Tensor:
        return select_pages(self.q, self.kmin, self.kmax, self.pt, self.sl, k, page_size=self.page_size, per=per,
                            impl="triton")

    def attend(self, sel: torch.Tensor | None, cfg: DecodeConfig | None) -> torch.Tensor:
        from sparsebench.kernels.topk_decode_attn.triton import topk_decode_attention_triton

        return topk_decode_attention_triton(self.q, self.kp, self.vp, self.pt, self.sl, sel, out=self.out, config=cfg)

    def ref(self, sel: torch.Tensor | None) -> torch.Tensor:
        return topk_decode_attention_ref(self.q, self.kp, self.vp, self.pt, self.sl, sel)


def sdpa_fn(c: Cache, impl: str, gqa: bool) -> Callable[[], torch.Tensor]:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = {"sdpa_flash": SDPBackend.FLASH_ATTENTION, "sdpa_math": SDPBackend.MATH,
               "sdpa_cudnn": SDPBackend.CUDNN_ATTENTION}[impl]
    q = c.q[:, :, None]  # [1, Hq, 1, D]
    k, v = c.k, c.v
    if not gqa:
        rep = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)

    def call() -> torch.Tensor:
        with sdpa_kernel([backend]):
            if gqa:
                return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
            return F.scaled_dot_product_attention(q, k, v)

    return call


def probe_sdpa(c: Cache, impl: str) -> tuple[bool | None, str]:
    """(native GQA, expanded only, or unavailable: None) and why; checked against our dense ref."""
    want = c.ref(None)
    why = ""
    for gqa in (True, False):
        try:
            got = sdpa_fn(c, impl, gqa)()[:, :, 0]
            assert_close(got, want)
            return gqa, "" if gqa else f"{impl}: enable_gqa refused ({why}); K/V expanded"
        except Exception as exc:
            why = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}"
    return None, f"{impl} unavailable: {why}"


def same_pages(fast: torch.Tensor, ref: torch.Tensor, scores: torch.Tensor, k: int, tol: float = 1e-2) -> None:
    """The fast selection keeps the reference's pages, up to pages whose score is within
    ``tol`` (relative) of the k-th best (float summation order can swap near-ties)."""
    kk = min(k, scores.shape[-1])
    kth = scores.sort(-1, descending=True).values[..., kk - 1]
    P = scores.shape[-1]

    def as_mask(sel: torch.Tensor) -> torch.Tensor:  # -1 padding goes to a dump column
        idx = torch.where(sel >= 0, sel.long(), torch.full_like(sel.long(), P))
        out = torch.zeros((*scores.shape[:-1], P + 1), dtype=torch.bool, device=scores.device)
        return out.scatter_(-1, idx, True)[..., :P]

    in_fast, in_ref = as_mask(fast), as_mask(ref)
    differ = in_fast ^ in_ref
    near = (scores - kth[..., None]).abs() <= tol * kth.abs().clamp(min=1.0)[..., None]
    if not bool((~differ | near).all()) or not torch.equal(in_fast.sum(-1), in_ref.sum(-1)):
        raise AssertionError(f"selections differ beyond near-ties: {int((differ & ~near).sum())} pages")


def check_context(c: Cache, budgets: tuple[float, ...], cfg: DecodeConfig | None) -> dict[str, float]:
    """Ours vs ref at one cache: dense, and per budget and selection (attention and selection)."""
    errors = {}
    got = c.attend(None, cfg)
    want = c.ref(None)
    assert_close(got, want)
    errors["paged_dense"] = float((got.float() - want.float()).abs().max())
    for b in budgets:
        k = budget_pages(b, c.max_pages)
        for per in SELECTIONS:
            sel = c.select(k, per)
            scores = page_scores_ref(c.q, c.kmin, c.kmax, c.pt, c.sl, c.page_size, per)
            same_pages(sel, select_pages_ref(c.q, c.kmin, c.kmax, c.pt, c.sl, k, c.page_size, per), scores, k)
            got = c.attend(sel, cfg)
            want = c.ref(sel)
            assert_close(got, want)
            errors[f"topk[{per}]_b{b:g}"] = float((got.float() - want.float()).abs().max())
    return errors


def _time(calls: list[Callable[[], Any]], reps: int, device: str) -> tuple[list[float], str]:
    from sparsebench.measure.kernelbench import time_calls, time_calls_on

    if device != "cuda":
        return time_calls_on(device, calls, reps), ""
    try:
        return time_calls(calls, reps=reps, warmup=2, graph=True), ""
    except Exception as exc:
        torch.cuda.synchronize()
        note = f"CUDA graph capture failed ({type(exc).__name__}: {str(exc)[:120]}); timed eagerly"
        return time_calls(calls, reps=reps, warmup=2, graph=False), note


def copies_for(context: int, heads: tuple[int, int], head_dim: int, device: str) -> int:
    """Caches (layers) per timed replay, together well past the L2."""
    from sparsebench.measure.kernelbench import copies_for as need

    return 2 if device != "cuda" else need(2 * heads[1] * context * head_dim * 2)


def calls_for(impl: str, caches: list[Cache], budget: float, cfg: DecodeConfig | None, gqa: bool = True
              ) -> list[Callable[[], Any]]:
    """One call per cache for ``impl``: sdpa_*, paged_dense, topk[<sel>], topk[<sel>]+select, select[<sel>]."""
    if impl.startswith("sdpa_"):
        return [sdpa_fn(c, impl, gqa) for c in caches]
    if impl == "paged_dense":
        return [lambda c=c: c.attend(None, cfg) for c in caches]
    per = impl[impl.index("[") + 1:impl.index("]")]
    k = budget_pages(budget, caches[0].max_pages)
    if impl.startswith("select["):
        return [lambda c=c: c.select(k, per) for c in caches]
    if impl.endswith("+select"):
        return [lambda c=c: c.attend(c.select(k, per), cfg) for c in caches]
    sels = [c.select(k, per) for c in caches]  # precomputed, outside the timing
    return [lambda c=c, s=s: c.attend(s, cfg) for c, s in zip(caches, sels, strict=True)]


def run_case(context: int, budget: float = 1.0, impl: str = "topk[kv]+select", *, page_size: int = 32,
             heads: tuple[int, int] = HEADS, head_dim: int = HEAD_DIM, config: DecodeConfig | None = None,
             reps: int = 30, device: str = "cuda", seed: int = 0, check: bool = True) -> float:
    """Median ms per call of ``impl`` (see ``calls_for``) at one context and budget, over cache
    copies past the L2, after checking ours against the reference on the first copy."""
    caches = [Cache(context, page_size, heads, head_dim, device, seed + i)
              for i in range(copies_for(context, heads, head_dim, device))]
    gqa = True
    if impl.startswith("sdpa_"):
        gqa, why = probe_sdpa(caches[0], impl)
        if gqa is None:
            raise RuntimeError(why)
    elif check:
        check_context(caches[0], (budget,), config)
    samples, _ = _time(calls_for(impl, caches, budget, config, gqa), reps, device)
    return sorted(samples)[len(samples) // 2]


def _case(impl: str, params: dict[str, Any], samples: list[float], kv_bytes: float) -> Any:
    from sparsebench.measure.stats import summarize
    from sparsebench.store.kernel_records import KernelCase

    st = summarize(samples)
    return KernelCase(impl=impl, params=params, samples_ms=[round(s, 5) for s in samples], p50_ms=st["p50"],
                      p90_ms=st["p90"], extra={"kv_gbs": kv_bytes / (st["p50"] * 1e-3) / 1e9})


def sweep_configs(candidates: list[DecodeConfig], c: Cache, device: str, reps: int
                  ) -> tuple[DecodeConfig | None, dict[str, float], list[dict[str, str]]]:
    """Check each candidate on ``c`` (dense and 1/8 kv), time the checked ones at dense; the fastest."""
    times, excluded = {}, []
    for cfg in candidates:
        try:
            check_context(c, (1 / 8,), cfg)
            samples, _ = _time([lambda cfg=cfg: c.attend(None, cfg)], reps, device)
        except Exception as exc:
            excluded.append({"config": cfg.label(), "error": f"{type(exc).__name__}: {str(exc)[:200]}"})
            print(f"!! left out {cfg.label()}: {excluded[-1]['error']}", file=sys.stderr)
            continue
        times[cfg.label()] = sorted(samples)[len(samples) // 2]
    if not times:
        return None, times, excluded
    print("decode configs at dense: " + ", ".join(f"{lbl} {ms * 1e3:.1f}us" for lbl, ms in
                                                  sorted(times.items(), key=lambda kv: kv[1])), flush=True)
    return DecodeConfig.parse(min(times, key=times.get)), times, excluded


def main(argv: list[str] | None = None) -> int:
    p = attention_parser(__doc__)
    p.add_argument("--contexts", type=int, nargs="+", help=f"default {' '.join(map(str, CONTEXTS))}")
    p.add_argument("--budgets", type=float, nargs="+", help="kept fractions, default 1 1/2 1/4 1/8 1/16")
    p.add_argument("--page-sizes", type=int, nargs="+", help=f"default {' '.join(map(str, PAGE_SIZES))}")
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--no-sweep", action="store_true", help="time the default decode config only")
    args = p.parse_args(argv)
    device = args.device
    cpu = device == "cpu"
    gate = device_gate(device)
    if gate is not None:
        return gate
    heads, head_dim = (CPU["heads"], CPU["head_dim"]) if cpu else (HEADS, HEAD_DIM)
    contexts = tuple(args.contexts or (CPU["contexts"] if cpu else CONTEXTS))
    budgets = tuple(args.budgets or (CPU["budgets"] if cpu else BUDGETS))
    page_sizes = tuple(args.page_sizes or (CPU["page_sizes"] if cpu else PAGE_SIZES))
    reps = min(args.reps, 2) if cpu else args.reps
    results = results_dir(args)
    started = time.time()

    # 1. the decode config: candidates checked against ref, then timed at a dense mid context
    cfg = default_config()
    excluded: list[dict[str, str]] = []
    sweep_times: dict[str, float] = {}
    probe = Cache(32768 if not cpu else contexts[-1], page_sizes[-1], heads, head_dim, device, seed=99)
    if not args.no_sweep:
        cands = list(dict.fromkeys([cfg, *(CPU["sweep"] if cpu else SWEEP)]))
        best, sweep_times, excluded = sweep_configs(cands, probe, device, max(3, reps // 3))
        if best is None:
            print("no decode config matches the reference; nothing recorded", file=sys.stderr)
            return 1
        cfg = best
    print(f"decode config: {cfg.label()} (default {default_config().label()})", flush=True)
    baselines: dict[str, bool] = {}
    notes: list[str] = []
    for impl in ("sdpa_math",) if cpu else ("sdpa_flash", "sdpa_math"):
        gqa, why = probe_sdpa(probe, impl)
        if why:
            notes.append(why)
            print(f"note: {why}", flush=True)
        if gqa is not None:
            baselines[impl] = gqa
    del probe
    baseline = next(iter(baselines), None)

    # 2. correctness of ours at every timed context (first copy), before any timing
    from sparsebench.store.kernel_records import new_kernel_record, write_kernel_record

    checks: dict[str, Any] = {}
    caches: dict[tuple[int, int], list[Cache]] = {}
    for ps in page_sizes:
        for L in contexts:
            n = copies_for(L, heads, head_dim, device)
            caches[(L, ps)] = [Cache(L, ps, heads, head_dim, device, seed=L + ps + i) for i in range(n)]
            try:
                checks[f"L{L}_p{ps}"] = check_context(caches[(L, ps)][0], budgets, cfg)
            except AssertionError as exc:
                print(f"ours does not match the reference at L={L} page={ps}; nothing recorded:\n{exc}",
                      file=sys.stderr)
                return 1
    print(f"correctness vs ref passed at {len(checks)} (context, page) settings ({time.time() - started:.0f}s)",
          flush=True)
    correctness = {"passed": True, "against": "sparsebench.kernels.topk_decode_attn.ref", "dtype": "bfloat16",
                   "tolerance": TOLERANCES["bfloat16"], "checks": checks, "excluded_configs": excluded,
                   "baselines": {k: ("enable_gqa" if g else "expanded kv") for k, g in baselines.items()}}
    ceilings = None
    if not cpu and not args.no_ceilings:
        from sparsebench.measure.ceilings import run_ceilings

        ceilings = run_ceilings()
    rec = new_kernel_record("topk_decode_attn", baseline or "paged_dense", correctness,
                            profile=args.profile or ("cpu" if cpu else None), ceilings=ceilings)
    if cpu:
        rec.notes.append("dry run under the Triton interpreter on CPU: timings are meaningless")
    else:
        rec.hardware["device_name"] = torch.cuda.get_device_name()
    rec.notes += notes
    rec.notes.append(f"B=1, Hq={heads[0]}, Hkv={heads[1]}, D={head_dim}, bf16, one new token; pages shuffled; "
                     f"decode config {cfg.label()} (sweep at dense: {sweep_times}); kv_gbs = K/V bytes the "
                     "case must read (selected pages for topk; + metadata for +select) / time")

    # 3. timing
    table: dict[tuple, float] = {}
    for (L, ps), cs in caches.items():
        kv_full = 2 * heads[1] * L * head_dim * 2
        meta = 2 * heads[1] * cs[0].max_pages * head_dim * 2
        impls: list[tuple[str, float]] = [(b, 1.0) for b in baselines] + [("paged_dense", 1.0)]
        for bud in budgets:
            for per in SELECTIONS:
                impls += [(f"topk[{per}]", bud), (f"topk[{per}]+select", bud), (f"select[{per}]", bud)]
        for impl, bud in impls:
            kk = budget_pages(bud, cs[0].max_pages)
            frac = kk / cs[0].max_pages
            read = {"paged_dense": kv_full}.get(impl, kv_full if impl.startswith("sdpa") else 0.0)
            if impl.startswith("topk"):
                read = kv_full * frac * (heads[0] // heads[1] if "[head]" in impl else 1) + (meta if "select" in impl else 0)
            if impl.startswith("select"):
                read = meta
            calls = calls_for(impl, cs, bud, cfg, baselines.get(impl, True))
            samples, note = _time(calls, reps, device)
            if note:
                rec.notes.append(f"{impl} L={L} page={ps} budget={bud:g}: {note}")
            params = {"context": L, "page_size": ps, "budget": bud, "pages": kk}
            c = _case(impl, params, samples, read)
            rec.cases.append(c)
            table[(L, ps, impl, bud)] = c.p50_ms
            if baseline:
                c.extra["speedup_over_" + baseline] = table[(L, ps, baseline, 1.0)] / c.p50_ms
            print(f"L={L:6d} page={ps:3d} {impl:20s} budget={bud:6.4f} ({kk:5d} pages) {c.p50_ms * 1e3:9.1f} us"
                  + (f"  {table[(L, ps, baseline, 1.0)] / c.p50_ms:6.2f}x over {baseline}" if baseline else ""),
                  flush=True)
            if baseline and not impl.startswith(("sdpa", "select")):
                for over in (*baselines, "paged_dense"):
                    if (L, ps, over, 1.0) in table:
                        rec.ratios.append({"context": L, "page_size": ps, "budget": bud, "impl": impl, "over": over,
                                           "speedup": table[(L, ps, over, 1.0)] / c.p50_ms})
        del cs
    caches.clear()
    if not cpu:
        torch.cuda.empty_cache()

    # 4. table: us excl./incl. selection and the speed-up over the baseline
    for per in SELECTIONS:
        head = ["context", "page", *[f"{b} us" for b in baselines], "paged_dense us",
                *[f"b={b:g} excl / incl" for b in budgets]]
        print(f"\nselection per {per} (speed-up over {baseline}):\n| " + " | ".join(head) + " |\n|" + "---|" * len(head))
        for ps in page_sizes:
            for L in contexts:
                base = table.get((L, ps, baseline, 1.0)) if baseline else None
                cells = [str(L), str(ps)] + [f"{table[(L, ps, b, 1.0)] * 1e3:.1f}" for b in baselines]
                cells.append(f"{table[(L, ps, 'paged_dense', 1.0)] * 1e3:.1f}")
                for b in budgets:
                    ex, inc = table[(L, ps, f"topk[{per}]", b)], table[(L, ps, f"topk[{per}]+select", b)]
                    cells.append(f"{ex * 1e3:.1f} / {inc * 1e3:.1f}"
                                 + (f" ({base / ex:.2f}x / {base / inc:.2f}x)" if base else ""))
                print("| " + " | ".join(cells) + " |")
    if cfg != default_config():
        print(f"\nto make the winner the default: export SPARSEBENCH_DECODE_CONFIG=\"{cfg.label()}\"")
    print(f"total {time.time() - started:.0f}s")
    if results:
        print(f"wrote {write_kernel_record(rec, results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
