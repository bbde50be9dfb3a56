"""Block-by-block calibration shared by every pruning method (one place, not copies).

The calibration tokens are run through the embedding once; the inputs of the first
decoder block are captured. Then, for each block in order:
  1. a forward pass with hooks collects statistics of the inputs of every linear layer,
  2. the method prunes the block's linear layers from those statistics,
  3. a second forward pass through the *pruned* block produces the next block's inputs,
so each block is calibrated on what the already-pruned model actually feeds it (as in
the Wanda and SparseGPT papers). Methods that need no activations skip the passes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sparsebench.api import ApplyContext


class _StopForward(Exception):
    pass


@dataclass
class InputStats:
    """Per-input-column statistics of one linear layer's inputs over all calibration tokens."""

    sq_sum: torch.Tensor  # sum over tokens of x_j^2 (fp32)
    tokens: int = 0

    @property
    def l2(self) -> torch.Tensor:
        """``||X_j||_2`` over all calibration tokens: Wanda's activation norm."""
        return self.sq_sum.sqrt()


def decoder_blocks(model: nn.Module) -> nn.ModuleList:
    inner = getattr(model, "model", None)
    blocks = getattr(inner, "layers", None)
    if not isinstance(blocks, nn.ModuleList):
        raise TypeError(
            f"{type(model).__name__} has no model.layers list; layer-wise pruning supports "
            "decoder-only transformers laid out like Llama/Qwen/Mistral"
        )
    return blocks


def block_linears(block: nn.Module) -> dict[str, nn.Linear]:
    return {n: m for n, m in block.named_modules() if isinstance(m, nn.Linear)}


def capture_block_inputs(
    model: nn.Module, batches: list[torch.Tensor], device: str
) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    """Hidden states entering block 0 for each batch, and the keyword arguments it got."""
    blocks = decoder_blocks(model)
    inputs: list[torch.Tensor] = []
    kwargs: list[dict[str, Any]] = []

    def grab(_mod: nn.Module, args: tuple[Any, ...], kw: dict[str, Any]) -> None:
        hidden = args[0] if args else kw.pop("hidden_states")
        inputs.append(hidden.detach())
        kwargs.append({k: v for k, v in kw.items() if k != "hidden_states"})
        raise _StopForward

    handle = blocks[0].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.inference_mode():
            for ids in batches:
                try:
                    model(input_ids=ids.to(device), use_cache=False)
                except _StopForward:
                    pass
    finally:
        handle.remove()
    return inputs, kwargs


def _run_block(block: nn.Module, hidden: torch.Tensor, kw: dict[str, Any]) -> torch.Tensor:
    out = block(hidden, **kw)
    return out[0] if isinstance(out, tuple) else out


def prune_layerwise(
    model: nn.Module,
    ctx: ApplyContext,
    prune_block: Callable[[int, dict[str, nn.Linear], dict[str, InputStats] | None], None],
    needs_activations: bool,
) -> None:
    """Walk the decoder blocks in order and let ``prune_block`` prune each one in place."""
    blocks = decoder_blocks(model)
    if not needs_activations:
        for i in ctx.progress(range(len(blocks)), desc="pruning blocks", total=len(blocks)):
            prune_block(i, block_linears(blocks[i]), None)
        return
    if not ctx.calibration:
        raise ValueError("this method needs calibration batches but got none")
    hidden, kws = capture_block_inputs(model, ctx.calibration, ctx.device)
    for i in ctx.progress(range(len(blocks)), desc="calibrating blocks", total=len(blocks)):
        block = blocks[i]
        linears = block_linears(block)
        stats = {n: InputStats(torch.zeros(m.in_features, dtype=torch.float32, device=m.weight.device))
                 for n, m in linears.items()}

        def make_hook(acc: InputStats) -> Callable[..., None]:
            def hook(_mod: nn.Module, args: tuple[Any, ...]) -> None:
                x = args[0].detach().reshape(-1, args[0].shape[-1]).float()
                acc.sq_sum += x.pow(2).sum(0)
                acc.tokens += x.shape[0]
            return hook

        handles = [m.register_forward_pre_hook(make_hook(stats[n])) for n, m in linears.items()]
        try:
            with torch.inference_mode():
                for h, kw in zip(hidden, kws, strict=True):
                    _run_block(block, h, kw)
        finally:
            for handle in handles:
                handle.remove()
        prune_block(i, linears, stats)
        with torch.inference_mode():
            hidden = [_run_block(block, h, kw) for h, kw in zip(hidden, kws, strict=True)]
