"""Bit packing of unsigned codes along the input dimension, for any width 1..8 bits.

Each row's codes form a little-endian bit stream: code ``i`` occupies bits
``[i*bits, (i+1)*bits)``. For 4 bits that is two codes per byte, the even column in the
low nibble; for 3 bits, eight codes in three bytes. Rows are packed independently, so
the width must be a multiple of 8 (of 2 for 4-bit, of 4 for 2-bit).
"""

from __future__ import annotations

import torch


def codes_per_chunk(bits: int) -> int:
    """Smallest number of codes that fills whole bytes."""
    for n in (1, 2, 4, 8):
        if (n * bits) % 8 == 0:
            return n
    raise AssertionError(bits)


def check_width(cols: int, bits: int) -> None:
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in 1..8, got {bits}")
    n = codes_per_chunk(bits)
    if cols % n:
        raise ValueError(f"{bits}-bit packing needs the input width to be a multiple of {n}, got {cols}")


def pack(q: torch.Tensor, bits: int) -> torch.Tensor:
    """``[rows, cols]`` codes (< 2**bits) -> ``[rows, cols * bits // 8]`` uint8."""
    rows, cols = q.shape
    check_width(cols, bits)
    if bits == 8:
        return q.to(torch.uint8).contiguous()
    n = codes_per_chunk(bits)
    chunk = q.to(torch.int64).reshape(rows, cols // n, n)
    shifts = torch.arange(n, device=q.device) * bits
    word = (chunk << shifts).sum(-1)  # n * bits <= 56 bits: fits int64
    nbytes = n * bits // 8
    out = (word.unsqueeze(-1) >> (torch.arange(nbytes, device=q.device) * 8)) & 0xFF
    return out.to(torch.uint8).reshape(rows, cols * bits // 8)


def unpack(packed: torch.Tensor, bits: int, cols: int) -> torch.Tensor:
    """Inverse of ``pack``: uint8 codes ``[rows, cols]``."""
    rows = packed.shape[0]
    if bits == 8:
        return packed
    n = codes_per_chunk(bits)
    nbytes = n * bits // 8
    by = packed.to(torch.int64).reshape(rows, cols // n, nbytes)
    word = (by << (torch.arange(nbytes, device=packed.device) * 8)).sum(-1)
    q = (word.unsqueeze(-1) >> (torch.arange(n, device=packed.device) * bits)) & (2**bits - 1)
    return q.to(torch.uint8).reshape(rows, cols)
