"""2:4 linear layers through cuSPARSELt (``torch._cslt_compress`` / ``torch._cslt_sparse_mm``).

cuSPARSELt multiplies a sparse A by a dense B. A linear layer ``y = x W^T`` with the 2:4
weight ``W [N, K]`` is computed as ``(W x^T)^T``: A = W, B = x^T ``[K, M]``. Four things
decide the speed, and torch's ``to_sparse_semi_structured`` fixes all of them:

- the layout of B: ``x.t()`` is a free column-major view (cuSPARSELt then reads B as
  transposed), ``x.t().contiguous()`` a row-major copy;
- ``transpose_result``: write C column-major, so that ``C^T = y [M, N]`` comes out
  contiguous with no extra transpose kernel;
- the algorithm id (tile shapes and schedule; 0 is only the first one listed);
- split-K, which can fill the GPU when M is small.

``tune`` times every candidate on the device (each in a CUDA graph, so host overhead of
the per-call plan set-up does not count) and keeps the fastest per (N, K, dtype, M bucket).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..launch import next_pow2
from ..tuning import time_ms

# cuSPARSELt shape rules for 16-bit inputs (torch's _DTYPE_SHAPE_CONSTRAINTS for the backend):
# the sparse matrix needs rows and columns multiples of 16, the dense one multiples of 8.
SPARSE_MULTIPLE = 16
DENSE_MULTIPLE = 8
DTYPES = (torch.float16, torch.bfloat16)
MAX_ALG_PROBE = 64  # alg ids beyond the library's maximum raise; the sweep stops there


@dataclass(frozen=True)
class CsltConfig:
    b_colmajor: bool = True  # B = x.t() as a free view (True) or a row-major copy (False)
    transpose_result: bool = True  # C written column-major: y comes out [M, N] contiguous
    alg_id: int = 0
    split_k: int = 1

    def describe(self) -> str:
        return (f"B={'col' if self.b_colmajor else 'row'}-major, transpose_result={self.transpose_result}, "
                f"alg_id={self.alg_id}, split_k={self.split_k}")

    def as_numbers(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


DEFAULT = CsltConfig()
# what torch's SparseSemiStructuredTensor does for F.linear (no fused transpose, alg 0)
TORCH_DEFAULT = CsltConfig(b_colmajor=True, transpose_result=False, alg_id=0)

_TUNED: dict[tuple[int, int, str, int], CsltConfig] = {}


def unsupported_reason(weight: torch.Tensor) -> str | None:
    """Why cuSPARSELt cannot hold ``weight`` (beyond the 2:4 pattern itself), or None."""
    if weight.device.type != "cuda":
        return f"cuSPARSELt needs a CUDA weight, got one on {weight.device}"
    if not torch.backends.cusparselt.is_available():
        return "this torch build has no cuSPARSELt"
    if weight.dtype not in DTYPES:
        return f"2:4 via cuSPARSELt supports float16/bfloat16 here, got {weight.dtype}"
    n, k = weight.shape
    if n % SPARSE_MULTIPLE or k % SPARSE_MULTIPLE:
        return f"cuSPARSELt needs both weight dims to be multiples of {SPARSE_MULTIPLE}, got [{n}, {k}]"
    return None


def compress(weight: torch.Tensor) -> torch.Tensor:
    """The opaque cuSPARSELt form (kept values then metadata) of a 2:4 ``weight``."""
    return torch._cslt_compress(weight.contiguous())


def padded_m(m: int) -> int:
    return -(-max(m, 1) // DENSE_MULTIPLE) * DENSE_MULTIPLE


def m_bucket(m: int) -> int:
    """Tuning granularity: the next power of two of the padded row count."""
    return next_pow2(padded_m(m))


def matmul(x2d: torch.Tensor, packed: torch.Tensor, cfg: CsltConfig = DEFAULT) -> torch.Tensor:
    """``x2d [M, K] @ W^T`` -> ``[M, N]`` (a view; contiguous when ``cfg.transpose_result``)."""
    m = x2d.shape[0]
    mp = padded_m(m)
    xp = x2d if mp == m else torch.nn.functional.pad(x2d, (0, 0, 0, mp - m))
    b = xp.t() if cfg.b_colmajor else xp.t().contiguous()
    res = torch._cslt_sparse_mm(packed, b, transpose_result=cfg.transpose_result, alg_id=cfg.alg_id,
                                split_k=cfg.split_k)
    y = res if cfg.transpose_result else res.t()
    return y if mp == m else y[:m]


def lookup(n: int, k: int, dtype: torch.dtype, m: int) -> CsltConfig | None:
    return _TUNED.get((n, k, str(dtype), m_bucket(m)))


def remember(n: int, k: int, dtype: torch.dtype, m: int, cfg: CsltConfig) -> None:
    _TUNED[(n, k, str(dtype), m_bucket(m))] = cfg


def tuned_table() -> dict[str, str]:
    """Every tuned configuration so far, for records and notes."""
    return {f"N={n} K={k} {d.removeprefix('torch.')} M<={m}": c.describe() for (n, k, d, m), c in _TUNED.items()}


def _try(x: torch.Tensor, packed: torch.Tensor, cfg: CsltConfig) -> float | None:
    try:
        return time_ms(lambda: matmul(x, packed, cfg))
    except RuntimeError:  # an alg id or split-K this problem does not support
        torch.cuda.synchronize()
        return None


def search(packed: torch.Tensor, n: int, k: int, m: int, dtype: torch.dtype,
           log: list[str] | None = None) -> tuple[CsltConfig, float]:
    """The fastest configuration for ``[m, k] @ [k, n]`` and its time (ms per call).

    1. each of the 4 layouts with alg 0;
    2. every alg id in the best layout (for M >= 1024 with both output orders);
    3. split-K 2/4/8 on the best alg for small M.

    cuSPARSELt's own search (``torch._cslt_sparse_mm_search``, deprecated) is not used: on an
    H200 with torch 2.11 it hit an illegal instruction for float16 at small shapes, which
    leaves the CUDA context unusable; step 2 times every alg id it could pick anyway.
    """
    x = torch.randn(padded_m(m), k, device=packed.device, dtype=dtype)
    timings: dict[CsltConfig, float] = {}

    def measure(cfg: CsltConfig) -> None:
        if cfg not in timings:
            t = _try(x, packed, cfg)
            if t is not None:
                timings[cfg] = t

    for colmajor in (True, False):
        for tr in (True, False):
            measure(CsltConfig(colmajor, tr, 0))
    if not timings:
        raise RuntimeError(f"no cuSPARSELt configuration runs for M={m} N={n} K={k} {dtype}")
    best = min(timings, key=timings.__getitem__)
    # every alg id in the best layout, and for large M also with the other output order
    # (the best alg of one order is not always the best of the other at large M)
    orders = (best.transpose_result, not best.transpose_result) if m >= 1024 else (best.transpose_result,)
    for tr in orders:
        for alg in range(MAX_ALG_PROBE):
            cfg = CsltConfig(best.b_colmajor, tr, alg)
            if cfg in timings:
                continue
            t = _try(x, packed, cfg)
            if t is None:
                break
            timings[cfg] = t
    best = min(timings, key=timings.__getitem__)
    if m <= 512:
        for split in (2, 4, 8):
            measure(CsltConfig(best.b_colmajor, best.transpose_result, best.alg_id, split))
    best = min(timings, key=timings.__getitem__)
    if log is not None:
        log.append(f"cuSPARSELt search M={m} N={n} K={k}: {len(timings)} configs, best {best.describe()} "
                   f"{timings[best]:.4f} ms (alg 0 fused-transpose {timings.get(DEFAULT, float('nan')):.4f} ms)")
    return best, timings[best]


def tune(packed: torch.Tensor, n: int, k: int, m: int, dtype: torch.dtype,
         log: list[str] | None = None) -> CsltConfig:
    """Search once per (N, K, dtype, M bucket) and remember the result for this process."""
    key = (n, k, str(dtype), m_bucket(m))
    if key not in _TUNED:
        _TUNED[key] = search(packed, n, k, key[3], dtype, log)[0]
    return _TUNED[key]
