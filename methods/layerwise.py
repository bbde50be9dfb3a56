"""Block-by-block calibration shared by every method that compresses linear layers from
calibration activations (magnitude, Wanda, SparseGPT, GPTQ, AWQ, ...): one place, not copies.

The calibration tokens are run through the embedding once; the inputs of the first
decoder block are captured. Then, for each block in order:
  1. a forward pass with hooks collects statistics of the inputs of every linear layer
     (sums of x, x^2 and |x| per input column; optionally the full
     second-moment matrix ``X^T X`` that SparseGPT and GPTQ call the Hessian, and a
     strided sample of the input rows themselves, from which activation-sparsity methods
     read distributions such as quantiles of ``|x|``),
  2. the method compresses the block in place, given a ``Block`` view (its linears,
     their input statistics, and the block's own calibration inputs for methods that
     search by re-running the block, such as AWQ),
  3. a second forward pass through the *compressed* block produces the next block's
     inputs, so each block is calibrated on what the already-compressed model feeds it
     (as in the Wanda, SparseGPT and GPTQ papers).
Methods that need no activations skip the passes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
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
    abs_sum: torch.Tensor | None = None  # sum over tokens of |x_j| (fp32)
    xtx: torch.Tensor | None = None  # sum over tokens of x x^T (fp32), when requested
    rows: list[torch.Tensor] | None = None  # every ``row_stride``-th input row (fp32), when requested
    row_stride: int = 1
    x_sum: torch.Tensor | None = None  # sum over tokens of x_j (fp32)

    @property
    def l2(self) -> torch.Tensor:
        """``||X_j||_2`` over all calibration tokens: Wanda's activation norm."""
        return self.sq_sum.sqrt()

    @property
    def mean_abs(self) -> torch.Tensor:
        """Mean ``|x_j|`` per input column: AWQ's activation salience."""
        if self.abs_sum is None:
            raise ValueError("mean |x| was not collected")
        return self.abs_sum / max(self.tokens, 1)

    @property
    def mean(self) -> torch.Tensor:
        """Mean ``x_j`` per input column (signed): DSnoT's expected input, FLAP's compensation."""
        if self.x_sum is None:
            raise ValueError("the signed sum of x was not collected")
        return self.x_sum / max(self.tokens, 1)

    @property
    def var(self) -> torch.Tensor:
        """Variance of ``x_j`` over calibration tokens (population): the input "fluctuation"."""
        mean = self.mean
        return (self.sq_sum / max(self.tokens, 1) - mean * mean).clamp_min(0.0)

    def hessian(self) -> torch.Tensor:
        """``2 X^T X / tokens``: the Hessian of the layer-wise squared reconstruction error."""
        if self.xtx is None:
            raise ValueError("the Hessian was not collected: pass hessian=True to process_layerwise")
        return self.xtx * (2.0 / max(self.tokens, 1))

    @property
    def sample(self) -> torch.Tensor:
        """The kept input rows ``[rows, width]``: a sample of the activation distribution."""
        if not self.rows:
            raise ValueError("input rows were not kept: pass keep_rows to process_layerwise")
        return torch.cat(self.rows)

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).float()
        if self.rows is not None:
            self.rows.append(x[:: self.row_stride].clone())
        self.sq_sum += x.pow(2).sum(0)
        if self.abs_sum is not None:
            self.abs_sum += x.abs().sum(0)
        if self.x_sum is not None:
            self.x_sum += x.sum(0)
        if self.xtx is not None:
            self.xtx.addmm_(x.t(), x)
        self.tokens += x.shape[0]

    @classmethod
    def empty(cls, width: int, device: torch.device | str, hessian: bool = False,
              row_stride: int = 0) -> InputStats:
        """``row_stride`` > 0 also keeps every ``row_stride``-th input row."""
        z = torch.zeros(width, dtype=torch.float32, device=device)
        return cls(sq_sum=z, abs_sum=z.clone(), x_sum=z.clone(),
                   xtx=torch.zeros(width, width, dtype=torch.float32, device=device) if hessian else None,
                   rows=[] if row_stride > 0 else None, row_stride=max(row_stride, 1))


@dataclass
class Block:
    """One decoder block as a method sees it during calibration."""

    index: int
    module: nn.Module
    linears: dict[str, nn.Linear]
    stats: dict[str, InputStats] | None = None
    inputs: list[torch.Tensor] = field(default_factory=list)  # hidden states entering the block
    kwargs: list[dict[str, Any]] = field(default_factory=list)  # the other arguments it got

    def forward(self) -> list[torch.Tensor]:
        """The block's outputs on its calibration inputs, as it is now."""
        with torch.inference_mode():
            return [run_block(self.module, h, kw) for h, kw in zip(self.inputs, self.kwargs, strict=True)]


def decoder_blocks(model: nn.Module) -> nn.ModuleList:
    inner = getattr(model, "model", None)
    blocks = getattr(inner, "layers", None)
    if not isinstance(blocks, nn.ModuleList):
        raise TypeError(
            f"{type(model).__name__} has no model.layers list; layer-wise methods support "
            "decoder-only transformers laid out like Llama/Qwen/Mistral"
        )
    return blocks


def block_linears(block: nn.Module) -> dict[str, nn.Linear]:
    return {n: m for n, m in block.named_modules() if isinstance(m, nn.Linear)}


def all_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """Every linear layer inside the decoder blocks, named ``layers.<i>.<path>``."""
    return {f"layers.{i}.{n}": m for i, b in enumerate(decoder_blocks(model)) for n, m in block_linears(b).items()}


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


def run_block(block: nn.Module, hidden: torch.Tensor, kw: dict[str, Any]) -> torch.Tensor:
    out = block(hidden, **kw)
    return out[0] if isinstance(out, tuple) else out


def collect_input_stats(block: Block, hessian: bool = False, row_stride: int = 0) -> dict[str, InputStats]:
    """Run ``block`` over its calibration inputs and accumulate each linear's input stats."""
    stats = {n: InputStats.empty(m.in_features, m.weight.device, hessian, row_stride)
             for n, m in block.linears.items()}

    def make_hook(acc: InputStats) -> Callable[..., None]:
        def hook(_mod: nn.Module, args: tuple[Any, ...]) -> None:
            acc.add(args[0])
        return hook

    handles = [m.register_forward_pre_hook(make_hook(stats[n])) for n, m in block.linears.items()]
    try:
        block.forward()
    finally:
        for handle in handles:
            handle.remove()
    return stats


def process_layerwise(
    model: nn.Module,
    ctx: ApplyContext,
    process_block: Callable[[Block], None],
    needs_activations: bool,
    hessian: bool = False,
    desc: str = "calibrating blocks",
    keep_rows: int = 0,
) -> None:
    """Walk the decoder blocks in order and let ``process_block`` compress each in place.

    ``keep_rows`` > 0 keeps about that many input rows of every linear (evenly strided over
    all calibration tokens) in ``InputStats.sample``.
    """
    blocks = decoder_blocks(model)
    if not needs_activations:
        for i in ctx.progress(range(len(blocks)), desc="processing blocks", total=len(blocks)):
            process_block(Block(index=i, module=blocks[i], linears=block_linears(blocks[i])))
        return
    if not ctx.calibration:
        raise ValueError("this method needs calibration batches but got none")
    hidden, kws = capture_block_inputs(model, ctx.calibration, ctx.device)
    tokens = sum(h.numel() // h.shape[-1] for h in hidden)
    stride = -(-tokens // keep_rows) if keep_rows > 0 else 0
    for i in ctx.progress(range(len(blocks)), desc=desc, total=len(blocks)):
        block = Block(index=i, module=blocks[i], linears=block_linears(blocks[i]), inputs=hidden, kwargs=kws)
        block.stats = collect_input_stats(block, hessian, stride)
        process_block(block)
        block.stats = None  # free Hessians before the next block
        hidden = block.forward()
