"""Unstructured sparse (bitmask-tile SpMM, Triton and CUDA) vs dense bf16 at decode-sized M (GPU).

python benchmarks/kernels/spmm.py --results results --profile h100

Checks the Triton kernel and the on-device unpack against ``kernels/spmm/ref.py`` first
(records nothing if either fails), then times dense cuBLAS (``F.linear``) and the SpMM
(launch configuration tuned per shape and M) at Llama-3-8B shapes, M in 1..16, sparsity
50/70/80%, with distinct operand copies in one CUDA graph; for M <= 8 also the CUDA SpMM
(``kernels/spmm/spmm_decode.cu``) in each of ``--cuda-configs`` (checked against the reference
first as well); and, at 50%, the prefill path (unpack + cuBLAS) at large M. Writes one record
under RESULTS/kernels/.
"""

from __future__ import annotations

import sys
from functools import partial

import torch
from common import SHAPES, check, finish, parser, per_copy, shapes, start, time_case

from sparsebench.kernels import cuda_rtc
from sparsebench.kernels.spmm import cuda, pack, ref, spmm, tune
from sparsebench.kernels.spmm import triton as tri

MS = (1, 2, 4, 8, 16)
SPARSITIES = (0.5, 0.7, 0.8)
LARGE_MS = (512, 2048)
IMPLS = ("triton_spmm", "unpack_cublas")
CUDA_CONFIGS = ("r=16,w=8,k=1,d=8", "r=16,w=4,k=4,d=4", "r=16,w=8,k=4,d=4", "r=32,w=8,k=4,d=3", "r=8,w=8,k=2,d=6")


def cuda_impl(cfg: cuda.Config) -> str:
    return "cuda_spmm_" + cfg.label().replace(",", "").replace("=", "")


def pruned(n: int, k: int, sparsity: float, seed: int) -> torch.Tensor:
    """Random bf16 weight with the ``sparsity`` smallest |w| of each row zeroed (like magnitude)."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    w = torch.randn(n, k, device="cuda", generator=g, dtype=torch.bfloat16)
    drop = torch.topk(w.abs(), int(k * sparsity), dim=1, largest=False).indices
    return w.scatter(1, drop, 0.0)


def correctness_first(cuda_configs: tuple[cuda.Config, ...] = ()) -> dict:
    out: dict = {"against": "kernels/spmm/ref.py (unpack + fp32 accumulation)", "dtype": "bfloat16"}
    for name, n, k in SHAPES:
        p = pack(pruned(n, k, 0.5, seed=1))
        w = ref.unpack(p)
        if not torch.equal(tri.unpack(p), w):
            raise AssertionError(f"{name}: Triton unpack differs from ref.unpack")
        for m in (1, 3, 16):
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            want = ref.spmm(x, p)
            for split in (1, 4):
                check(f"{name} m={m} split_k={split}", spmm(x, p, impl="triton", split_k=split), want, out)
            for cfg in cuda_configs if m <= cuda.MAX_ROWS else ():
                check(f"{name} m={m} cuda {cfg.label()}", cuda.spmm_cuda(x, p, config=cfg), want, out)
    out["passed"] = True
    return out


def unpack_linear(x: torch.Tensor, packed) -> torch.Tensor:
    """The prefill path of SparseLinear: decode the weight on the device, then cuBLAS."""
    return torch.nn.functional.linear(x, tri.unpack(packed))


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0], MS)
    p.add_argument("--sparsities", type=float, nargs="+", default=list(SPARSITIES))
    p.add_argument("--large-ms", type=int, nargs="*", default=list(LARGE_MS))
    p.add_argument("--cuda-configs", nargs="*", default=list(CUDA_CONFIGS),
                   help="CUDA SpMM configurations to time at M <= 8 (none: Triton only)")
    args = p.parse_args(argv)
    log: list[str] = []
    try:
        configs = tuple(cuda.Config.parse(c) for c in args.cuda_configs)
    except ValueError as exc:
        p.error(str(exc))  # usage and the message, exit 2
    if configs and not cuda_rtc.available()[0]:
        log.append(f"CUDA SpMM not timed: {cuda_rtc.available()[1]}")
        configs = ()
    if (rec := start("spmm", partial(correctness_first, configs), args)) is None:
        return 1
    for name, n, k, copies in shapes(args):
        for sparsity in args.sparsities:
            ws = [pruned(n, k, sparsity, seed=i) for i in range(copies)]
            packs = [pack(w) for w in ws]
            ratio = packs[0].nbytes / (n * k * 2)
            for m in [*args.ms, *(args.large_ms if sparsity == 0.5 else [])]:
                xs = [torch.randn(m, k, device="cuda", dtype=torch.bfloat16) for _ in range(copies)]
                params = {"shape": name, "m": m, "n": n, "k": k, "sparsity": sparsity, "copies": copies}
                dense = time_case(rec, "dense_cublas", params,
                                  per_copy(torch.nn.functional.linear, xs, ws),
                                  args.reps)
                rec.cases[-1].extra["gbs"] = n * k * 2 / 1e6 / dense
                if m <= 16:
                    launch = tune(packs[0], m, log)
                    t = time_case(rec, IMPLS[0], params,
                                  per_copy(partial(spmm, impl="triton", **launch), xs, packs),
                                  args.reps, extra={"bytes_ratio": ratio, **{a: float(b) for a, b in launch.items()}})
                else:
                    t = time_case(rec, IMPLS[1], params,
                                  per_copy(unpack_linear, xs, packs),
                                  args.reps, extra={"bytes_ratio": ratio})
                rec.cases[-1].extra["gbs"] = packs[0].nbytes / 1e6 / t
                print(f"{name:8s} sparsity {sparsity:.0%} M={m:5d} dense {dense:.4f} ms  {rec.cases[-1].impl} "
                      f"{t:.4f} ms  {dense / t:.2f}x  (packed/dense bytes {ratio:.3f})", flush=True)
                for cfg in configs if m <= cuda.MAX_ROWS else ():
                    calls = [partial(cuda.spmm_cuda, x, pk, config=cfg, bounds=cuda.chunk_bounds(pk, cfg.rows))
                             for x, pk in zip(xs, packs, strict=True)]
                    t = time_case(rec, cuda_impl(cfg), params, calls, args.reps, extra={"bytes_ratio": ratio})
                    rec.cases[-1].extra["gbs"] = packs[0].nbytes / 1e6 / t
                    print(f"{'':8s} {cuda_impl(cfg)} {t:.4f} ms  {dense / t:.2f}x", flush=True)
                del xs
            del ws, packs
            torch.cuda.empty_cache()
    return finish(rec, ("shape", "sparsity", "m"), (*IMPLS, *map(cuda_impl, configs)), args.results, log)


if __name__ == "__main__":
    sys.exit(main())
