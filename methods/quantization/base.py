"""What every weight quantization method shares: checks, the block walk, packing, metrics,
and saving the packed model. A method only says how to choose codes for one block."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparsebench.api import ApplyContext, Method, MethodResult, Metric

from ..layerwise import Block, all_linears, process_layerwise
from .config import QuantConfig
from .grid import Grid, dequantize
from .packing import check_width
from .qlinear import PARAM_DTYPE, QuantLinear, set_submodule

Codes = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (codes [N, K] uint8, scale, offset [N, groups])


class QuantMethod(Method):
    family = "quantization"
    Config = QuantConfig
    config: QuantConfig
    needs_hessian = False

    def quantize_block(self, block: Block) -> dict[str, Codes]:
        """Codes for every linear of ``block``. A method that multiplies a linear's input
        columns by ``s`` (and divides the producer of its input, as AWQ does) records ``s``
        in ``self.input_scales[name]``, so the weight error is measured on ``W_q / s``."""
        raise NotImplementedError

    def check_model(self, model: nn.Module) -> None:
        """Refuse widths the grid or the packing cannot hold, before anything is modified."""
        grid = self.config.grid
        for name, lin in all_linears(model).items():
            try:
                grid.groups(lin.in_features)
                check_width(lin.in_features, grid.bits)
            except ValueError as exc:
                raise ValueError(f"{self.name}: cannot quantize {name} (input width {lin.in_features}): {exc}. "
                                 "Choose a smaller group_size, or 0 for one group per output channel.") from None

    def apply_(self, model: nn.Module, ctx: ApplyContext) -> MethodResult:
        self.check_model(model)
        grid = self.config.grid
        err_sq = ref_sq = 0.0
        per_layer: list[float] = []
        fast = set()

        def process(block: Block) -> None:
            nonlocal err_sq, ref_sq
            originals = {n: lin.weight.detach().float().clone() for n, lin in block.linears.items()}
            self.input_scales: dict[str, torch.Tensor] = {}
            chosen = self.quantize_block(block)
            for name, (q, scale, offset) in chosen.items():
                lin = block.module.get_submodule(name)
                # the stored parameters are fp16: measure the error of what is actually held
                w_hat = dequantize(q, scale.to(PARAM_DTYPE), offset.to(PARAM_DTYPE), grid.group_of(q.shape[1]))
                if name in self.input_scales:
                    w_hat = w_hat / self.input_scales[name].float().unsqueeze(0)
                w0 = originals[name]
                e, r = float((w0 - w_hat).pow(2).sum()), float(w0.pow(2).sum())
                err_sq, ref_sq = err_sq + e, ref_sq + r
                per_layer.append((e / r) ** 0.5 if r else 0.0)
                mod = QuantLinear.from_codes(lin, q, scale, offset, grid, kernel=ctx.kernel)
                set_submodule(block.module, name, mod)
                fast.add(mod.grid.bits == 4 and ctx.kernel != "ref" and ctx.device == "cuda")

        process_layerwise(model, ctx, process, needs_activations=self.needs_calibration, hessian=self.needs_hessian,
                          desc=f"{self.name}: quantizing blocks")
        n = len(per_layer)
        groups_bits = 0 if grid.group_size == 0 else 2 * 16 / grid.group_size
        return MethodResult(
            metrics={
                "quantized_linear_layers": Metric(value=n),
                "weight_relative_error": Metric(value=(err_sq / ref_sq) ** 0.5 if ref_sq else 0.0, direction="lower",
                                                n=n),
                "weight_relative_error_layer_mean": Metric(value=sum(per_layer) / n if n else 0.0, direction="lower"),
                "bits_per_weight": Metric(value=grid.bits + groups_bits, direction="lower", unit="bits"),
            },
            kernels={"linear": ("int4_matmul W4A16, tuned per shape and M bucket: CUDA tensor-core "
                                "w4_mma for M <= 16 where NVRTC is found, else Triton; prefill: "
                                "dequantize + cuBLAS") if fast == {True}
                     else "dequantize packed weight + torch.nn.functional.linear (reference)"},
            notes=["weight_relative_error = ||W - W_q|| / ||W|| over all decoder linears, W as loaded; the "
                   "default model's weights are themselves dequantized 4-bit GGUF (Q4_1, groups of 32), so "
                   "4-bit results on it understate the loss a full-precision model would see"],
        )

    # ------------------------------------------------------------------ saving

    def save_model(self, model: nn.Module, tokenizer: Any, path: Path) -> None:
        """Packed weights + a manifest; ``load_quantized(path)`` rebuilds the model."""
        from safetensors.torch import save_file

        path.mkdir(parents=True, exist_ok=True)
        quantized = {n: {"in": m.in_features, "out": m.out_features, "bias": m.bias is not None}
                     for n, m in model.named_modules() if isinstance(m, QuantLinear)}
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        if getattr(model.config, "tie_word_embeddings", False):
            state.pop("lm_head.weight", None)
        save_file(state, str(path / "quantized.safetensors"), metadata={"format": "sparsebench-packed"})
        model.config.save_pretrained(path)
        if tokenizer is not None:
            tokenizer.save_pretrained(path)
        g = self.config.grid
        (path / "quantization.json").write_text(json.dumps({
            "method": self.name, "config": self.config.to_dict(),
            "grid": {"bits": g.bits, "group_size": g.group_size, "symmetric": g.symmetric},
            "modules": quantized, "loader": "sparsebench.methods.quantization.load:load_quantized",
        }, indent=1))


def load_grid(manifest: dict[str, Any]) -> Grid:
    return Grid(**manifest["grid"])
