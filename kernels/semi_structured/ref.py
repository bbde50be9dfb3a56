"""2:4 semi-structured sparsity, the definition (pure PyTorch, fp32 accumulation).

A weight ``W [N, K]`` is 2:4 when every group of 4 consecutive input columns of each row
holds at most 2 nonzeros (what sparse tensor cores and ``methods/pruning`` N:M masks use).
A 2:4 linear layer is simply ``y = x W^T`` on that weight: the sparse kernels only change
how W is stored and read, never the result (beyond summation order and output rounding).

The packed format here is our own, small and explicit, used to define and test what the
2:4 layout holds: per group of 4, the 2 kept values (``values [N, K/2]``, in column order)
and their positions inside the group (``index [N, K/4]`` uint8, ``i0 | i1 << 2``, i0 < i1).
Groups with fewer than 2 nonzeros keep explicit zeros, as the hardware format does.
cuSPARSELt keeps its own opaque layout (see ``cusparselt.py``).
"""

from __future__ import annotations

import torch


def is_2to4(weight: torch.Tensor) -> bool:
    """True when every group of 4 consecutive columns of each row has at most 2 nonzeros."""
    if weight.dim() != 2 or weight.shape[1] % 4:
        return False
    nz = (weight != 0).reshape(weight.shape[0], -1, 4).sum(-1)
    return bool((nz <= 2).all())


def check_2to4(weight: torch.Tensor) -> None:
    """Raise ``ValueError`` saying where ``weight`` breaks the 2:4 pattern."""
    if weight.dim() != 2:
        raise ValueError(f"a 2:4 weight is a 2-D [out, in] matrix, got shape {tuple(weight.shape)}")
    if weight.shape[1] % 4:
        raise ValueError(f"a 2:4 weight needs the input width to be a multiple of 4, got {weight.shape[1]}")
    nz = (weight != 0).reshape(weight.shape[0], -1, 4).sum(-1)
    bad = (nz > 2).nonzero()
    if bad.numel():
        r, g = (int(v) for v in bad[0])
        raise ValueError(f"weight is not 2:4 sparse: {bad.shape[0]} groups of 4 hold more than 2 "
                         f"nonzeros (first: row {r}, columns {4 * g}..{4 * g + 3})")


def compress(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``W [N, K]`` (2:4) -> ``(values [N, K/2], index [N, K/4] uint8)``."""
    check_2to4(weight)
    n, k = weight.shape
    groups = weight.reshape(n, k // 4, 4)
    nz = groups != 0
    # rank the positions: nonzeros first (in column order), then zeros (in column order),
    # and keep the first two, sorted by position so the values stay in column order
    order = torch.arange(4, device=weight.device)
    key = (~nz).to(torch.int64) * 4 + order
    keep = torch.sort(torch.sort(key, dim=-1).indices[..., :2], dim=-1).values
    values = torch.gather(groups, -1, keep).reshape(n, k // 2)
    index = (keep[..., 0] | (keep[..., 1] << 2)).to(torch.uint8)
    return values, index


def decompress(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Inverse of ``compress``: the dense ``W [N, K]`` with zeros where nothing was kept."""
    n, g = index.shape
    idx = index.to(torch.int64)
    pos = torch.stack((idx & 3, (idx >> 2) & 3), dim=-1)
    out = torch.zeros(n, g, 4, dtype=values.dtype, device=values.device)
    out.scatter_(-1, pos, values.reshape(n, g, 2))
    return out.reshape(n, 4 * g)


def semi_structured_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x [..., K] @ W[N, K]^T (+ bias)`` for a 2:4 ``W``, accumulated in fp32, in ``x.dtype``."""
    check_2to4(weight)
    y = x.float() @ weight.float().t()
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype)
