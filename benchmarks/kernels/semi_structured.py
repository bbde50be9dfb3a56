"""2:4 sparse vs dense bf16 linear layers at Llama-3-8B shapes, over M (GPU).

python benchmarks/kernels/semi_structured.py --results results --profile h100

Checks every path against ``kernels/semi_structured/ref.py`` first (records nothing if one
fails), then times per shape and M, with distinct operand copies in one CUDA graph:
dense cuBLAS (``F.linear``), torch's ``to_sparse_semi_structured`` path, ``_cslt_sparse_mm``
with fused transpose and alg 0, and the configuration our search picks (layout x fused
transpose x alg id x split-K). Writes one record under RESULTS/kernels/.
"""

from __future__ import annotations

import sys
from functools import partial

import torch
from common import SHAPES, check, finish, parser, per_copy, shapes, start, time_case

from sparsebench.kernels.semi_structured import cusparselt, ref

MS = (1, 16, 64, 256, 1024, 2048, 4096, 8192)
IMPLS = ("torch_to_sparse_semi_structured", "cslt_alg0_fused_transpose", "cslt_searched")


def two_four(n: int, k: int, seed: int) -> torch.Tensor:
    g = torch.Generator(device="cuda").manual_seed(seed)
    w = torch.randn(n, k, device="cuda", generator=g, dtype=torch.bfloat16)
    keep = torch.topk(w.abs().reshape(n, k // 4, 4), 2, dim=-1).indices
    mask = torch.zeros(n, k // 4, 4, device="cuda", dtype=torch.bool).scatter_(-1, keep, True)
    return w * mask.reshape(n, k)


def correctness_first() -> dict:
    out: dict = {"against": "kernels/semi_structured/ref.py (fp32 accumulation)", "dtype": "bfloat16"}
    for name, n, k in SHAPES:
        w = two_four(n, k, seed=1)
        packed = cusparselt.compress(w)
        sparse_t = torch.sparse.to_sparse_semi_structured(w)
        for m in (1, 64, 2048):
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            want = ref.semi_structured_linear(x, w)
            try:  # torch's own path is a comparison, not ours: its failure is recorded, not fatal
                check(f"{name} m={m} torch_default", torch.nn.functional.linear(x, sparse_t), want, out)
            except Exception as exc:
                out.setdefault("torch_default_failed", []).append(f"{name} m={m}: {type(exc).__name__}: {exc}")
            for cfg in (cusparselt.DEFAULT, cusparselt.TORCH_DEFAULT, cusparselt.CsltConfig(False, True, 0)):
                check(f"{name} m={m} {cfg.describe()}", cusparselt.matmul(x, packed, cfg), want, out)
    out["passed"] = True
    return out


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0], MS)
    args = p.parse_args(argv)
    log: list[str] = []
    if (rec := start("semi_structured", correctness_first, args)) is None:
        return 1
    for name, n, k, copies in shapes(args):
        ws = [two_four(n, k, seed=i) for i in range(copies)]
        packed = [cusparselt.compress(w) for w in ws]
        torch_sparse = [torch.sparse.to_sparse_semi_structured(w) for w in ws]
        for m in args.ms:
            xs = [torch.randn(m, k, device="cuda", dtype=torch.bfloat16) for _ in range(copies)]
            params = {"shape": name, "m": m, "n": n, "k": k, "copies": copies}
            flops = 2.0 * m * n * k
            dense = time_case(rec, "dense_cublas", params,
                              per_copy(torch.nn.functional.linear, xs, ws), args.reps)
            rec.cases[-1].extra["tflops"] = flops / dense / 1e9
            try:
                time_case(rec, IMPLS[0], params, per_copy(torch.nn.functional.linear, xs, torch_sparse), args.reps)
            except Exception as exc:
                rec.notes.append(f"{IMPLS[0]} {name} M={m} not timed: {type(exc).__name__}: {exc}")
                torch.cuda.synchronize()
            time_case(rec, IMPLS[1], params,
                      per_copy(cusparselt.matmul, xs, packed), args.reps)
            cfg, _ = cusparselt.search(packed[0], n, k, m, torch.bfloat16, log)
            best = time_case(rec, IMPLS[2], params,
                             per_copy(partial(cusparselt.matmul, cfg=cfg), xs, packed),
                             args.reps, extra=cfg.as_numbers())
            rec.cases[-1].extra["tflops"] = flops / best / 1e9
            print(f"{name:8s} M={m:5d} dense {dense:.4f} ms  searched {best:.4f} ms  {dense / best:.2f}x  "
                  f"[{cfg.describe()}]", flush=True)
            del xs
        del ws, packed, torch_sparse
        torch.cuda.empty_cache()
    return finish(rec, ("shape", "m"), IMPLS, args.results, log)


if __name__ == "__main__":
    sys.exit(main())
