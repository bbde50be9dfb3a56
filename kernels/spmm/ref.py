"""Unstructured sparse weight x dense activations: the packed format and the definition.

Format ("bitmask tiles", in the spirit of Flash-LLM's tiled sparse layout): the weight
``W [N, K]`` is cut into tiles of ``tile_n x tile_k`` (rows x input columns, zero-padded
at the edges). Stored are

- ``values``: every nonzero, tile after tile (tile row-major over the grid, then row-major
  inside the tile), so a kernel that walks a row of tiles reads one contiguous stream;
- ``bits``: int32 ``[N_pad, K_pad / 32]``, bit ``j % 32`` of word ``j // 32`` set where
  ``W[n, j] != 0``;
- ``row_start``: int32 ``[N_pad, K_pad / tile_k]``, the index in ``values`` of the first
  nonzero of row n inside k-tile t (so a kernel finds element (n, j) at
  ``row_start[n, t] + popcount of the bits before j inside the tile``).

At 50% sparsity in bf16 this is 1 + 1/8 + 4/tile_k bytes per weight, ~0.57 of dense.
``spmm`` is ``x [M, K] @ W^T`` accumulated in fp32, returned in ``x.dtype``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

TILE_N = 64
TILE_K = 128


@dataclass
class PackedWeight:
    values: torch.Tensor  # [nnz], the weight's dtype
    bits: torch.Tensor  # int32 [N_pad, K_pad // 32]
    row_start: torch.Tensor  # int32 [N_pad, K_pad // tile_k]
    shape: tuple[int, int]  # (N, K)
    tile_n: int = TILE_N
    tile_k: int = TILE_K

    @property
    def nnz(self) -> int:
        return int(self.values.numel())

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.values, self.bits, self.row_start))

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"values": self.values, "bits": self.bits, "row_start": self.row_start}


def _padded(n: int, mult: int) -> int:
    return -(-n // mult) * mult


def pack(weight: torch.Tensor, tile_n: int = TILE_N, tile_k: int = TILE_K) -> PackedWeight:
    """Pack a (pruned) ``weight [N, K]``; zeros are simply not stored."""
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D [out, in], got shape {tuple(weight.shape)}")
    if tile_k % 32:
        raise ValueError(f"tile_k must be a multiple of 32 (one int32 bitmask word), got {tile_k}")
    n, k = weight.shape
    np_, kp = _padded(n, tile_n), _padded(k, tile_k)
    w = torch.zeros(np_, kp, dtype=weight.dtype, device=weight.device)
    w[:n, :k] = weight
    nt, kt = np_ // tile_n, kp // tile_k
    tiles = w.reshape(nt, tile_n, kt, tile_k).permute(0, 2, 1, 3)  # [nt, kt, tile_n, tile_k]
    nz = tiles != 0
    values = tiles[nz]  # boolean indexing keeps the tile-major, row-major order
    counts = nz.sum(-1).reshape(-1)  # per (tile, row), in the order of values
    start = (torch.cumsum(counts, 0) - counts).reshape(nt, kt, tile_n).permute(0, 2, 1).reshape(np_, kt)
    mask = (w != 0).reshape(np_, kp // 32, 32).to(torch.int64)
    words = (mask << torch.arange(32, device=w.device)).sum(-1)
    words = torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)
    return PackedWeight(values=values.contiguous(), bits=words.contiguous(),
                        row_start=start.to(torch.int32).contiguous(), shape=(n, k), tile_n=tile_n, tile_k=tile_k)


def unpack(p: PackedWeight) -> torch.Tensor:
    """The dense ``W [N, K]`` back from its packed form."""
    n, k = p.shape
    np_, kw = p.bits.shape
    kp = kw * 32
    nt, kt = np_ // p.tile_n, kp // p.tile_k
    bits = (p.bits.to(torch.int64).unsqueeze(-1) >> torch.arange(32, device=p.bits.device)) & 1
    nz = bits.reshape(np_, kp).bool()
    tiles_nz = nz.reshape(nt, p.tile_n, kt, p.tile_k).permute(0, 2, 1, 3)
    tiles = torch.zeros(tiles_nz.shape, dtype=p.values.dtype, device=p.values.device)
    tiles[tiles_nz] = p.values
    return tiles.permute(0, 2, 1, 3).reshape(np_, kp)[:n, :k]


def spmm(x: torch.Tensor, p: PackedWeight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x [..., K] @ W^T (+ bias)`` with fp32 accumulation, in ``x.dtype``."""
    y = x.float() @ unpack(p).float().t()
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype)
