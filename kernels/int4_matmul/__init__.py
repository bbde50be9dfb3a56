"""int4 weight-only matmul (W4A16): ``int4_matmul(x, qweight, scales, offsets, impl=...)``.

Layout: ``qweight`` ``[N, K/2]`` uint8, two 4-bit codes per byte along K (even column in the
low nibble); ``scales`` and ``offsets`` ``[N, ceil(K/G)]`` (the last group may be shorter);
``W = q * scale + offset``.

The fast path (``triton.py``, Triton kernels in ``tiles.py``) picks a plan per shape and M
bucket, timed on first use on a GPU: for M <= 16 the CUDA tensor-core kernel ``w4_mma.cu``
(``cuda.py``, compiled by NVRTC, where NVRTC is found) or a Triton tensor-core / CUDA-core
kernel; for more rows a fused dequantize-and-multiply kernel or dequantize + cuBLAS.
"""

from __future__ import annotations

from typing import Any

from ..dispatch import choose_impl
from . import ref

SUPPORTED_GROUPS = "a multiple of 32 (32, 64, 128, ...)"


def check(k: int, group: int) -> None:
    """Refuse what the Triton kernel cannot do: its K-tiles (32-128 wide) must never
    straddle a group boundary."""
    if k % 2:
        raise ValueError(f"int4 packing needs an even input width, got K={k}")
    if group % 32:
        raise ValueError(f"the int4 kernel needs a group size that is {SUPPORTED_GROUPS}; got group {group} (K={k})")


def int4_matmul(x: Any, qweight: Any, scales: Any, offsets: Any, group: int, impl: str = "auto") -> Any:
    chosen = choose_impl(impl, x)
    if chosen == "ref":
        return ref.int4_matmul(x, qweight, scales, offsets, group)
    check(x.shape[-1], group)
    from . import triton as fast

    return fast.int4_matmul_op(x, qweight, scales, offsets, group)
