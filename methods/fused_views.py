"""Sibling layers' tensors concatenated into one, each layer keeping a view of its slice: what
a method module's ``fuse_siblings_`` (``sparsebench.measure.fuse``) does with its weights, so
the fused product reads one tensor and the model's stored bytes do not change; and the undo,
which gives every layer a contiguous tensor of its own again.
"""

from __future__ import annotations

import torch
from torch import nn


def mixed_bias(mods: list[nn.Module]) -> bool:
    """Whether some of the layers have a bias and others not (they cannot share one)."""
    return len({m.bias is None for m in mods}) > 1


@torch.no_grad()
def concat_as_views_(mods: list[nn.Module], dims: dict[str, int]) -> dict[str, torch.Tensor | None]:
    """For each attribute name -> dimension, the layers' tensors concatenated along it; each
    layer's attribute becomes its slice of that (a ``Parameter`` stays one: only a Parameter
    may replace a registered parameter). A name the layers hold as None maps to None."""
    out: dict[str, torch.Tensor | None] = {}
    for name, dim in dims.items():
        parts = [getattr(m, name) for m in mods]
        if parts[0] is None:
            out[name] = None
            continue
        whole = torch.cat(parts, dim=dim)
        start = 0
        for m, part in zip(mods, parts, strict=True):
            view = whole.narrow(dim, start, part.shape[dim])
            setattr(m, name, nn.Parameter(view, requires_grad=False) if isinstance(part, nn.Parameter) else view)
            start += part.shape[dim]
        out[name] = whole
    return out


@torch.no_grad()
def own_copies_(mods: list[nn.Module], names: tuple[str, ...]) -> None:
    """Give each layer a contiguous copy of its own for every named tensor (undoes
    ``concat_as_views_``)."""
    for m in mods:
        for name in names:
            t = getattr(m, name)
            if t is None:
                continue
            copy = t.clone(memory_format=torch.contiguous_format)
            setattr(m, name, nn.Parameter(copy, requires_grad=False) if isinstance(t, nn.Parameter) else copy)
