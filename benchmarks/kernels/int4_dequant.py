"""The int4 prefill route's first half on its own: decoding packed codes to a bf16 weight.

    python benchmarks/kernels/int4_dequant.py --results results
    TRITON_INTERPRET=1 python benchmarks/kernels/int4_dequant.py --device cpu   # dry run, tiny shapes

At prefill sizes ours is "dequantize, then cuBLAS", so the decode's time is what it loses to
bf16 cuBLAS. This times every decode tile the tuner may pick (``kernels/int4_matmul/triton.py``
``candidates``) alone, beside ``torch.Tensor.fill_`` writing the same bf16 bytes (the write
stream it cannot beat) and ``copy_`` of a bf16 weight (read + write of the dense bytes), over
distinct weight copies past the L2, in a CUDA graph (``time_calls``). Each decode is checked
bit for bit against the join-tree kernel and close to ``ref`` first. ``extra.gbs`` counts the
bytes each call moves (codes + scales + offsets read, bf16 weight written). One kernel record,
baseline ``bf16_fill``.

``--m`` (default 2048; 0 skips) then asks whether the route's two halves add up: at that many
tokens it times ``F.linear`` on a randn bf16 weight (the int4 benchmark's baseline), the
route's own ``torch.mm(out=)`` on that weight and on the decoded weights (same bytes, other
values: tensor-core power, and so clocks, depend on the operands' bits), the fastest decode
followed by ``F.linear`` and by that ``mm``, and the tuned ``int4_matmul``. Those cases carry ``params.m`` and
stage names (``route:*``).
"""

from __future__ import annotations

import argparse
import sys

import torch

from sparsebench.kernels.int4_matmul import ref
from sparsebench.kernels.int4_matmul import triton as fast
from sparsebench.kernels.tolerances import assert_close
from sparsebench.measure.kernelbench import copies_for, summary, time_calls_on
from sparsebench.store.kernel_records import KernelCase, new_kernel_record, write_kernel_record

SHAPES = {"q_o_proj": (4096, 4096), "gate_up_proj": (14336, 4096), "down_proj": (4096, 14336)}
TINY = {"tiny_a": (100, 512), "tiny_b": (37, 384)}
GROUP = 128


def decode_plans(n: int, k: int, device: str) -> list[fast.Plan]:
    """The dequantize plans the tuner would time at prefill (one serial chunk each)."""
    if device == "cpu":
        return [fast.Plan("dequant", bn=16, bk=64), fast.Plan("dequant", bn=16, bk=64, wide=True),
                fast.Plan("dequant", bn=16, bk=256, wide=True)]
    return [p for p in fast.candidates(2048, n, k, GROUP, torch.bfloat16, 132) if p.variant == "dequant" and p.split == 1]


def random_layer(n: int, k: int, seed: int, device: str) -> tuple[torch.Tensor, ...]:
    g = torch.Generator(device=device).manual_seed(seed)
    packed = torch.randint(0, 256, (n, k // 2), generator=g, device=device, dtype=torch.uint8)
    scales = (torch.rand(n, k // GROUP, generator=g, device=device) * 0.01 + 0.001).half()
    offsets = (-8 * scales.float()).half()
    return packed, scales, offsets


def route_stage(rec, name: str, n: int, k: int, kp: int, plan: fast.Plan, layers: list, q32s: list,
                outs: list, dense: list, m: int, reps: int, device: str) -> None:
    """Time the dequant+cuBLAS route at ``m`` tokens by halves and whole (see the module doc)."""
    import torch.nn.functional as F

    from sparsebench.kernels.int4_matmul import int4_matmul

    x = torch.randn(m, kp, device=device, dtype=torch.bfloat16)
    ys = [torch.empty(m, n, device=device, dtype=torch.bfloat16) for _ in outs]

    def decode(q, s, f, o):
        fast._dequant_words(q, s, f, GROUP, kp, torch.bfloat16, plan.bn, plan.bk, out=o, warps=plan.warps, wide=plan.wide)

    def decode_mm(q, s, f, o, y):
        decode(q, s, f, o)
        torch.mm(x, o.t(), out=y)

    def decode_linear(q, s, f, o):
        decode(q, s, f, o)
        return F.linear(x, o)

    for (_, s, f), q, o in zip(layers, q32s, outs, strict=True):  # the decoded weights the mm stage reads
        decode(q, s, f, o)

    int4_matmul(x, *layers[0], GROUP, impl="triton")  # tune this M bucket outside the timing
    stages = {
        "route:linear_randn": [lambda d=d: F.linear(x, d) for d in dense],
        "route:mm_randn": [lambda d=d, y=y: torch.mm(x, d.t(), out=y) for d, y in zip(dense, ys, strict=True)],
        "route:mm_decoded": [lambda o=o, y=y: torch.mm(x, o.t(), out=y) for o, y in zip(outs, ys, strict=True)],
        "route:decode+linear": [lambda q=q, s=s, f=f, o=o: decode_linear(q, s, f, o)
                                for q, (_, s, f), o in zip(q32s, layers, outs, strict=True)],
        "route:decode+mm": [lambda q=q, s=s, f=f, o=o, y=y: decode_mm(q, s, f, o, y)
                            for q, (_, s, f), o, y in zip(q32s, layers, outs, ys, strict=True)],
        "route:int4_matmul": [lambda t=t: int4_matmul(x, *t, GROUP, impl="triton") for t in layers],
    }
    line = [f"{name:13s} M={m} decode {plan.label()}"]
    for impl, calls in stages.items():
        st = summary(samples := time_calls_on(device, calls, reps))
        rec.cases.append(KernelCase(impl=impl, params={"shape": name, "n": n, "k": k, "group": GROUP, "m": m,
                                                         "decode_plan": plan.label()},
                                    samples_ms=[round(v, 5) for v in samples], p50_ms=st["p50"], p90_ms=st["p90"]))
        line.append(f"{impl}={st['p50'] * 1e3:.1f}us")
    print("\n  ".join(line), flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--results", default=None, help="results directory (default: results on cuda, none on cpu)")
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--m", type=int, default=2048, help="tokens for the route stage (0: skip it)")
    args = p.parse_args(argv)
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        print("skipped: no CUDA device (this benchmark measures GPU kernels; --device cpu is a dry run)")
        return 0
    if device == "cpu" and not fast.INTERPRET:
        print("error: --device cpu needs TRITON_INTERPRET=1", file=sys.stderr)
        return 2
    shapes = SHAPES if device == "cuda" else TINY
    reps = args.reps if device == "cuda" else 1
    results = args.results if args.results is not None else ("results" if device == "cuda" else None)
    rec = new_kernel_record("int4_dequant", "bf16_fill", {"group": GROUP, "checked": [], "passed": False},
                            profile=None if device == "cuda" else "cpu")
    rec.notes.append(f"group size {GROUP}; random codes; the decode of ours_int4's dequant+cuBLAS route, alone")
    if device == "cpu":
        rec.notes.append("dry run under the Triton interpreter on CPU: timings are meaningless")
    for name, (n, k) in shapes.items():
        q32s, kp = [], k
        layers = [random_layer(n, k, seed, device) for seed in range(copies_for(n * k * 2) if device == "cuda" else 2)]
        for packed, _, _ in layers:
            q32, kp = fast.as_words(packed, k)
            q32s.append(q32)
        packed, scales, offsets = layers[0]
        tree = fast._dequant_words(q32s[0], scales, offsets, GROUP, kp, torch.bfloat16, 32, 128 if device == "cuda" else 64)
        assert_close(tree, ref.dequantize_int4(packed, scales, offsets, GROUP).to(torch.bfloat16))
        outs = [torch.empty(n, kp, device=device, dtype=torch.bfloat16) for _ in layers]
        dense = [torch.randn(n, k, device=device, dtype=torch.bfloat16) for _ in layers]
        moved = n * k // 2 + 2 * scales.numel() * scales.element_size() + n * k * 2
        impls = {"bf16_fill": ([lambda o=o: o.fill_(1.0) for o in outs], n * k * 2),
                 "bf16_copy": ([lambda o=o, d=d: o.copy_(d) for o, d in zip(outs, dense, strict=True)], n * k * 4)}
        for plan in decode_plans(n, k, device):
            got = fast._dequant_words(q32s[0], scales, offsets, GROUP, kp, torch.bfloat16, plan.bn, plan.bk,
                                      warps=plan.warps, wide=plan.wide)
            assert torch.equal(got, tree), plan.label()
            impls[plan.label().removesuffix("+cublas")] = ([
                lambda q=q, o=o, s=s, f=f, plan=plan, kp=kp: fast._dequant_words(
                    q, s, f, GROUP, kp, torch.bfloat16, plan.bn, plan.bk, out=o, warps=plan.warps, wide=plan.wide)
                for q, o, (_, s, f) in zip(q32s, outs, layers, strict=True)], moved)
        rec.correctness["checked"].append({"shape": name, "plans": len(impls) - 2, "bitwise_equal": True})
        line = [f"{name:13s}"]
        for impl, (calls, nbytes) in impls.items():
            st = summary(samples := time_calls_on(device, calls, reps))
            rec.cases.append(KernelCase(impl=impl, params={"shape": name, "n": n, "k": k, "group": GROUP},
                                        samples_ms=[round(s, 5) for s in samples], p50_ms=st["p50"], p90_ms=st["p90"],
                                        extra={"gbs": nbytes / (st["p50"] * 1e-3) / 1e9}))
            line.append(f"{impl}={st['p50'] * 1e3:.1f}us ({nbytes / (st['p50'] * 1e-3) / 1e12:.2f} TB/s)")
        print("\n  ".join(line), flush=True)
        if args.m > 0:
            decodes = {c.impl: c.p50_ms for c in rec.cases if c.params["shape"] == name and c.impl.startswith("dequant")}
            best = next(p for p in decode_plans(n, k, device) if p.label().removesuffix("+cublas") == min(decodes, key=decodes.get))
            route_stage(rec, name, n, k, kp, best, layers, q32s, outs, dense, args.m, reps, device)
        del layers, outs, dense, q32s
        if device == "cuda":
            torch.cuda.empty_cache()
    rec.correctness["passed"] = True
    rec.add_ratios(("shape",))
    if results:
        print(f"wrote {write_kernel_record(rec, results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
