"""AWQ (Lin et al., 2023): protect the weights that meet large activations by scaling.

For a set of linears reading the same input ``x`` (q/k/v after the input norm, gate/up
after the post-attention norm, down after up), multiply their input columns by
``s = mean|x|^alpha`` and divide the producer of ``x`` by ``s`` (the norm's weight, or
up_proj's rows): the product is unchanged in full precision, but salient columns get a
finer grid once quantized. ``alpha`` is searched on a grid per set, minimising the set's
output error ``||x W^T - (x/s) Q(W s)^T||`` on calibration inputs; then every linear is
quantized round-to-nearest. o_proj is scaled through v_proj only when their widths match
(no grouped-query attention); otherwise it is quantized without a scale.

Simplifications, stated: the search loss is the linears' own outputs (the paper uses the
output of the enclosing module), and the paper's per-group clipping search is not done.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import nn

from ..layerwise import Block
from .base import Codes, QuantMethod
from .config import QuantConfig
from .grid import Grid, dequantize, quantize_rtn


class AwqConfig(QuantConfig):
    """Grid options plus ``n_grid`` (alpha values tried in [0, 1]) and ``max_tokens``
    (calibration tokens per input used in the search)."""

    n_grid: int = Field(20, ge=1, le=200, description="alpha grid points in [0, 1)")
    max_tokens: int = Field(4096, ge=16, description="calibration tokens per search")


def fake_quant(w: torch.Tensor, grid: Grid) -> torch.Tensor:
    q, s, o = quantize_rtn(w, grid)
    return dequantize(q, s, o, grid.group_of(w.shape[1]))


@torch.no_grad()
def search_scale(x: torch.Tensor, weights: list[torch.Tensor], grid: Grid, n_grid: int) -> tuple[torch.Tensor, float]:
    """Best per-input-column scale for linears sharing input ``x`` [T, K], and its alpha."""
    w = torch.cat([wi.float() for wi in weights], dim=0)
    x = x.float()
    ref = x @ w.t()
    salience = x.abs().mean(0).clamp(min=1e-8)
    best: tuple[float, torch.Tensor, float] | None = None
    for step in range(n_grid):
        alpha = step / n_grid
        s = salience.pow(alpha)
        s = s / (s.max() * s.min()).sqrt()
        out = (x / s) @ fake_quant(w * s, grid).t()
        loss = float((out - ref).pow(2).mean())
        if best is None or loss < best[0]:
            best = (loss, s, alpha)
    assert best is not None
    return best[1], best[2]


def _capture_inputs(block: Block, names: list[str], max_tokens: int, seed: int) -> dict[str, torch.Tensor]:
    got: dict[str, list[torch.Tensor]] = {n: [] for n in names}

    def hook_for(n: str) -> Any:
        def hook(_m: nn.Module, args: tuple[Any, ...]) -> None:
            got[n].append(args[0].detach().reshape(-1, args[0].shape[-1]).float())
        return hook

    handles = [block.module.get_submodule(n).register_forward_pre_hook(hook_for(n)) for n in names]
    try:
        block.forward()
    finally:
        for h in handles:
            h.remove()
    out = {}
    gen = torch.Generator().manual_seed(seed)
    for n, parts in got.items():
        x = torch.cat(parts)
        if x.shape[0] > max_tokens:
            x = x[torch.randperm(x.shape[0], generator=gen)[:max_tokens].to(x.device)]
        out[n] = x
    return out


def scale_sets(block: nn.Module) -> list[tuple[str, list[str]]]:
    """(producer, consumers): the producer's output is the consumers' common input."""
    sets = [("input_layernorm", ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]),
            ("post_attention_layernorm", ["mlp.gate_proj", "mlp.up_proj"]),
            ("mlp.up_proj", ["mlp.down_proj"])]
    v = block.get_submodule("self_attn.v_proj")
    o = block.get_submodule("self_attn.o_proj")
    if v.out_features == o.in_features:
        sets.append(("self_attn.v_proj", ["self_attn.o_proj"]))
    return sets


def divide_producer(producer: nn.Module, s: torch.Tensor) -> None:
    with torch.no_grad():
        if isinstance(producer, nn.Linear):
            producer.weight.div_(s.unsqueeze(1).to(producer.weight.dtype))
            if producer.bias is not None:
                producer.bias.div_(s.to(producer.bias.dtype))
        else:  # a norm with an elementwise weight
            producer.weight.div_(s.to(producer.weight.dtype))


class Awq(QuantMethod):
    name = "awq"
    description = "AWQ: activation-aware per-channel scaling searched on calibration data, then group RTN."
    paper = "https://arxiv.org/abs/2306.00978"
    Config = AwqConfig
    config: AwqConfig
    needs_calibration = True

    def check_model(self, model: nn.Module) -> None:
        super().check_model(model)
        from ..layerwise import decoder_blocks

        block = decoder_blocks(model)[0]
        for producer, consumers in scale_sets(block):
            for name in [producer, *consumers]:
                try:
                    block.get_submodule(name)
                except AttributeError:
                    raise ValueError(f"awq: the decoder block has no '{name}'; AWQ's scale folding supports "
                                     "Llama/Qwen/Mistral-style blocks") from None

    def quantize_block(self, block: Block) -> dict[str, Codes]:
        cfg = self.config
        sets = scale_sets(block.module)
        xs = _capture_inputs(block, [c[0] for _, c in sets], cfg.max_tokens, seed=block.index)
        scales = []
        for producer, consumers in sets:
            weights = [block.module.get_submodule(c).weight for c in consumers]
            s, _alpha = search_scale(xs[consumers[0]], weights, cfg.grid, cfg.n_grid)
            scales.append((producer, consumers, s))
        for producer, consumers, s in scales:  # all searched on the unscaled block, then applied
            divide_producer(block.module.get_submodule(producer), s)
            for c in consumers:
                w = block.module.get_submodule(c).weight
                with torch.no_grad():
                    w.mul_(s.unsqueeze(0).to(w.dtype))
                self.input_scales[c] = s
        return {n: quantize_rtn(lin.weight.detach().float(), cfg.grid) for n, lin in block.linears.items()}
