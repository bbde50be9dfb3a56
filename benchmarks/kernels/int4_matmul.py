"""int4 weight-only matmul on the GPU: our Triton kernel vs bf16 cuBLAS vs torch's int4pack.

    python benchmarks/kernels/int4_matmul.py --results results

Llama-3-8B projection shapes, M (tokens) from 1 to 4096, group size 128. Every
implementation is first checked against ``kernels/int4_matmul/ref.py`` on the GPU with the
shared tolerance table; one that fails is reported and not timed, and if ours fails nothing
is recorded. Timing: ``sparsebench.measure.kernelbench.time_calls`` (distinct operand copies
per call so the L2 never holds the weights, calls captured in a CUDA graph, CUDA events).
Writes one kernel record under ``results/kernels/``.
"""

from __future__ import annotations

import argparse
import sys
import traceback

import torch
import torch.nn.functional as F

from sparsebench.kernels.int4_matmul import int4_matmul, ref
from sparsebench.kernels.tolerances import assert_close
from sparsebench.measure.ceilings import measure_ceilings
from sparsebench.measure.kernelbench import copies_for, summary, time_calls
from sparsebench.store.kernel_records import KernelCase, new_kernel_record, write_kernel_record

SHAPES = {  # name: (N, K) of y = x W^T, Llama-3-8B
    "q_o_proj": (4096, 4096),
    "k_v_proj": (1024, 4096),
    "gate_up_proj": (14336, 4096),
    "down_proj": (4096, 14336),
}
MS = (1, 2, 4, 8, 16, 32, 64, 256, 1024, 2048, 4096)
GROUP = 128


def random_int4(n: int, k: int, group: int, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator(device="cuda").manual_seed(seed)
    q = torch.randint(0, 16, (n, k), generator=g, device="cuda", dtype=torch.uint8)
    packed = (q[:, 0::2] | (q[:, 1::2] << 4)).contiguous()
    scales = (torch.rand(n, k // group, generator=g, device="cuda") * 0.01 + 0.001).half()
    offsets = (-8 * scales.float()).half()
    return q, packed, scales, offsets


def to_torch_int4pack(q: torch.Tensor, scales: torch.Tensor, offsets: torch.Tensor, inner_k_tiles: int = 8):
    """torch's tinygemm layout: uint8 [N, K/2] with the even column in the HIGH nibble, and
    [K/G, N, 2] (scale, zero) in bf16 with w = (q - 8) * scale + zero."""
    u8 = ((q[:, 0::2] << 4) | q[:, 1::2]).contiguous()
    packed = torch._convert_weight_to_int4pack(u8, inner_k_tiles)
    zero = offsets.float() + 8 * scales.float()
    sz = torch.stack([scales.float().t(), zero.t()], dim=-1).to(torch.bfloat16).contiguous()
    return packed, sz


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default="results")
    p.add_argument("--ms", type=int, nargs="+", default=list(MS))
    p.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    p.add_argument("--reps", type=int, default=30)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("skipped: no CUDA device (this benchmark measures GPU kernels)")
        return 0
    torch.manual_seed(0)
    # 1. correctness on the GPU, before any timing
    correctness: dict[str, object] = {"group": GROUP, "checked": []}
    torch_ok = True
    for name in args.shapes:
        n, k = SHAPES[name]
        q, packed, scales, offsets = random_int4(n, k, GROUP, seed=1)
        for m in (1, 7, 300):
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            want = ref.int4_matmul(x, packed, scales, offsets, GROUP)
            got = int4_matmul(x, packed, scales, offsets, GROUP, impl="triton")
            err = float((got.float() - want.float()).abs().max())
            assert_close(got, want)  # raises: nothing recorded
            entry = {"shape": name, "m": m, "triton_max_abs_err": err}
            try:
                tp, sz = to_torch_int4pack(q, scales, offsets)
                got_t = torch._weight_int4pack_mm(x, tp, GROUP, sz)
                entry["torch_int4pack_max_abs_err"] = float((got_t.float() - want.float()).abs().max())
                assert_close(got_t, want)
            except Exception as exc:  # torch's path is a comparison, not ours: report and skip it
                torch_ok = False
                entry["torch_int4pack_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
            correctness["checked"].append(entry)
    correctness["passed"] = True
    correctness["torch_int4pack_passed"] = torch_ok
    print("correctness:", correctness)
    ceilings = measure_ceilings()
    rec = new_kernel_record("int4_matmul", "bf16_cublas", correctness, ceilings=ceilings)
    rec.notes.append(f"group size {GROUP}; weights random codes; bf16 activations; M = tokens")
    # 2. timing
    for name in args.shapes:
        n, k = SHAPES[name]
        bf16_copies = copies_for(n * k * 2)
        int4_copies = copies_for(n * k // 2)
        ws = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) for _ in range(bf16_copies)]
        qs = [random_int4(n, k, GROUP, seed=10 + i) for i in range(int4_copies)]
        tps = [to_torch_int4pack(q, s, o) for q, _, s, o in qs] if torch_ok else []
        for m in args.ms:
            xs = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            impls = {
                "bf16_cublas": [lambda w=w, xs=xs: F.linear(xs, w) for w in ws],
                "triton_int4": [lambda t=t, xs=xs: int4_matmul(xs, t[1], t[2], t[3], GROUP, impl="triton") for t in qs],
            }
            if tps:
                impls["torch_int4pack"] = [lambda t=t, xs=xs: torch._weight_int4pack_mm(xs, t[0], GROUP, t[1]) for t in tps]
            line = [f"{name:13s} M={m:5d}"]
            for impl, calls in impls.items():
                try:
                    samples = time_calls(calls, reps=args.reps)
                except Exception:
                    traceback.print_exc()
                    continue
                st = summary(samples)
                wbytes = n * k * (2 if impl == "bf16_cublas" else 0.5)
                rec.cases.append(KernelCase(
                    impl=impl, params={"shape": name, "n": n, "k": k, "m": m, "group": GROUP},
                    samples_ms=[round(s, 5) for s in samples], p50_ms=st["p50"], p90_ms=st["p90"],
                    extra={"weight_gbs": wbytes / (st["p50"] * 1e-3) / 1e9,
                           "tflops": 2 * m * n * k / (st["p50"] * 1e-3) / 1e12}))
                line.append(f"{impl}={st['p50'] * 1e3:8.1f}us")
            print("  ".join(line), flush=True)
        del ws, qs, tps
        torch.cuda.empty_cache()
    rec.add_ratios(("shape", "m"))
    print("\nspeed-up over bf16 cuBLAS (p50 / p50):")
    for r in rec.ratios:
        print(f"  {r['shape']:13s} M={r['m']:5d} {r['impl']:15s} {r['speedup']:.2f}x")
    path = write_kernel_record(rec, args.results)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
