"""Unstructured sparse x dense matmul for decode-sized M: ``ref``, ``triton`` and ``cuda`` paths.

``spmm(x, packed, impl=...)`` computes ``x @ W^T`` from the packed form (``pack(W)``);
``SparseLinear.from_linear(lin)`` replaces a pruned ``nn.Linear`` and keeps only the
packed weight. For M <= ``DECODE_M`` it runs an SpMM kernel: the CUDA one (``cuda.py``,
1..8 rows of bf16/fp16, where NVRTC is found) else the Triton one; above, it decodes the
weight into a scratch buffer on the device and runs cuBLAS (loading sparse pays only while
the GEMM is memory-bound). On an H200 the CUDA kernel is 1.0-1.7x faster than the Triton one
at M <= 8, and both are still slower than dense cuBLAS (benchmarks/NOTES.md).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..dispatch import choose_impl
from ..launch import next_pow2
from . import ref
from .ref import PackedWeight, pack, unpack

__all__ = ["DECODE_M", "PackedWeight", "SparseLinear", "pack", "spmm", "unpack"]

DECODE_M = 16
_TUNED: dict[tuple[int, int, str, int], dict[str, int]] = {}
TUNING_LOG: list[str] = []  # one line per tuned (shape, M bucket), in the order they were tuned


def spmm(x: torch.Tensor, packed: PackedWeight, bias: torch.Tensor | None = None, impl: str = "auto",
         **launch: Any) -> torch.Tensor:
    """``x [..., K] @ W^T (+ bias)`` for the packed ``W``, in ``x.dtype``."""
    which = choose_impl(impl, x)
    if which == "ref":
        return ref.spmm(x, packed, bias)
    from . import triton as tri

    n, k = packed.shape
    x2 = x.reshape(-1, k)
    if packed.nnz == 0:
        y = torch.zeros(x2.shape[0], n, device=x.device, dtype=x.dtype)
    else:
        y = tri.spmm(x2, packed, **launch)
    if bias is not None:
        y = y + bias
    return y.reshape(*x.shape[:-1], n)


def _m_bucket(m: int) -> int:
    return next_pow2(m)


def tune(packed: PackedWeight, m: int, log: list[str] | None = None) -> dict[str, int]:
    """Fastest (split_k, num_warps, num_stages) for this shape and M bucket, timed in CUDA graphs."""
    from ..tuning import time_ms
    from . import triton as tri

    n, k = packed.shape
    key = (n, k, str(packed.values.dtype), _m_bucket(m))
    if key in _TUNED:
        return _TUNED[key]
    x = torch.randn(key[3], k, device=packed.values.device, dtype=packed.values.dtype)
    auto = tri.default_split_k(packed, 1, x.device)
    timings = {}
    for split in sorted({1, 2, 4, 8, auto}):
        for warps, stages in ((4, 2), (4, 3), (8, 3)):
            cfg = {"split_k": split, "num_warps": warps, "num_stages": stages}
            try:
                timings[tuple(cfg.items())] = time_ms(lambda cfg=cfg: tri.spmm(x, packed, **cfg))
            except Exception:  # a launch config the compiler refuses (registers, shared memory)
                torch.cuda.synchronize()
    if not timings:
        raise RuntimeError(f"no SpMM launch configuration ran for N={n} K={k} M={m}")
    best = min(timings, key=timings.__getitem__)
    _TUNED[key] = dict(best)
    if log is not None:
        log.append(f"spmm tune M<={key[3]} N={n} K={k}: best {dict(best)} {timings[best]:.4f} ms "
                   f"of {len(timings)} configs")
    return _TUNED[key]


def _cuda_bounds(packed: PackedWeight) -> torch.Tensor | None:
    """The CUDA kernel's run table for this weight, or None where that kernel cannot take it
    (not on a GPU, another dtype or tile shape)."""
    from . import cuda

    if not packed.values.is_cuda or cuda.why_not_shape(1, *packed.shape, packed.values.dtype, packed):
        return None  # (the dtype and the tile shape are what why_not_shape reads here)
    return cuda.chunk_bounds(packed, cuda.Config().rows)


class SparseLinear(nn.Module):
    """An unstructured-sparse linear layer holding only the packed weight (bitmask tiles),
    plus, on a GPU, the CUDA kernel's table of run boundaries (derived, not saved)."""

    def __init__(self, packed: PackedWeight, bias: torch.Tensor | None, autotune: bool = True):
        super().__init__()
        self.out_features, self.in_features = packed.shape
        self.tile_n, self.tile_k = packed.tile_n, packed.tile_k
        self.autotune = autotune
        for name, t in packed.tensors().items():
            self.register_buffer(name, t)
        self.register_buffer("bias", bias)
        self.register_buffer("bounds", _cuda_bounds(packed), persistent=False)

    @classmethod
    def from_linear(cls, lin: nn.Linear, autotune: bool = True) -> SparseLinear:
        w = lin.weight.detach()
        if w.device.type != "cuda":
            raise ValueError(f"SparseLinear runs its Triton kernel on CUDA; the weight is on {w.device}")
        if w.dtype not in (torch.float16, torch.bfloat16, torch.float32):
            raise ValueError(f"SparseLinear supports float16/bfloat16/float32 weights, got {w.dtype}")
        bias = None if lin.bias is None else lin.bias.detach().clone()
        return cls(pack(w), bias, autotune)

    @property
    def packed(self) -> PackedWeight:
        return PackedWeight(self.values, self.bits, self.row_start, (self.out_features, self.in_features),
                            self.tile_n, self.tile_k)

    def weight_zero_count(self) -> tuple[int, int]:
        """(exact zeros, total) of the held weight: everything not stored is zero."""
        total = self.in_features * self.out_features
        return total - int(self.values.numel()), total

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # one registered op: torch.compile keeps it whole instead of tracing the tuning and
        # capture checks below (which broke CUDA-graph capture of a compiled decode step)
        return torch.ops.sparsebench.spmm_linear(x, self.values, self.bits, self.row_start, self.bias, self.bounds,
                                                 self.out_features, self.tile_n, self.tile_k, self.autotune)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"nnz={self.values.numel()}, bitmask tiles {self.tile_n}x{self.tile_k}")


@torch.library.custom_op("sparsebench::spmm_linear", mutates_args=())
def _spmm_linear(x: torch.Tensor, values: torch.Tensor, bits: torch.Tensor, row_start: torch.Tensor,
                 bias: torch.Tensor | None, bounds: torch.Tensor | None, out_features: int, tile_n: int,
                 tile_k: int, autotune: bool) -> torch.Tensor:
    """``SparseLinear``'s forward: for up to 8 rows with a run table (``bounds``), the CUDA
    SpMM; for up to ``DECODE_M`` rows the Triton SpMM (its launch tuned on the first call of a
    shape and M bucket, never while a CUDA graph is being captured); else the weight decoded on
    the device and one cuBLAS GEMM."""
    in_features = x.shape[-1]
    p = PackedWeight(values, bits, row_start, (out_features, in_features), tile_n, tile_k)
    x2 = x.reshape(-1, in_features)
    m = x2.shape[0]
    if m > DECODE_M:  # compute-bound: decode the weight once, then cuBLAS
        from . import triton as tri

        y = torch.nn.functional.linear(x2, tri.unpack(p), bias)
        return y.reshape(*x.shape[:-1], out_features)
    if bounds is not None:
        from . import cuda

        if cuda.why_not(x2, p) is None:  # 1..8 rows here, NVRTC found
            return cuda.spmm_cuda(x2, p, bias, bounds=bounds).reshape(*x.shape[:-1], out_features)
    launch: dict[str, int] = {}
    if autotune and x.is_cuda and not torch.cuda.is_current_stream_capturing():
        launch = tune(p, m, TUNING_LOG)
    elif (cached := _TUNED.get((out_features, in_features, str(values.dtype), _m_bucket(m)))) is not None:
        launch = cached
    return spmm(x, p, bias, impl="triton", **launch)


@_spmm_linear.register_fake
def _(x, values, bits, row_start, bias, bounds, out_features, tile_n, tile_k, autotune):
    return x.new_empty((*x.shape[:-1], out_features))
