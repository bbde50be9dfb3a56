"""Triton SpMM, "load sparse, compute dense": packed nonzeros in, tensor-core ``tl.dot`` out.

Each program owns ``tile_n`` output features (one row of weight tiles) for ``BLOCK_M``
tokens and walks its share of the k-tiles. Per k-tile it reads the bitmask words of its
rows, expands them to one bit per weight, turns the bits into positions in ``values``
(row start + exclusive prefix sum of the bits along the row) and gathers the nonzeros into
a dense ``tile_n x tile_k`` register tile, zeros elsewhere; then one ``tl.dot`` with the
activations, M padded to 16. The weight bytes read are the packed bytes (~0.57 of dense at
50% in bf16): that is the whole gain for memory-bound decode-sized M.

Split-K (several programs per row of tiles, fp32 atomics into a zeroed buffer) keeps every
SM busy when N / tile_n is small. ``unpack`` writes the dense weight with the same tile
decode, for large M where a cuBLAS GEMM on the unpacked weight beats re-decoding per M-tile.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .ref import PackedWeight


@triton.jit
def _weight_tile(vals_ptr, bits_ptr, start_ptr, rn, kt, n_ktiles, words_per_row,
                 BN: tl.constexpr, BK: tl.constexpr):
    """The dense [BN, BK] tile of k-tile ``kt`` for rows ``rn`` (all inside the padding)."""
    wcol = kt * (BK // 32) + tl.arange(0, BK // 32)
    words = tl.load(bits_ptr + rn[:, None] * words_per_row + wcol[None, :])
    bit = (words[:, :, None] >> tl.arange(0, 32)[None, None, :]) & 1
    bit = tl.reshape(bit, (BN, BK))
    pos = tl.cumsum(bit, axis=1) - bit
    base = tl.load(start_ptr + rn * n_ktiles + kt)
    return tl.load(vals_ptr + base[:, None] + pos, mask=bit != 0, other=0.0)


@triton.jit
def _spmm_kernel(x_ptr, vals_ptr, bits_ptr, start_ptr, out_ptr, M, N, K, stride_xm, stride_om,
                 n_ktiles, words_per_row, tiles_per_split,
                 BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, ATOMIC: tl.constexpr,
                 IEEE: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_s = tl.program_id(1)
    pid_m = tl.program_id(2)
    rn = pid_n * BN + tl.arange(0, BN)
    rm = pid_m * BM + tl.arange(0, BM)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    kt0 = pid_s * tiles_per_split
    kt1 = tl.minimum(kt0 + tiles_per_split, n_ktiles)
    for kt in range(kt0, kt1):
        rk = kt * BK + tl.arange(0, BK)
        x = tl.load(x_ptr + rm[:, None] * stride_xm + rk[None, :],
                    mask=(rm[:, None] < M) & (rk[None, :] < K), other=0.0)
        w = _weight_tile(vals_ptr, bits_ptr, start_ptr, rn, kt, n_ktiles, words_per_row, BN, BK)
        if IEEE:  # fp32 inputs, or the interpreter (whose bf16 dot is wrong): exact fp32 products
            acc += tl.dot(x.to(tl.float32), tl.trans(w.to(tl.float32)), input_precision="ieee")
        else:
            acc += tl.dot(x, tl.trans(w))
    ptrs = out_ptr + rm[:, None] * stride_om + rn[None, :]
    mask = (rm[:, None] < M) & (rn[None, :] < N)
    if ATOMIC:
        tl.atomic_add(ptrs, acc, mask=mask)
    else:
        tl.store(ptrs, acc.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _unpack_kernel(vals_ptr, bits_ptr, start_ptr, out_ptr, N, K, stride_o, n_ktiles, words_per_row,
                   BN: tl.constexpr, BK: tl.constexpr):
    rn = tl.program_id(0) * BN + tl.arange(0, BN)
    kt = tl.program_id(1)
    rk = kt * BK + tl.arange(0, BK)
    w = _weight_tile(vals_ptr, bits_ptr, start_ptr, rn, kt, n_ktiles, words_per_row, BN, BK)
    tl.store(out_ptr + rn[:, None] * stride_o + rk[None, :], w, mask=(rn[:, None] < N) & (rk[None, :] < K))


def default_split_k(p: PackedWeight, m_tiles: int, device: torch.device) -> int:
    """Enough programs for about two waves over the SMs, at least 4 k-tiles each."""
    if device.type != "cuda":
        return 1
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    n_tiles = p.bits.shape[0] // p.tile_n
    n_ktiles = p.row_start.shape[1]
    want = -(-2 * sms // (n_tiles * m_tiles))
    return max(1, min(want, n_ktiles // 4 or 1))


def spmm(x: torch.Tensor, p: PackedWeight, split_k: int | None = None, num_warps: int = 4,
         num_stages: int = 3) -> torch.Tensor:
    """``x [M, K] @ W^T`` -> ``[M, N]`` in ``x.dtype`` (fp32 accumulation)."""
    if x.dtype != p.values.dtype:
        raise TypeError(f"x is {x.dtype} but the packed weight holds {p.values.dtype}")
    n, k = p.shape
    if x.dim() != 2 or x.shape[1] != k:
        raise ValueError(f"x must be [M, {k}], got {tuple(x.shape)}")
    x = x.contiguous()
    m = x.shape[0]
    bm = 16 if m <= 16 else 64
    m_tiles = triton.cdiv(m, bm)
    n_ktiles = p.row_start.shape[1]
    split = split_k or default_split_k(p, m_tiles, x.device)
    per = triton.cdiv(n_ktiles, split)
    split = triton.cdiv(n_ktiles, per)
    atomic = split > 1
    out = (torch.zeros if atomic else torch.empty)(m, n, device=x.device, dtype=torch.float32 if atomic else x.dtype)
    grid = (p.bits.shape[0] // p.tile_n, split, m_tiles)
    _spmm_kernel[grid](x, p.values, p.bits, p.row_start, out, m, n, k, x.stride(0), out.stride(0),
                       n_ktiles, p.bits.shape[1], per, BM=bm, BN=p.tile_n, BK=p.tile_k, ATOMIC=atomic,
                       IEEE=x.dtype == torch.float32 or x.device.type == "cpu", num_warps=num_warps, num_stages=num_stages)
    return out.to(x.dtype) if atomic else out


def unpack(p: PackedWeight, out: torch.Tensor | None = None) -> torch.Tensor:
    """The dense ``W [N, K]`` decoded on the device (into ``out`` when given)."""
    n, k = p.shape
    if out is None:
        out = torch.empty(n, k, device=p.values.device, dtype=p.values.dtype)
    grid = (p.bits.shape[0] // p.tile_n, p.row_start.shape[1])
    _unpack_kernel[grid](p.values, p.bits, p.row_start, out, n, k, out.stride(0), p.row_start.shape[1],
                         p.bits.shape[1], BN=p.tile_n, BK=p.tile_k, num_warps=4)
    return out
