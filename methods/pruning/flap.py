"""Structured pruning after FLAP (An et al., 2024): whole MLP channels and attention heads are
removed, so the model really shrinks, chosen by how much their removal disturbs the output.

Removing input channel ``c`` of an output projection (``down_proj`` for MLP channels,
``o_proj`` for the channels of an attention head) and adding the channel's mean
contribution ``W[:, c] * mean(x_c)`` to the projection's bias changes the block output by
``W[:, c] * (x_c - mean(x_c))``, whose expected squared norm is the *fluctuation* score

    score(c) = Var(x_c) * ||W[:, c]||^2      (calibration tokens, this block's inputs).

Without the bias compensation the score is ``E[x_c^2] * ||W[:, c]||^2``. A head's score is
the sum over its channels; heads are removed by whole KV group (the group's key/value head
and the query heads that read it), so grouped-query attention stays consistent.

Every decoder block loses the same fraction ``ratio`` of its linear parameters (or its
``layer_ratio`` override): its units (MLP channels and KV groups) are taken in increasing
order of score per parameter, skipping any that would pass the budget, and at least one
channel and one KV group are kept. The gate/up rows, down columns, q/k/v rows and o columns
are sliced out of the ``nn.Linear`` weights; blocks are calibrated in order by the shared
layer-wise machinery, each on the outputs of the already-shrunk blocks before it.

The model keeps running (forward, KV-cache decode), but its blocks have different widths,
which a transformers config cannot express, and the compensation adds biases Llama's
projections do not declare: ``--save-model`` is refused for this method.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field, field_validator, model_validator
from torch import nn

from sparsebench.api import ApplyContext, Method, MethodConfig, MethodResult, Metric

from ..layerwise import Block, InputStats, decoder_blocks, process_layerwise
from .config import _layer_sparsity_pairs, layer_matches


class FLAPConfig(MethodConfig):
    """``ratio``: fraction of each decoder block's linear parameters removed.
    ``layer_ratio``: per-block overrides, glob on block names ``layers.<i>`` -> ratio (last match wins).
    ``prune_heads``: also remove attention heads (by KV group); otherwise MLP channels only.
    ``bias_compensation``: add the removed channels' mean contribution to the projection bias.
    """

    ratio: float = Field(0.2, description="fraction of decoder-block linear parameters removed, in (0, 1)")
    layer_ratio: tuple[tuple[str, float], ...] = Field(
        (), description='per-block ratio, JSON object of glob on "layers.<i>" -> ratio (last match wins)')
    prune_heads: bool = Field(True, description="also remove attention heads, by whole KV group")
    bias_compensation: bool = Field(True, description="add removed channels' mean output to the bias")

    @model_validator(mode="before")
    @classmethod
    def _pairs(cls, data: Any) -> Any:
        if isinstance(data, dict) and "layer_ratio" in data:
            data = {**data, "layer_ratio": _layer_sparsity_pairs(data["layer_ratio"])}
        return data

    @field_validator("ratio")
    @classmethod
    def _ratio(cls, v: float) -> float:
        if not 0.0 < v < 1.0:
            raise ValueError(f"ratio must be in (0, 1) (the fraction of block parameters removed), got {v:g}")
        return v

    @field_validator("layer_ratio")
    @classmethod
    def _layer_ratio(cls, v: tuple[tuple[str, float], ...]) -> tuple[tuple[str, float], ...]:
        for pat, r in v:
            if not 0.0 <= r < 1.0:
                raise ValueError(f"layer_ratio[{pat!r}] must be in [0, 1), got {r:g}")
        return v

    def ratio_of(self, block: str) -> float:
        out = self.ratio
        for pat, r in self.layer_ratio:
            if layer_matches(block, pat):
                out = r
        return out


_MLP = ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
_ATTN = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")


def _numel(lin: nn.Linear) -> int:
    return lin.weight.numel() + (lin.bias.numel() if lin.bias is not None else 0)


def _slice_(lin: nn.Linear, keep: torch.Tensor, dim: int) -> None:
    """Keep only rows (``dim=0``, outputs) or columns (``dim=1``, inputs) ``keep`` of ``lin``."""
    with torch.no_grad():
        lin.weight = nn.Parameter(lin.weight.index_select(dim, keep).clone(), requires_grad=False)
        if dim == 0:
            if lin.bias is not None:
                lin.bias = nn.Parameter(lin.bias.index_select(0, keep).clone(), requires_grad=False)
            lin.out_features = keep.numel()
        else:
            lin.in_features = keep.numel()


def _remove_inputs_(lin: nn.Linear, keep: torch.Tensor, removed: torch.Tensor,
                    stats: InputStats, compensate: bool) -> None:
    """Slice input columns of an output projection, folding the removed ones' mean into its bias."""
    if compensate and removed.numel():
        w = lin.weight.detach().float()
        shift = w[:, removed] @ stats.mean.to(w.device)[removed]
        with torch.no_grad():
            old = lin.bias.detach().float() if lin.bias is not None else torch.zeros_like(shift)
            lin.bias = nn.Parameter((old + shift).to(lin.weight.dtype), requires_grad=False)
    _slice_(lin, keep, 1)


class FLAP(Method):
    name = "flap"
    family = "pruning"
    description = ("Structured pruning: removes whole MLP channels and attention KV groups by input "
                   "fluctuation x output-weight norm, with bias compensation; the model shrinks.")
    paper = "https://arxiv.org/abs/2312.11983"
    Config = FLAPConfig
    config: FLAPConfig
    needs_calibration = True
    _layout: ClassVar[tuple[str, ...]] = _MLP + _ATTN

    def save_unsupported_reason(self) -> str | None:
        return ("flap leaves blocks of different widths (and output biases with bias_compensation), "
                "which a transformers config cannot describe, so the saved model would not reload")

    def check_model(self, model: nn.Module) -> None:
        blocks = decoder_blocks(model)
        names = [f"layers.{i}" for i in range(len(blocks))]
        for i, block in enumerate(blocks):
            mods = dict(block.named_modules())
            missing = [n for n in self._layout if not isinstance(mods.get(n), nn.Linear)]
            attn = mods.get("self_attn")
            if missing or not hasattr(attn, "head_dim") or not hasattr(attn, "num_key_value_groups"):
                raise ValueError(
                    f"flap supports Llama-style blocks (mlp.gate/up/down_proj, self_attn.q/k/v/o_proj with "
                    f"head_dim and num_key_value_groups); layers.{i} of {type(model).__name__} lacks "
                    f"{', '.join(missing) or 'the attention attributes'}"
                )
        unused = [p for p, _ in self.config.layer_ratio if not any(layer_matches(n, p) for n in names)]
        if unused:
            raise ValueError(f"layer_ratio pattern(s) {', '.join(map(repr, unused))} match no decoder block; "
                             f"blocks are named layers.0 ... layers.{len(blocks) - 1}")

    def apply_(self, model: nn.Module, ctx: ApplyContext) -> MethodResult:
        self.check_model(model)
        before = sum(p.numel() for p in model.parameters())
        block_before = block_after = heads_removed = channels_removed = 0

        def shrink(block: Block) -> None:
            nonlocal block_before, block_after, heads_removed, channels_removed
            block_before += sum(_numel(block.linears[n]) for n in self._layout)
            ch, gr = self.shrink_block_(block, self.config.ratio_of(f"layers.{block.index}"))
            channels_removed += ch
            heads_removed += gr
            block_after += sum(_numel(block.linears[n]) for n in self._layout)

        process_layerwise(model, ctx, shrink, needs_activations=True, desc="flap: shrinking blocks")
        after = sum(p.numel() for p in model.parameters())
        return MethodResult(
            metrics={
                "model_parameters_after": Metric(value=after, direction="lower"),
                "parameters_removed_fraction": Metric(value=(before - after) / before),
                "block_linear_parameters_removed_fraction": Metric(value=(block_before - block_after) / block_before),
                "mlp_channels_removed": Metric(value=channels_removed),
                "attention_heads_removed": Metric(value=heads_removed),
            },
            kernels={"linear": "torch.nn.Linear (dense GEMM on smaller weights)"},
            notes=[f"flap: {before} -> {after} parameters; blocks have different widths"],
        )

    def shrink_block_(self, block: Block, ratio: float) -> tuple[int, int]:
        """Remove MLP channels and KV groups of one block; returns (channels, query heads) removed."""
        cfg = self.config
        lin = block.linears
        assert block.stats is not None
        gate, up, down = (lin[n] for n in _MLP)
        q, k, v, o = (lin[n] for n in _ATTN)
        attn = block.module.get_submodule("self_attn")
        hd, rep = attn.head_dim, attn.num_key_value_groups
        groups = k.out_features // hd

        def moment(stats: InputStats) -> torch.Tensor:
            return stats.var if cfg.bias_compensation else stats.sq_sum / max(stats.tokens, 1)

        ch_score = moment(block.stats["mlp.down_proj"]) * down.weight.detach().float().pow(2).sum(0)
        o_score = moment(block.stats["self_attn.o_proj"]) * o.weight.detach().float().pow(2).sum(0)
        group_score = o_score.reshape(groups, rep * hd).sum(1)
        ch_cost = gate.in_features + up.in_features + down.out_features + (gate.bias is not None) + (up.bias is not None)
        group_cost = (rep * hd * (q.in_features + o.out_features) + 2 * hd * k.in_features
                      + hd * ((q.bias is not None) * rep + (k.bias is not None) + (v.bias is not None)))
        budget = ratio * sum(_numel(lin[n]) for n in self._layout)

        units = [(float(s) / ch_cost, "ch", i) for i, s in enumerate(ch_score.tolist())]
        if cfg.prune_heads:
            units += [(float(s) / group_cost, "kv", g) for g, s in enumerate(group_score.tolist())]
        units.sort(key=lambda u: (u[0], u[1], u[2]))
        drop: dict[str, list[int]] = {"ch": [], "kv": []}
        limit = {"ch": gate.out_features - 1, "kv": groups - 1}
        cost = {"ch": ch_cost, "kv": group_cost}
        removed = 0
        for _, kind, idx in units:
            if budget - removed < ch_cost:
                break
            if len(drop[kind]) < limit[kind] and removed + cost[kind] <= budget:
                drop[kind].append(idx)
                removed += cost[kind]

        dev = down.weight.device
        if drop["ch"]:
            gone = torch.tensor(sorted(drop["ch"]), device=dev)
            keep = _complement(gate.out_features, gone)
            _slice_(gate, keep, 0)
            _slice_(up, keep, 0)
            _remove_inputs_(down, keep, gone, block.stats["mlp.down_proj"], cfg.bias_compensation)
            mlp = block.module.get_submodule("mlp")
            if hasattr(mlp, "intermediate_size"):
                mlp.intermediate_size = keep.numel()
        if drop["kv"]:
            gone_groups = torch.tensor(sorted(drop["kv"]), device=dev)
            keep_groups = _complement(groups, gone_groups)
            kv_keep = _channels(keep_groups, hd)
            q_keep = _channels(keep_groups, rep * hd)
            q_gone = _channels(gone_groups, rep * hd)
            _slice_(q, q_keep, 0)
            _slice_(k, kv_keep, 0)
            _slice_(v, kv_keep, 0)
            _remove_inputs_(o, q_keep, q_gone, block.stats["self_attn.o_proj"], cfg.bias_compensation)
            for attr, value in (("num_heads", q_keep.numel() // hd), ("num_key_value_heads", keep_groups.numel())):
                if hasattr(attn, attr):
                    setattr(attn, attr, value)
        return len(drop["ch"]), len(drop["kv"]) * rep


def _complement(n: int, gone: torch.Tensor) -> torch.Tensor:
    keep = torch.ones(n, dtype=torch.bool, device=gone.device)
    keep[gone] = False
    return keep.nonzero().flatten()


def _channels(units: torch.Tensor, width: int) -> torch.Tensor:
    """Indices of the ``width`` consecutive channels of each unit in ``units``."""
    return (units.unsqueeze(1) * width + torch.arange(width, device=units.device)).flatten()
