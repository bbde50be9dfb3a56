"""Layers that hold every token, compressed: KIVI (quantized) and Mustafar-style (pruned).

Both keep a full-precision window of the most recent tokens; ``after_attention`` moves the
tokens that leave the window into the compressed part, so the current step always attends
its own tokens (and, at prefill, the whole prompt) at full precision.
"""

from __future__ import annotations

import math

import torch

from .cache import KVLayer
from .quant import dequantize_keys, dequantize_values, nbytes, quantize_keys, quantize_values


def _cat(a: torch.Tensor | None, b: torch.Tensor) -> torch.Tensor:
    return b if a is None else torch.cat([a, b], dim=-2)


class KiviLayer(KVLayer):
    """Quantized part: packed key codes with per-channel scale/zero per group of ``group``
    tokens, packed value codes with per-token scale/zero per group of ``vgroup`` channels.
    Residual: the most recent tokens in full precision; after a step, the oldest whole
    groups of ``group`` tokens are quantized while at least ``residual`` tokens remain, so
    the residual holds ``residual`` to ``residual + group - 1`` tokens."""

    def __init__(self, bits: int, group: int, residual: int) -> None:
        super().__init__()
        self.bits, self.group, self.residual = bits, group, residual
        self.vgroup = group
        self.qk = self.k_scale = self.k_zero = None
        self.qv = self.v_scale = self.v_zero = None
        self.rk: torch.Tensor | None = None
        self.rv: torch.Tensor | None = None

    def reset(self) -> None:
        self.__init__(self.bits, self.group, self.residual)

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        d = key_states.shape[-1]
        self.vgroup = min(self.group, d)
        if d % self.vgroup or (d * self.bits) % 8:
            raise ValueError(f"kivi needs head_dim ({d}) divisible by group_size ({self.group}) or "
                             f"group_size >= head_dim, and head_dim x bits a multiple of 8")

    def dequantized(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if self.qk is None:
            return None, None
        return (dequantize_keys(self.qk, self.k_scale, self.k_zero, self.bits, self.group),
                dequantize_values(self.qv, self.v_scale, self.v_zero, self.bits, self.vgroup))

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
               ) -> tuple[torch.Tensor, torch.Tensor]:
        self.begin(key_states, value_states)
        self.rk, self.rv = _cat(self.rk, key_states), _cat(self.rv, value_states)
        dk, dv = self.dequantized()
        if dk is None:
            return self.rk, self.rv
        return torch.cat([dk, self.rk], dim=-2), torch.cat([dv, self.rv], dim=-2)

    def after_attention(self, votes: torch.Tensor | None) -> None:
        n = self.rk.shape[-2]
        move = (n - self.residual) // self.group * self.group
        if move <= 0:
            return
        qk, ks, kz = quantize_keys(self.rk[..., :move, :], self.bits, self.group)
        qv, vs, vz = quantize_values(self.rv[..., :move, :], self.bits, self.vgroup)
        self.qk, self.k_scale, self.k_zero = _cat(self.qk, qk), _cat(self.k_scale, ks), _cat(self.k_zero, kz)
        self.qv, self.v_scale, self.v_zero = _cat(self.qv, qv), _cat(self.v_scale, vs), _cat(self.v_zero, vz)
        self.rk, self.rv = self.rk[..., move:, :].contiguous(), self.rv[..., move:, :].contiguous()

    def tokens_quantized(self) -> int:
        return 0 if self.qk is None else self.qk.shape[-2]

    def bytes_held(self) -> int:
        return nbytes(self.qk, self.k_scale, self.k_zero, self.qv, self.v_scale, self.v_zero, self.rk, self.rv)


def prune_rows(x: torch.Tensor, keep: int) -> torch.Tensor:
    """Zero all but the ``keep`` largest-magnitude entries of every vector along the last
    axis (ties: the lower index wins, as ``topk`` picks)."""
    d = x.shape[-1]
    if keep >= d:
        return x
    idx = x.abs().topk(keep, dim=-1).indices
    mask = torch.zeros_like(x, dtype=torch.bool).scatter_(-1, idx, True)
    return torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device))


def sparse_row_bytes(head_dim: int, keep: int, elem: int) -> int:
    """Bytes of one pruned vector in the counted format: its kept values plus a bitmap of
    ``head_dim`` bits (rounded up to whole bytes)."""
    return keep * elem + math.ceil(head_dim / 8)


class SparseLayer(KVLayer):
    """Mustafar-style: entries older than the ``window`` most recent tokens are pruned per
    token (and per head) to ``keep = max(1, round(density x head_dim))`` entries of the key
    and of the value vector. Held as dense tensors with zeros (what attention reads);
    counted as values + bitmap (``sparse_row_bytes``)."""

    def __init__(self, density: float, window: int) -> None:
        super().__init__()
        self.density, self.window = density, window
        self.keep = 0
        self.pruned = 0  # leading entries already pruned

    def reset(self) -> None:
        self.__init__(self.density, self.window)

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        d = key_states.shape[-1]
        self.keep = min(d, max(1, round(self.density * d)))

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
               ) -> tuple[torch.Tensor, torch.Tensor]:
        self.begin(key_states, value_states)
        self.keys, self.values = _cat(self.keys, key_states), _cat(self.values, value_states)
        return self.keys, self.values

    def after_attention(self, votes: torch.Tensor | None) -> None:
        end = self.seen - self.window
        if end <= self.pruned:
            return
        start = self.pruned
        self.keys[..., start:end, :] = prune_rows(self.keys[..., start:end, :], self.keep)
        self.values[..., start:end, :] = prune_rows(self.values[..., start:end, :], self.keep)
        self.pruned = end

    def bytes_held(self) -> int:
        if self.shape is None:
            return 0
        b, h, d = self.shape
        dense = self.seen - self.pruned
        return 2 * b * h * (self.pruned * sparse_row_bytes(d, self.keep, self.elem) + dense * d * self.elem)
