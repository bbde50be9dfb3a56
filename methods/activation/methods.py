"""TEAL, CATS, WINA and CHESS: four ways to choose which layer inputs to drop.

One mechanism for all (``modules.py``): thresholds calibrated block by block on the
calibration text (``process_layerwise`` keeps a sample of every linear's input rows),
the block's linears replaced by ``SparseInputLinear`` (and, for CATS/CHESS, the MLP
activation by ``ThresholdedActivation``), the next block calibrated on what the already
sparsified block produces. What differs is only ``plan``: which inputs and which score.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from sparsebench.api import ApplyContext, Method, MethodResult, Metric
from sparsebench.kernels.dispatch import choose_impl
from sparsebench.kernels.sparse_gemv import FAST, describe, fast_order

from ..layerwise import Block, process_layerwise
from .calibrate import greedy_allocation, group_sites, quantile_threshold, scaled_thresholds
from .config import ActivationConfig, CatsConfig, ChessConfig, TealConfig, WinaConfig
from .modules import Threshold, achieved_sparsity, activation_report, install, set_counting

KEEP_ROWS = 4096  # calibration input rows kept per linear for the distributions
MLP_PARTS = ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


@dataclass
class Plan:
    """Thresholds for one block: per linear (name inside the block) and for the MLP activation."""

    linears: dict[str, Threshold] = field(default_factory=dict)
    act: Threshold | None = None


def _mlp(block: Block) -> nn.Module:
    mlp = getattr(block.module, "mlp", None)
    if mlp is None or not all(p in block.linears for p in MLP_PARTS) or not hasattr(mlp, "act_fn"):
        raise TypeError("this method sparsifies a gated MLP (mlp.gate_proj/up_proj/down_proj and "
                        f"mlp.act_fn, as in Llama/Qwen/Mistral); block {block.index} has no such MLP")
    return mlp


def _gate_and_up(block: Block) -> tuple[torch.Tensor, torch.Tensor]:
    """act(gate(x)) and up(x) on the calibration rows of the MLP input."""
    mlp = _mlp(block)
    x = block.stats["mlp.gate_proj"].sample
    with torch.inference_mode():
        gate = block.linears["mlp.gate_proj"]
        up = block.linears["mlp.up_proj"]
        a = mlp.act_fn(x.to(gate.weight.dtype) @ gate.weight.t()).float()
        u = (x.to(up.weight.dtype) @ up.weight.t()).float()
    return a, u


class ActivationSparsity(Method):
    """Base of the family: calibrate thresholds block by block, install, count on evaluation."""

    family = "activation_sparsity"
    Config = ActivationConfig
    config: ActivationConfig
    needs_calibration = True

    def plan(self, block: Block) -> Plan:
        raise NotImplementedError

    def apply_(self, model: nn.Module, ctx: ApplyContext) -> MethodResult:
        notes: list[str] = []
        impl = self._impl(ctx, notes)

        def sparsify(block: Block) -> None:
            p = self.plan(block)
            install(block.module, p.linears, impl, p.act)
            set_counting(block.module, True)  # the forward that feeds the next block is counted

        process_layerwise(model, ctx, sparsify, needs_activations=True, keep_rows=KEEP_ROWS,
                          desc=f"calibrating {self.name} thresholds")
        calib = achieved_sparsity(model)
        set_counting(model, True)  # from now on: the evaluation text
        metrics = {"activation_sparsity_target": Metric(value=self.config.sparsity)}
        if calib:
            metrics["activation_sparsity_calibration_mean"] = Metric(
                value=sum(f for f, _ in calib.values()) / len(calib), n=len(calib))
        return MethodResult(metrics=metrics, kernels={"sparse_linear": describe(impl, ctx.device)}, notes=notes)

    def report(self, model: nn.Module) -> dict[str, Metric]:
        return activation_report(model)

    @staticmethod
    def _impl(ctx: ApplyContext, notes: list[str]) -> str:
        probe = torch.empty(0, device=ctx.device)
        if ctx.kernel == "ref":
            return "ref"
        if ctx.kernel == "fast":
            # the CUDA kernel falls back to Triton (NVRTC or a GPU missing), as auto does
            tried = []
            for impl in fast_order():
                try:
                    return choose_impl(impl, probe, FAST)
                except RuntimeError as exc:
                    tried.append(f"{impl}: {exc}")
            notes.append(f"kernel 'fast' unavailable here ({'; '.join(tried)}); the reference ran")
            return "ref"
        return choose_impl("auto", probe)


class Teal(ActivationSparsity):
    name = "teal"
    description = ("Magnitude thresholds on the hidden states entering every linear layer, "
                   "calibrated per layer (uniform or greedy allocation).")
    paper = "https://arxiv.org/abs/2408.14690"
    Config = TealConfig
    config: TealConfig

    def plan(self, block: Block) -> Plan:
        names = list(block.linears)
        samples = {n: block.stats[n].sample for n in names}
        sites = group_sites(names, samples, {n: block.linears[n].weight.detach() for n in names})
        if self.config.allocation == "greedy":
            levels = greedy_allocation(sites, self.config.sparsity)
        else:
            levels = [self.config.sparsity] * len(sites)
        out = Plan()
        for site, s in zip(sites, levels, strict=True):
            t = quantile_threshold(site.sample.abs(), s)
            out.linears.update({n: t for n in site.names})
        return out


class Cats(ActivationSparsity):
    name = "cats"
    description = ("Threshold on the MLP's SiLU(gate) activations (so on the down_proj input), "
                   "calibrated per layer; attention stays dense.")
    paper = "https://arxiv.org/abs/2404.08763"
    Config = CatsConfig

    def plan(self, block: Block) -> Plan:
        a, _ = _gate_and_up(block)
        return Plan(linears={"mlp.down_proj": 0.0}, act=quantile_threshold(a.abs(), self.config.sparsity))


class Wina(ActivationSparsity):
    name = "wina"
    description = ("Weight-informed selection: drop inputs with small |x_j| x ||W[:, j]||_2, "
                   "one threshold per layer.")
    paper = "https://arxiv.org/abs/2505.19427"
    Config = WinaConfig

    def plan(self, block: Block) -> Plan:
        out = Plan()
        for n, lin in block.linears.items():
            col_norm = lin.weight.detach().float().norm(dim=0)
            out.linears[n] = scaled_thresholds(block.stats[n].sample.abs(), col_norm, self.config.sparsity)
        return out


class Chess(ActivationSparsity):
    name = "chess"
    description = ("Channel-wise thresholds on the MLP's gate activations (score |act(gate)_i| x "
                   "mean |up_i|) plus magnitude thresholds on selected attention inputs.")
    paper = "https://arxiv.org/abs/2409.01366"
    Config = ChessConfig
    config: ChessConfig

    def plan(self, block: Block) -> Plan:
        s = self.config.sparsity
        a, u = _gate_and_up(block)
        out = Plan(linears={"mlp.down_proj": 0.0}, act=scaled_thresholds(a.abs(), u.abs().mean(0), s))
        attention = {"none": (), "o_proj": ("self_attn.o_proj",),
                     "all": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")}
        for n in attention[self.config.attention]:
            if n not in block.stats:
                raise TypeError(f"chess attention={self.config.attention!r} needs {n} in every block; "
                                f"block {block.index} has {sorted(block.linears)}")
            out.linears[n] = quantile_threshold(block.stats[n].sample.abs(), s)
        return out
