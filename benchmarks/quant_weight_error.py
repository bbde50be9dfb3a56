"""How far does round-to-nearest move the default model's weights, per bit width and group size?

    python benchmarks/quant_weight_error.py

The embedded default model was dequantized from a 4-bit GGUF (Q4_1: groups of 32, min/max
grid). Its weights therefore already sit on a 4-bit grid of 32-column groups, and an
asymmetric 4-bit RTN with groups of 32 (aligned with those groups) can represent them
almost exactly. This prints ||W - RTN(W)|| / ||W|| over all decoder linears, so nobody
reads a near-zero 4-bit loss on this model as a property of the method.
"""

from __future__ import annotations

import torch

from sparsebench.methods.layerwise import all_linears
from sparsebench.methods.quantization.grid import Grid, dequantize, quantize_rtn
from sparsebench.models.sources import resolve_model


def relative_error(weights: list[torch.Tensor], grid: Grid) -> float:
    err = ref = 0.0
    for w in weights:
        q, s, o = quantize_rtn(w, grid)
        w_hat = dequantize(q, s.half(), o.half(), grid.group_of(w.shape[1]))  # parameters stored as fp16
        err += float((w - w_hat).pow(2).sum())
        ref += float(w.pow(2).sum())
    return (err / ref) ** 0.5


def main() -> None:
    model, _ = resolve_model("llama").load(torch.float32, "cpu")
    weights = [m.weight.detach().float() for m in all_linears(model).values()]
    print("| bits | grid | g32 | g64 | g128 | per channel |")
    print("|---|---|---|---|---|---|")
    for bits in (8, 4, 3, 2):
        for sym in (False, True):
            cells = [f"{relative_error(weights, Grid(bits, g, sym)):.4f}" for g in (32, 64, 128, 0)]
            print(f"| {bits} | {'symmetric' if sym else 'min/max'} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
