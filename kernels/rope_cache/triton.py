"""One kernel for a decode step's rotary embedding and cache write (see ``ref.py``).

In the compiled 8B-shaped decode step on an H200 these were three kernels a layer (RoPE of q;
RoPE of k fused with its cache write; the write of v), 96 of a step's ~390 launches, each
a link in the chain of dependent kernels. Here one program handles one head of one
sequence: a q head (rotated, stored to the output), a k head (rotated, stored to the cache
slot) or a v head (copied to the cache slot). The slot is read from device memory, so the
same launch serves every step of a captured CUDA graph.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..launch import pdl


@triton.jit
def _rope_cache_kernel(q_ptr, k_ptr, v_ptr, cos_ptr, sin_ptr, kc_ptr, vc_ptr, pos_ptr, out_ptr,
                       stride_qb, stride_kb, stride_vb, stride_cb, stride_sb, HQ, HKV, L,
                       D: tl.constexpr, PDL: tl.constexpr):
    b = tl.program_id(0)
    h = tl.program_id(1)
    if PDL:  # every read depends on an earlier kernel (the projections, the position)
        tl.extra.cuda.gdc_launch_dependents()
        tl.extra.cuda.gdc_wait()
    if h < HQ + HKV:
        half = tl.arange(0, D // 2)
        if h < HQ:
            src = q_ptr + b * stride_qb + h * D
        else:
            src = k_ptr + b * stride_kb + (h - HQ) * D
        x1 = tl.load(src + half).to(tl.float32)
        x2 = tl.load(src + D // 2 + half).to(tl.float32)
        c1 = tl.load(cos_ptr + b * stride_cb + half).to(tl.float32)
        c2 = tl.load(cos_ptr + b * stride_cb + D // 2 + half).to(tl.float32)
        s1 = tl.load(sin_ptr + b * stride_sb + half).to(tl.float32)
        s2 = tl.load(sin_ptr + b * stride_sb + D // 2 + half).to(tl.float32)
        o1 = x1 * c1 - x2 * s1
        o2 = x2 * c2 + x1 * s2
        if h < HQ:
            dst = out_ptr + (b * HQ + h).to(tl.int64) * D
        else:
            slot = tl.load(pos_ptr).to(tl.int64)
            dst = kc_ptr + ((b * HKV + h - HQ).to(tl.int64) * L + slot) * D
        tl.store(dst + half, o1.to(dst.dtype.element_ty))
        tl.store(dst + D // 2 + half, o2.to(dst.dtype.element_ty))
    else:
        hv = h - HQ - HKV
        d = tl.arange(0, D)
        slot = tl.load(pos_ptr).to(tl.int64)
        x = tl.load(v_ptr + b * stride_vb + hv * D + d)
        dst = vc_ptr + ((b * HKV + hv).to(tl.int64) * L + slot) * D
        tl.store(dst + d, x.to(dst.dtype.element_ty))


def rope_cache_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                      k_cache: torch.Tensor, v_cache: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    """``ref.rope_cache_ref``'s contract, shapes already checked by the caller."""
    B, hkv, L, D = k_cache.shape
    hq = q.shape[-1] // D
    out = torch.empty((B, hq, 1, D), dtype=q.dtype, device=q.device)
    use_pdl = pdl(q.device)
    _rope_cache_kernel[(B, hq + 2 * hkv)](
        q, k, v, cos, sin, k_cache, v_cache, position, out,
        q.stride(0), k.stride(0), v.stride(0), cos.stride(0), sin.stride(0), hq, hkv, L,
        D=D, PDL=use_pdl, num_warps=1, **({"launch_pdl": True} if use_pdl else {}))
    return out
