"""A decode step's rotary embedding and KV-cache write as one op: ``q`` and ``k`` rotated,
``k`` and ``v`` written into a static cache's slot, the rotated ``q`` returned.

Why an op of its own: in a compiled decode step the three pieces are three small kernels per
layer, and at batch 1 each launch in the step's chain costs about as much as its work. The
definition is ``ref.py``; the fast path ``triton.py``. ``rope_cache`` is the plugin object
the suite's decode path finds through the ``sparsebench.attention_kernels`` entry point; it
calls the registered op ``torch.ops.sparsebench.rope_cache_write`` (opaque to
``torch.compile``, which sees it write the two caches).

``impl``: ``ref``, ``triton``, ``auto`` (triton on CUDA, else ref).
"""

from __future__ import annotations

import torch

from ..dispatch import choose_impl
from .ref import rope_cache_ref

__all__ = ["RopeCache", "check_shapes", "rope_cache", "rope_cache_ref", "rope_cache_write"]


def check_shapes(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                 k_cache: torch.Tensor, v_cache: torch.Tensor, position: torch.Tensor) -> None:
    """Raise ValueError, saying what is wrong, unless the operands fit ``rope_cache_ref``'s contract
    (and the kernel's: rows of unit stride, a power-of-two head size, contiguous caches)."""
    if k_cache.dim() != 4 or k_cache.shape != v_cache.shape:
        raise ValueError(f"caches must be two equal [B, Hkv, L, D] tensors, got {tuple(k_cache.shape)} "
                         f"and {tuple(v_cache.shape)}")
    B, hkv, _, D = k_cache.shape
    if D < 2 or D & (D - 1):
        raise ValueError(f"the head size must be a power of two, got {D}")
    if not (k_cache.is_contiguous() and v_cache.is_contiguous()):
        raise ValueError("the caches must be contiguous")
    if q.dtype != k_cache.dtype or v_cache.dtype != k_cache.dtype:
        raise ValueError(f"q and the caches must share one dtype, got {q.dtype}, {k_cache.dtype}, {v_cache.dtype}")
    if q.dim() != 2 or q.shape[0] != B or q.shape[1] % D:
        raise ValueError(f"q must be [B={B}, Hq*{D}], got {tuple(q.shape)}")
    for name, t in (("k", k), ("v", v)):
        if tuple(t.shape) != (B, hkv * D):
            raise ValueError(f"{name} must be [B={B}, Hkv*D={hkv * D}], got {tuple(t.shape)}")
    for name, t in (("cos", cos), ("sin", sin)):
        if tuple(t.shape) != (B, D):
            raise ValueError(f"{name} must be [B={B}, D={D}], got {tuple(t.shape)}")
    for name, t in (("q", q), ("k", k), ("v", v), ("cos", cos), ("sin", sin)):
        if t.stride(-1) != 1:
            raise ValueError(f"{name}'s rows must have unit stride")
    if position.numel() != 1 or position.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"position must be one integer, got {position.numel()} of {position.dtype}")


def rope_cache_write(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                     k_cache: torch.Tensor, v_cache: torch.Tensor, position: torch.Tensor,
                     impl: str = "auto") -> torch.Tensor:
    """Rotate q and k, write k and v at ``position`` of the caches; returns q ``[B, Hq, 1, D]``."""
    check_shapes(q, k, v, cos, sin, k_cache, v_cache, position)
    if choose_impl(impl, q) == "ref":
        return rope_cache_ref(q, k, v, cos, sin, k_cache, v_cache, position)
    from .triton import rope_cache_triton

    return rope_cache_triton(q, k, v, cos, sin, k_cache, v_cache, position)


@torch.library.custom_op("sparsebench::rope_cache_write", mutates_args=("k_cache", "v_cache"))
def _rope_cache_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                   k_cache: torch.Tensor, v_cache: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    return rope_cache_write(q, k, v, cos, sin, k_cache, v_cache, position)


@_rope_cache_op.register_fake
def _(q, k, v, cos, sin, k_cache, v_cache, position):
    return q.new_empty((q.shape[0], q.shape[1] // k_cache.shape[-1], 1, k_cache.shape[-1]))


class RopeCache:
    """The ``sparsebench.attention_kernels`` plugin: ``(q, k, v, cos, sin, k_cache, v_cache,
    position)`` -> rotated q (the caches written), and ``describe()`` for the record."""

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                 k_cache: torch.Tensor, v_cache: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        return _rope_cache_op(q, k, v, cos, sin, k_cache, v_cache, position)

    def describe(self) -> str:
        return "rope_cache triton: RoPE of q and k and the k/v cache write in one launch"


rope_cache = RopeCache()
