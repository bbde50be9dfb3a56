"""StreamingLLM, MInference, Quest and TidalDecode as attention patterns.

One mechanism for all (``attention.py``): the model is switched to the attention function
registered as ``sparsebench_sparse_attn``, and each attention module gets a handler
(``layers.py``) saying what its layer computes. Weights and the KV cache are untouched; the
record reports the density the patterns reached while the tasks ran (``report``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from sparsebench.api import ApplyContext, Method, MethodResult, Metric
from sparsebench.kernels.dispatch import choose_impl

from . import ops
from .attention import (
    NAME,
    DensityStats,
    LayerHandler,
    attention_modules,
    check_supported,
    install,
    installed_handlers,
)
from .calibrate import RecallProbe, choose_patterns
from .config import (
    MInferenceConfig,
    QuestConfig,
    SparseAttentionConfig,
    StreamingConfig,
    TidalDecodeConfig,
)
from .layers import MInferenceHandler, QuestHandler, StreamingHandler, TidalHandler, TidalState

REF = "pure PyTorch reference (fp32 softmax over the explicit mask; computes every score)"


def _layers(model: Any) -> list[int]:
    return [m.layer_idx for m in attention_modules(model)]


class SparseAttention(Method):
    """Base of the family: build handlers, install them, count while the tasks run."""

    family = "sparse_attention"
    Config = SparseAttentionConfig
    #: phases where the method's pattern applies (the others are dense by design)
    phases: ClassVar[tuple[str, ...]] = ("prefill", "decode")
    #: what runs in each sparse phase (the record's ``kernels``)
    phase_ops: ClassVar[dict[str, str]] = {}
    #: whether a fast kernel serves the method's heavy calls
    fast_kernel: ClassVar[bool] = False

    def check_model(self, model: Any) -> None:
        check_supported(model)

    def save_unsupported_reason(self) -> str | None:
        return ("a sparse-attention pattern is an attention function installed at run time, not weights; "
                "the saved model would be the dense model")

    def build(self, model: Any, ctx: ApplyContext, stats: DensityStats,
              result: MethodResult) -> dict[int, LayerHandler]:
        raise NotImplementedError

    def apply_(self, model: Any, ctx: ApplyContext) -> MethodResult:
        self.check_model(model)
        result = MethodResult()
        stats = DensityStats()
        handlers = self.build(model, ctx, stats, result)
        install(model, handlers)
        stats.counting = True  # from now on: the evaluation text
        if ctx.kernel == "fast" and not self.fast_kernel:
            result.notes.append(f"kernel 'fast': {self.name} has no fast sparse-attention kernel wired yet; "
                                "the reference ran")
        result.kernels["attention"] = f"{NAME} ({self.name})"
        for p in ("prefill", "decode"):  # what build() said ran wins over the class's description
            result.kernels.setdefault(f"attention_{p}", self.phase_ops.get(p, "dense (transformers sdpa)"))
        return result

    def kernel_impl(self, ctx: ApplyContext, result: MethodResult, model: Any) -> str:
        """The block-sparse kernel's ``impl`` for the run's kernel choice (``ref`` when the kernel
        is missing, ``fast`` cannot run here, or the kernel cannot take the head dim: with a note)."""
        if ctx.kernel == "ref":
            return "ref"
        if ops.block_sparse_kernel() is None:
            if ctx.kernel == "fast":
                result.notes.append(f"kernel 'fast': kernels.block_sparse_attn is unavailable; {self.name} ran "
                                    "the reference")
            return "ref"
        if ctx.kernel == "fast":
            try:
                impl = choose_impl("triton", torch.empty(0, device=ctx.device))
            except RuntimeError as exc:
                result.notes.append(f"kernel 'fast' unavailable for {self.name}'s prefill ({exc}); the reference ran")
                return "ref"
        else:
            impl = choose_impl("auto", torch.empty(0, device=ctx.device))
        why = ops.kernel_unsupported(attention_modules(model)[0].head_dim) if impl != "ref" else None
        if why is not None:
            result.notes.append(f"{self.name}: the block-sparse kernel cannot run ({why}); the reference ran")
            return "ref"
        return impl

    def report(self, model: Any) -> dict[str, Metric]:
        handlers = installed_handlers(model)
        if not handlers:
            return {}
        stats: DensityStats = handlers[0].stats
        stats.counting = False  # latency runs next: no bookkeeping in timed (or captured) calls
        out: dict[str, Metric] = {}
        for phase in stats.PHASES:
            calls = stats.calls[phase]
            if not calls:
                continue
            out[f"attention_density_{phase}_mean"] = Metric(value=float(stats.sum[phase]) / calls, n=calls)
            if stats.pattern_given[phase]:  # the kernel computed more pairs than the pattern holds
                out[f"attention_density_{phase}_pattern_mean"] = Metric(
                    value=float(stats.pattern_sum[phase]) / calls, n=calls)
            if phase not in self.phases:
                continue
            sc = stats.sparse_calls[phase]
            if sc and sc != calls:
                out[f"attention_density_{phase}_sparse_layers_mean"] = Metric(
                    value=float(stats.sparse_sum[phase]) / sc, n=sc)
            out[f"attention_{phase}_forwards"] = Metric(value=stats.forwards[phase])
            out[f"attention_{phase}_dense_forwards"] = Metric(value=stats.dense_forwards[phase])
        return out


class Streaming(SparseAttention):
    name = "streaming"
    description = ("StreamingLLM as an attention pattern: every query attends the first `sinks` tokens "
                   "and the last `window` tokens (prefill and decode); the KV cache stays full.")
    paper = "https://arxiv.org/abs/2309.17453"
    Config = StreamingConfig
    config: StreamingConfig
    phase_ops = {"prefill": f"streaming_attention: {REF}", "decode": f"streaming_attention: {REF}"}
    fast_kernel = True  # fresh causal prefills: kernels.block_sparse_attn with sinks/window; decode: reference

    def check_model(self, model: Any) -> None:
        check_supported(model)
        limit = getattr(model.config, "max_position_embeddings", None)
        if isinstance(limit, int) and self.config.window > limit:
            raise ValueError(f"window={self.config.window} is longer than the model's context of {limit} "
                             "positions (config.max_position_embeddings); it would never be reached. "
                             f"Use a window <= {limit}")

    def build(self, model: Any, ctx: ApplyContext, stats: DensityStats,
              result: MethodResult) -> dict[int, LayerHandler]:
        c = self.config
        layers = _layers(model)
        impl = self.kernel_impl(ctx, result, model)
        if impl != "ref":
            head_dim = attention_modules(model)[0].head_dim
            result.kernels["attention_prefill"] = (
                f"streaming_prefill: {ops.describe_block_sparse(impl, ctx.device, head_dim, ops.STREAM_BLOCK)}, "
                f"sink blocks + window band, token mask sinks={c.sinks} window={c.window} in the edge blocks "
                f"(fresh causal prefills; chunked/static-cache prefills: {REF})")
        return {i: StreamingHandler(i, stats, c.sinks, c.window, first=i == layers[0], impl=impl) for i in layers}


class MInference(SparseAttention):
    name = "minference"
    description = ("MInference: per-head pattern (A-shape, vertical-slash, block-sparse) chosen on the "
                   "calibration text; indices estimated online at each long prefill; decode dense.")
    paper = "https://arxiv.org/abs/2407.02490"
    Config = MInferenceConfig
    config: MInferenceConfig
    needs_calibration = True
    phases = ("prefill",)
    phase_ops = {"prefill": f"vertical_slash_prefill: {REF}; A-shape/block-sparse heads: see attention_prefill_blocks"}
    fast_kernel = True  # every head through kernels.block_sparse_attn (vertical-slash as the blocks it touches)

    def build(self, model: Any, ctx: ApplyContext, stats: DensityStats,
              result: MethodResult) -> dict[int, LayerHandler]:
        c = self.config
        if not ctx.calibration:
            raise ValueError("minference needs calibration batches (ApplyContext.calibration)")
        layers = _layers(model)
        probes = {i: RecallProbe(i, c.patterns, c.density, c.last_q, c.block_size) for i in layers}
        install(model, probes)
        device = next(model.parameters()).device
        with torch.inference_mode():
            for batch in ctx.progress(ctx.calibration, desc="choosing minference head patterns",
                                      total=len(ctx.calibration)):
                model(input_ids=batch.to(device), use_cache=False)
        heads, chosen = choose_patterns(probes, c.patterns)
        for p in c.patterns:
            result.metrics[f"minference_heads_{p}"] = Metric(value=sum(len(h[p]) for h in heads.values()))
        recall = torch.cat(list(chosen.values()))
        result.metrics["minference_calibration_recall_mean"] = Metric(value=float(recall.mean()), n=recall.numel())
        seq = ctx.calibration[0].shape[-1]
        if seq < c.min_length:
            result.notes.append(f"minference: patterns chosen on calibration rows of {seq} tokens, shorter than "
                                f"min_length={c.min_length} (prompts of that length are prefilled densely)")
        impl = self.kernel_impl(ctx, result, model)
        head_dim = attention_modules(model)[0].head_dim
        result.kernels["attention_prefill_blocks"] = ops.describe_block_sparse(impl, ctx.device, head_dim,
                                                                               c.block_size)
        if impl != "ref":
            result.kernels["attention_prefill"] = (
                "every head in one block_sparse_prefill call (see attention_prefill_blocks); vertical-slash heads "
                "as the blocks their columns/diagonals touch (a superset of the pairs: density counts the blocks)")
        return {i: MInferenceHandler(i, stats, heads[i], c.density, c.last_q, c.block_size, c.min_length,
                                     first=i == layers[0], impl=impl) for i in layers}


class Quest(SparseAttention):
    name = "quest"
    description = ("Quest: at decode, pages of keys scored by the upper bound sum_d max(q_d min_d, q_d max_d); "
                   "each query head attends its top pages within the budget; prefill dense.")
    paper = "https://arxiv.org/abs/2406.10774"
    Config = QuestConfig
    config: QuestConfig
    phases = ("decode",)
    phase_ops = {"decode": f"page_decode (top-k pages): {REF}"}

    def check_model(self, model: Any) -> None:
        check_supported(model)
        n = len(_layers(model))
        if self.config.dense_layers >= n:
            raise ValueError(f"dense_layers={self.config.dense_layers} leaves none of the model's {n} layers "
                             f"sparse; use dense_layers < {n}")

    def build(self, model: Any, ctx: ApplyContext, stats: DensityStats,
              result: MethodResult) -> dict[int, LayerHandler]:
        c = self.config
        layers = _layers(model)
        first = layers[c.dense_layers]
        return {i: QuestHandler(i, stats, c.page_size, c.budget, c.budget_unit, sparse_layer=i >= first,
                                first=i == first) for i in layers}


class TidalDecode(SparseAttention):
    name = "tidaldecode"
    description = ("TidalDecode: full attention in a few token-selection layers that pick each head's top-k "
                   "positions; the layers after them attend only those positions; prefill dense.")
    paper = "https://arxiv.org/abs/2410.05076"
    Config = TidalDecodeConfig
    config: TidalDecodeConfig
    phases = ("decode",)
    phase_ops = {"decode": f"sparse_decode (selected positions): {REF}"}

    def selection_layers(self, n_layers: int) -> tuple[int, ...]:
        if self.config.selection_layers is not None:
            return self.config.selection_layers
        return tuple(sorted({min(2, n_layers - 1), n_layers // 2}))

    def check_model(self, model: Any) -> None:
        check_supported(model)
        n = len(_layers(model))
        sel = self.selection_layers(n)
        bad = [i for i in sel if i >= n]
        if bad:
            raise ValueError(f"selection_layers={list(sel)} names layers {bad} but the model has {n} layers "
                             f"(0..{n - 1})")
        if not [i for i in range(n) if i > sel[0] and i not in sel]:
            raise ValueError(f"selection_layers={list(sel)} leaves no layer after the first selection layer "
                             f"to reuse its positions (the model has {n} layers)")

    def build(self, model: Any, ctx: ApplyContext, stats: DensityStats,
              result: MethodResult) -> dict[int, LayerHandler]:
        c = self.config
        layers = _layers(model)
        sel = set(self.selection_layers(len(layers)))
        state = TidalState()
        first_reuse = next(i for i in layers if i > min(sel) and i not in sel)
        handlers: dict[int, LayerHandler] = {}
        for i in layers:
            role = "dense" if i < min(sel) else "select" if i in sel else "reuse"
            handlers[i] = TidalHandler(i, stats, role, state, c.budget, c.budget_unit, first=i == first_reuse)
        result.notes.append(f"tidaldecode: selection layers {sorted(sel)}; layers before {min(sel)} decode densely")
        return handlers

