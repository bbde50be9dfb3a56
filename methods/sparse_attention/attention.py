"""The family's one mechanism: an attention function registered in transformers'
``AttentionInterface`` under ``NAME``, the model switched to it, and one handler per layer
stored on each attention module (attribute ``ATTR``) deciding what that layer computes.

- ``sparse_attention_forward`` is what the model calls instead of SDPA: it looks up the
  handler of the calling module; a handler returns the attention output, or ``None`` for
  dense attention, which then runs through transformers' own ``sdpa_attention_forward``
  (the baseline's numerics, bit for bit). A module without a handler is dense too.
- ``sdpa``'s mask function is registered under the same name, so the model builds exactly
  the masks SDPA would get (``None`` for a plain causal prefill or a dynamic-cache decode,
  a bool mask for static caches and chunked prefills).
- The KV cache is untouched: handlers change which keys are attended, never what is stored.
- ``DensityStats`` counts, while ``counting`` is on, the fraction of causal query-key pairs
  computed per prefill call and of context keys attended per decode call (device scalars,
  no host sync per call); where a kernel computes more pairs than the pattern holds
  (MInference's vertical-slash heads at block granularity) it also keeps the pattern's own
  fraction.
- ``uninstall`` takes the handlers off and switches the model back to SDPA (the dense model).
"""

from __future__ import annotations

from typing import Any

import torch

NAME = "sparsebench_sparse_attn"
ATTR = "_sparsebench_sparse_attn"


def _sdpa(module: Any, q: Any, k: Any, v: Any, mask: Any, **kwargs: Any) -> tuple[Any, Any]:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(module, q, k, v, mask, **kwargs)


def sparse_attention_forward(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                             attention_mask: torch.Tensor | None, dropout: float = 0.0,
                             scaling: float | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    handler = getattr(module, ATTR, None)
    if handler is not None and not module.training:
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        out = handler(module, query, key, value, attention_mask, scale)
        if out is not None:
            return out.transpose(1, 2).contiguous(), None
    return _sdpa(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)


def register() -> None:
    """Register the attention function and its mask function (idempotent)."""
    from transformers import AttentionInterface, AttentionMaskInterface

    AttentionInterface.register(NAME, sparse_attention_forward)
    AttentionMaskInterface.register(NAME, AttentionMaskInterface._global_mapping["sdpa"])


# ----------------------------------------------------------------------------- model


def attention_modules(model: Any) -> list[Any]:
    """The model's self-attention modules (those with a ``layer_idx``), in layer order."""
    mods = [m for m in model.modules() if isinstance(getattr(m, "layer_idx", None), int)
            and hasattr(m, "num_key_value_groups") and hasattr(m, "config")]
    return sorted(mods, key=lambda m: m.layer_idx)


def check_supported(model: Any) -> None:
    """Raise ``ValueError`` when the model's attention does not dispatch through the
    ``AttentionInterface`` (then a registered function would never be called)."""
    if not attention_modules(model):
        raise ValueError(f"{type(model).__name__} has no attention modules with a layer_idx "
                         "(a transformers decoder such as Llama/Qwen/Mistral is needed)")
    can_set = getattr(type(model), "_can_set_attn_implementation", None)
    if can_set is not None and not can_set():
        raise ValueError(f"{type(model).__name__} does not dispatch attention through transformers' "
                         "AttentionInterface, so a sparse attention function cannot be installed")


def install(model: Any, handlers: dict[int, Any]) -> None:
    """Put ``handlers[layer_idx]`` on every attention module and switch the model to ``NAME``."""
    register()
    for m in attention_modules(model):
        setattr(m, ATTR, handlers.get(m.layer_idx))
    if model.config._attn_implementation != NAME:
        try:
            model.set_attn_implementation(NAME)
        except (AttributeError, ValueError, KeyError, TypeError):
            pass
        if model.config._attn_implementation != NAME:  # versions without the setter method
            model.config._attn_implementation = NAME
    if model.config._attn_implementation != NAME:
        raise TypeError(f"could not switch {type(model).__name__} to the attention implementation {NAME!r}")


def uninstall(model: Any) -> None:
    """Take every handler off the model and switch it back to transformers' ``sdpa``."""
    for m in attention_modules(model):
        if hasattr(m, ATTR):
            delattr(m, ATTR)
    if model.config._attn_implementation == NAME:
        try:
            model.set_attn_implementation("sdpa")
        except (AttributeError, ValueError, KeyError, TypeError):
            pass
        if model.config._attn_implementation == NAME:
            model.config._attn_implementation = "sdpa"


def installed_handlers(model: Any) -> list[Any]:
    return [h for m in attention_modules(model) if (h := getattr(m, ATTR, None)) is not None]


# ----------------------------------------------------------------------------- masks


class Causal:
    """What the model's mask says about one attention call, in the terms patterns need.

    ``mask is None`` follows SDPA's reading: one query attends every key (decode with a
    dynamic cache, position ``n - 1``); several queries are top-left causal (query ``i`` at
    position ``i``: a fresh prefill, or a static cache's prefill whose tail is still empty).
    A given mask (bool, or additive float) is ``[b|1, 1, nq, n]``; then a query's position is
    its last attended key (no padding: batches are never padded)."""

    def __init__(self, mask: torch.Tensor | None, nq: int, n: int, batch: int, device: torch.device):
        if mask is not None and mask.dtype != torch.bool:
            mask = mask > torch.finfo(mask.dtype).min / 2
        self.mask, self.nq, self.n, self.batch, self.device = mask, nq, n, batch, device

    @property
    def fresh_prefill(self) -> bool:
        """A plain causal prefill of ``n`` tokens (no cache before it)."""
        return self.mask is None and self.nq == self.n

    def q_pos(self) -> torch.Tensor:
        """``[b|1, nq]`` cache positions of the queries."""
        if self.mask is None:
            if self.nq == 1:
                return torch.full((1, 1), self.n - 1, device=self.device)
            return torch.arange(self.nq, device=self.device)[None, :]
        j = torch.arange(self.n, device=self.device)
        return torch.where(self.mask[:, 0], j, -1).amax(-1)

    def valid(self) -> torch.Tensor | None:
        """``[b|1, n]`` keys the last query may attend (None: all)."""
        return None if self.mask is None else self.mask[:, 0, -1]

    def pairs(self) -> torch.Tensor | int:
        """Causal query-key pairs of this call, summed over the batch (per head)."""
        if self.mask is None:
            return self.n * self.batch if self.nq == 1 else self.nq * (self.nq + 1) // 2 * self.batch
        return self.mask.sum() * (self.batch // self.mask.shape[0])


# ----------------------------------------------------------------------------- bookkeeping


class DensityStats:
    """Achieved density per phase, while ``counting``: the mean over attention calls (one call =
    one layer of one forward) of computed pairs / causal pairs, all layers, and over the layers
    where a pattern could apply; plus forwards and forwards that ran dense (counted by the
    first sparse layer's handler: ``first``). ``pattern_sum``: the same mean of the pairs the
    pattern itself holds, where a call said it differs from what was computed
    (``pattern_given``)."""

    PHASES = ("prefill", "decode")

    def __init__(self) -> None:
        self.counting = False
        self.reset()

    def reset(self) -> None:
        self.sum: dict[str, Any] = dict.fromkeys(self.PHASES, 0.0)
        self.calls = dict.fromkeys(self.PHASES, 0)
        self.sparse_sum: dict[str, Any] = dict.fromkeys(self.PHASES, 0.0)
        self.sparse_calls = dict.fromkeys(self.PHASES, 0)
        self.forwards = dict.fromkeys(self.PHASES, 0)
        self.dense_forwards = dict.fromkeys(self.PHASES, 0)
        self.pattern_sum: dict[str, Any] = dict.fromkeys(self.PHASES, 0.0)
        self.pattern_given = dict.fromkeys(self.PHASES, False)

    def record(self, phase: str, attended: Any, total: Any, sparse_layer: bool, pattern: Any = None) -> None:
        """``attended``: pairs computed; ``pattern``: pairs the pattern holds, when fewer."""
        if not self.counting:
            return
        density = attended / total
        if isinstance(density, torch.Tensor):
            density = density.detach().double()
        self.sum[phase] = self.sum[phase] + density
        self.calls[phase] += 1
        if pattern is None:
            self.pattern_sum[phase] = self.pattern_sum[phase] + density
        else:
            own = pattern / total
            self.pattern_sum[phase] = self.pattern_sum[phase] + (
                own.detach().double() if isinstance(own, torch.Tensor) else own)
            self.pattern_given[phase] = True
        if sparse_layer:
            self.sparse_sum[phase] = self.sparse_sum[phase] + density
            self.sparse_calls[phase] += 1

    def forward(self, phase: str, dense: bool) -> None:
        if self.counting:
            self.forwards[phase] += 1
            self.dense_forwards[phase] += int(dense)


class LayerHandler:
    """One layer's behaviour. Subclasses override ``prefill`` / ``decode``: return the output
    ``[b, hq, nq, d]``, or ``None`` for dense attention, and record what they computed."""

    #: does a pattern apply in this layer (False: dense by design, e.g. Quest's first layers)
    sparse_layer = True

    def __init__(self, layer_idx: int, stats: DensityStats, first: bool = False):
        self.layer_idx, self.stats, self.first = layer_idx, stats, first

    def __call__(self, module: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                 mask: torch.Tensor | None, scale: float) -> torch.Tensor | None:
        base = Causal(mask, q.shape[2], k.shape[2], q.shape[0], q.device)
        if q.shape[2] > 1:
            return self.prefill(module, q, k, v, base, scale)
        return self.decode(module, q, k, v, base, scale)

    def prefill(self, module: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, base: Causal,
                scale: float) -> torch.Tensor | None:
        return self.dense("prefill", base, q.shape[1])

    def decode(self, module: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, base: Causal,
               scale: float) -> torch.Tensor | None:
        return self.dense("decode", base, q.shape[1])

    def dense(self, phase: str, base: Causal, heads: int, fallback: bool = False) -> None:
        """Record a dense call; ``fallback``: the pattern applies here but ran dense for this
        input (it covered every pair, or the prompt was too short)."""
        if self.stats.counting:
            total = base.pairs() * heads
            self.stats.record(phase, total, total, self.sparse_layer)
            if self.first:
                self.stats.forward(phase, dense=fallback)
        return None

    def sparse(self, phase: str, base: Causal, heads: int, attended: Any, out: torch.Tensor,
               pattern: Any = None) -> torch.Tensor:
        """Record a call that computed ``attended`` pairs (over batch and heads); ``pattern``:
        the pairs of the pattern itself when the kernel computed more (block granularity)."""
        if self.stats.counting:
            self.stats.record(phase, attended, base.pairs() * heads, self.sparse_layer, pattern)
            if self.first:
                self.stats.forward(phase, dense=False)
        return out
