"""Weight sparsity measured on the model (never taken from what a method claims)."""

from __future__ import annotations

from typing import Any


def decoder_linears(model: Any) -> dict[str, Any]:
    """Linear layers inside the transformer blocks (not embeddings, not the LM head)."""
    import torch

    layers = _blocks(model)
    out = {}
    for i, block in enumerate(layers):
        for name, mod in block.named_modules():
            if isinstance(mod, torch.nn.Linear):
                out[f"layers.{i}.{name}"] = mod
    return out


def _blocks(model: Any) -> Any:
    inner = getattr(model, "model", model)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise TypeError(f"{type(model).__name__} has no .model.layers: not a decoder-only LM we know")
    return layers


def weight_sparsity(model: Any) -> tuple[float, int, int]:
    """Fraction of exact zeros over all decoder linear weights, with zero and total counts."""
    zeros = total = 0
    for lin in decoder_linears(model).values():
        w = lin.weight
        zeros += int((w == 0).sum())
        total += w.numel()
    return (zeros / total if total else 0.0), zeros, total
