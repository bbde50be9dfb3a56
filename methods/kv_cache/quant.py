"""KIVI's asymmetric low-bit quantization and the packed layout whose bytes are reported.

``quantize(x, bits, dim)``: min/max over ``dim`` (the grouped axis), ``scale = (max - min) /
(2^bits - 1)``, ``code = round((x - min) / scale)`` clamped to ``[0, 2^bits - 1]``,
``x ~ code * scale + min``. Groups of constant value get ``scale = 1`` (all codes 0).

Codes are packed along the last axis (channels), ``8 // bits`` per byte, lowest code in the
lowest bits. Scales and zeros (the group minima) keep the cache's dtype.
"""

from __future__ import annotations

import torch


def quantize(x: torch.Tensor, bits: int, dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Codes (uint8, one per entry, unpacked), scale and zero, both keeping ``dim`` as size 1."""
    levels = (1 << bits) - 1
    xf = x.float()
    lo = xf.amin(dim=dim, keepdim=True)
    hi = xf.amax(dim=dim, keepdim=True)
    scale = (hi - lo) / levels
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    codes = ((xf - lo) / scale).round_().clamp_(0, levels).to(torch.uint8)
    return codes, scale.to(x.dtype), lo.to(x.dtype)


def dequantize(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    return (codes.to(torch.float32) * scale.float() + zero.float()).to(scale.dtype)


def pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """``[..., d]`` uint8 codes of ``bits`` bits -> ``[..., d * bits / 8]`` bytes."""
    per = 8 // bits
    *lead, d = codes.shape
    if d % per:
        raise ValueError(f"cannot pack {d} codes of {bits} bits into whole bytes")
    c = codes.reshape(*lead, d // per, per).to(torch.int32)
    shifts = torch.arange(per, device=codes.device, dtype=torch.int32) * bits
    return (c << shifts).sum(-1).to(torch.uint8)


def unpack(packed: torch.Tensor, bits: int) -> torch.Tensor:
    per = 8 // bits
    shifts = torch.arange(per, device=packed.device, dtype=torch.int32) * bits
    c = (packed.to(torch.int32).unsqueeze(-1) >> shifts) & ((1 << bits) - 1)
    return c.reshape(*packed.shape[:-1], packed.shape[-1] * per).to(torch.uint8)


def quantize_keys(k: torch.Tensor, bits: int, group: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keys ``[b, h, n, d]`` (``n`` a multiple of ``group``), per channel over groups of
    ``group`` tokens: packed codes ``[b, h, n, d*bits/8]``, scale and zero ``[b, h, n/group, d]``."""
    b, h, n, d = k.shape
    codes, scale, zero = quantize(k.reshape(b, h, n // group, group, d), bits, dim=3)
    return pack(codes.reshape(b, h, n, d), bits), scale.squeeze(3), zero.squeeze(3)


def dequantize_keys(packed: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int,
                    group: int) -> torch.Tensor:
    codes = unpack(packed, bits)
    b, h, n, d = codes.shape
    x = dequantize(codes.reshape(b, h, n // group, group, d), scale.unsqueeze(3), zero.unsqueeze(3))
    return x.reshape(b, h, n, d)


def quantize_values(v: torch.Tensor, bits: int, group: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Values ``[b, h, n, d]`` (``d`` a multiple of ``group``), per token over groups of
    ``group`` channels: packed codes ``[b, h, n, d*bits/8]``, scale and zero ``[b, h, n, d/group]``."""
    b, h, n, d = v.shape
    codes, scale, zero = quantize(v.reshape(b, h, n, d // group, group), bits, dim=4)
    return pack(codes.reshape(b, h, n, d), bits), scale.squeeze(4), zero.squeeze(4)


def dequantize_values(packed: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int,
                      group: int) -> torch.Tensor:
    codes = unpack(packed, bits)
    b, h, n, d = codes.shape
    x = dequantize(codes.reshape(b, h, n, d // group, group), scale.unsqueeze(4), zero.unsqueeze(4))
    return x.reshape(b, h, n, d)


def nbytes(*tensors: torch.Tensor | None) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)
