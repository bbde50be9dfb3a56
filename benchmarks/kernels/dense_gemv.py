"""Dense bf16 GEMV (one row, decode) vs cuBLAS and inductor at the Llama-3.1-8B decode shapes (GPU).

    python benchmarks/kernels/dense_gemv.py --results results
    TRITON_INTERPRET=1 python benchmarks/kernels/dense_gemv.py --device cpu   # dry run, tiny shapes

Per shape (the fused q/k/v and gate/up projections a decode step runs, o_proj, down_proj,
the LM head): ``dense_cublas`` (``F.linear``, what an eager ``nn.Linear`` runs),
``inductor_cdt`` (``torch.compile`` of ``F.linear`` with coordinate-descent tuning, which
turns a one-row matmul into a tuned Triton reduction: the suite's ``compile-tuned`` decode
path), and ``triton[<config>]`` for each config of ``SWEEP`` (kernels/dense_gemv). Each is
timed on distinct weight copies (together past the L2) in one CUDA graph, and reported
with the GB/s of weight it streams. Every config is checked against ``ref`` on the device
first; one that fails is left out and listed.

The end: the config whose time summed over one decode step's calls (32 layers of each
projection, one LM head) is least, as the ``SPARSEBENCH_DENSE_GEMV_CONFIG`` value that makes
it the default (``--best-to FILE`` writes it there for a later step).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.nn.functional as F
from common import check, device_gate, finish, per_copy, start, time_case

from sparsebench.kernels.dense_gemv import dense_gemv_ref
from sparsebench.kernels.dense_gemv.config import ENV, DenseGemvConfig
from sparsebench.kernels.dense_gemv.triton import dense_gemv_triton

# (name, N, K, calls per decode step of an 8B Llama)
SHAPES = (("qkv", 6144, 4096, 32), ("o", 4096, 4096, 32), ("gate_up", 28672, 4096, 32),
          ("down", 4096, 14336, 32), ("lm_head", 128256, 4096, 1))
TINY = (("tiny_a", 37, 53, 1), ("tiny_b", 300, 520, 1))
SWEEP = tuple(DenseGemvConfig.parse(s) for s in (
    "bn=8,bk=512,w=4,s=3", "bn=4,bk=512,w=4,s=3", "bn=16,bk=256,w=4,s=3", "bn=8,bk=256,w=4,s=4",
    "bn=8,bk=1024,w=8,s=3", "bn=16,bk=512,w=8,s=3", "bn=4,bk=1024,w=4,s=2", "bn=8,bk=512,w=4,s=1",
    "bn=8,bk=512,w=8,s=4", "bn=2,bk=1024,w=4,s=3", "bn=16,bk=128,w=4,s=4", "bn=32,bk=128,w=4,s=3",
    "bn=4,bk=256,w=2,s=4", "bn=8,bk=256,w=2,s=3",
))
CPU_SWEEP = (DenseGemvConfig.parse("bn=4,bk=32,w=4,s=1"), DenseGemvConfig.parse("bn=8,bk=64,w=4,s=2"))


def correctness(shapes, sweep, device: str) -> tuple[dict, list[DenseGemvConfig], list[str]]:
    out: dict = {"against": "kernels/dense_gemv/ref.py (fp32 accumulation)", "dtype": "bfloat16", "checks": {}}
    kept, dropped = [], []
    for cfg in sweep:
        try:
            for name, n, k, _ in shapes:
                g = torch.Generator(device=device).manual_seed(n + k)
                w = torch.randn(n, k, device=device, dtype=torch.bfloat16, generator=g)
                x = torch.randn(1, k, device=device, dtype=torch.bfloat16, generator=g)
                check(f"{name} {cfg.label()}", dense_gemv_triton(x, w, config=cfg), dense_gemv_ref(x, w), out)
            kept.append(cfg)
        except Exception as exc:  # a config that does not compile or match is left out, not fatal
            dropped.append(f"{cfg.label()}: {type(exc).__name__}: {str(exc)[:200]}")
    if not kept:
        raise AssertionError("no dense GEMV config matches ref: " + "; ".join(dropped))
    out["passed"] = True
    return out, kept, dropped


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--results", default="results")
    p.add_argument("--profile", default="auto")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--no-inductor", action="store_true", help="skip the torch.compile case")
    p.add_argument("--best-to", help="write the best config's label to this file")
    args = p.parse_args(argv)
    if (code := device_gate(args.device)) is not None:
        return code
    cpu = args.device == "cpu"
    shapes, sweep = (TINY, CPU_SWEEP) if cpu else (SHAPES, SWEEP)
    dropped: list[str] = []

    def checked() -> dict:
        nonlocal sweep, dropped
        out, sweep, dropped = correctness(shapes, sweep, args.device)
        return out

    if cpu:
        checked()
        print(f"dry run: {len(sweep)} configs match ref on {len(shapes)} tiny shapes; nothing timed on a CPU")
        return 0
    if (rec := start("dense_gemv", checked, args)) is None:
        return 1
    from sparsebench.measure.kernelbench import copies_for

    impls = ["inductor_cdt"] * (not args.no_inductor) + [f"triton[{c.label()}]" for c in sweep]
    step_ms = {c.label(): 0.0 for c in sweep}
    cdt = torch.compile(F.linear, dynamic=False, options={"coordinate_descent_tuning": True})
    for name, n, k, calls in shapes:
        copies = copies_for(n * k * 2)
        ws = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) for _ in range(copies)]
        xs = [torch.randn(1, k, device="cuda", dtype=torch.bfloat16) for _ in range(copies)]
        params = {"shape": name, "n": n, "k": k, "copies": copies}
        gb = n * k * 2 / 1e9

        def timed(impl: str, fn, params=params, xs=xs, ws=ws, gb=gb) -> float:
            ms = time_case(rec, impl, params, per_copy(fn, xs, ws), args.reps)
            rec.cases[-1].extra["weight_gbs"] = gb / (ms * 1e-3)
            return ms

        t0 = time.time()
        base = timed("dense_cublas", F.linear)
        line = [f"{name:8s} cuBLAS {base * 1e3:7.1f} us {gb / base * 1e3:6.0f} GB/s"]
        if not args.no_inductor:
            ms = timed("inductor_cdt", cdt)
            line.append(f"inductor {ms * 1e3:7.1f} us ({base / ms:.2f}x)")
        best = None
        for cfg in sweep:
            ms = timed(f"triton[{cfg.label()}]", lambda x, w, c=cfg: dense_gemv_triton(x, w, config=c))
            step_ms[cfg.label()] += calls * ms
            if best is None or ms < best[0]:
                best = (ms, cfg)
        line.append(f"best triton {best[0] * 1e3:7.1f} us {gb / best[0] * 1e3:6.0f} GB/s ({base / best[0]:.2f}x) "
                    f"[{best[1].label()}]  ({time.time() - t0:.0f} s)")
        print("  ".join(line), flush=True)
        del ws, xs
        torch.cuda.empty_cache()
    winner = min(step_ms, key=step_ms.__getitem__)
    rec.notes.append(f"decode-step weighted best (32 x each projection + LM head): {winner} "
                     f"({step_ms[winner]:.3f} ms of GEMV per step)")
    rec.notes.extend(f"left out: {d}" for d in dropped)
    print(f"\nbest over one decode step: {winner} ({step_ms[winner]:.3f} ms of GEMVs per step)\n"
          f"  export {ENV}=\"{winner}\"")
    if args.best_to:
        with open(args.best_to, "w") as f:
            f.write(winner + "\n")
    return finish(rec, ("shape",), impls, args.results, [])


if __name__ == "__main__":
    sys.exit(main())
