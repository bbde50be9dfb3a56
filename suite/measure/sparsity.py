"""Weight sparsity measured on the model (never taken from what a method claims)."""

from __future__ import annotations

from typing import Any


def is_packed_linear(mod: Any) -> bool:
    """A linear layer a method replaced by a packed form (a sparse or quantized kernel module).

    Such modules hold no dense ``weight``; they say what they hold through
    ``weight_zero_count() -> (zeros, total)``, counted from the packed tensors, and keep
    those tensors as buffers (the harness never imports kernels, so this is duck-typed).
    """
    return callable(getattr(mod, "weight_zero_count", None))


def decoder_linears(model: Any) -> dict[str, Any]:
    """Linear layers inside the transformer blocks (not embeddings, not the LM head),
    dense or packed."""
    import torch

    layers = _blocks(model)
    out = {}
    for i, block in enumerate(layers):
        for name, mod in block.named_modules():
            if isinstance(mod, torch.nn.Linear) or is_packed_linear(mod):
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
        if is_packed_linear(lin):
            z, n = lin.weight_zero_count()
            zeros, total = zeros + z, total + n
            continue
        w = lin.weight
        zeros += int((w == 0).sum())
        total += w.numel()
    return (zeros / total if total else 0.0), zeros, total
