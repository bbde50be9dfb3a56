"""A decode step's RoPE and KV-cache write as one kernel, for the ``+gemv`` decode path
(latency only).

In the compiled 8B-shaped step on an H200, each layer's rotary embedding and cache write
were three kernels (RoPE of q; RoPE of k fused with its ``index_copy_``; the ``index_copy_``
of v): 96 of the step's ~390 launches, each a link in the chain of dependent kernels. While
``folded_rope`` is active, the attention modules of Llama and Qwen2 without a sliding window
(whose forward is the plain project / rotate / cache / attend / project sequence) take a one-token step over a static
cache whose layers share one write position (``cache_length``) through the plugin found
under the ``sparsebench.attention_kernels`` entry point ``rope_cache``: one launch rotates
q and k and writes k and v at that position. Any other call (prefill, a cache that is not
shared) runs the module's own forward.

Before anything is timed one real decode step over a small static cache runs with the fold,
and in every layer the kernel's rotated q and written cache slot are compared with what the
module's own ``apply_rotary_pos_emb`` and cache write give for the same inputs; if any layer
differs by more than ``CHECK_TOL`` it is undone and the label says by how much. Accuracy never sees any of it: the tasks ran before.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ..api import kv_cache_arg
from .cache_length import advance, share, shared_position

KERNEL = "rope_cache"
#: attention classes whose forward the fold reproduces (by class name: the suite imports no model code)
CLASSES = ("LlamaAttention", "Qwen2Attention")
CHECK_TOL = 1e-2  # per layer, relative L2: bf16 RoPE rounded once (kernel) or three times (eager)
_FOLDED: dict[type, type] = {}


def _cache_of(kwargs: dict[str, Any]) -> Any:
    cache = kwargs.get("cache")  # transformers renamed past_key_values -> cache (5.2x)
    return cache if cache is not None else kwargs.get("past_key_values")


def _shared_layer(module: nn.Module, hidden: torch.Tensor, kwargs: dict[str, Any]) -> Any:
    """The cache layer a one-token step writes through the kernel, or None (own forward)."""
    if hidden.dim() != 3 or hidden.shape[1] != 1:
        return None
    layers = getattr(_cache_of(kwargs), "layers", None)
    idx = getattr(module, "layer_idx", None)
    if layers is None or idx is None or idx >= len(layers):
        return None
    layer = layers[idx]
    return layer if shared_position(layer) is not None else None


def _attention_function(module: nn.Module) -> Any:
    impl = module.config._attn_implementation
    if impl == "eager":
        return sys.modules[_original_class(module).__module__].eager_attention_forward
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    return ALL_ATTENTION_FUNCTIONS[impl]


def _original_class(module: nn.Module) -> type:
    cls = type(module)
    return cls.__mro__[1] if cls in _FOLDED.values() else cls


def _folded_forward(self: nn.Module, hidden_states: torch.Tensor, position_embeddings: Any = None,
                    attention_mask: Any = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    layer = _shared_layer(self, hidden_states, kwargs)
    if layer is None or position_embeddings is None:
        return super(type(self), self).forward(hidden_states, position_embeddings=position_embeddings,
                                               attention_mask=attention_mask, **kwargs)
    B = hidden_states.shape[0]
    q = self.q_proj(hidden_states).view(B, -1)
    k = self.k_proj(hidden_states).view(B, -1)
    v = self.v_proj(hidden_states).view(B, -1)
    cos, sin = position_embeddings
    position = shared_position(layer)
    q_rot = self._rope_kernel(q, k, v, cos.reshape(B, -1), sin.reshape(B, -1), layer.keys, layer.values, position)
    if self._rope_check is not None:  # in_situ_check's step (eager)
        self._rope_check.append(_check_layer(self, q, k, v, position_embeddings, layer, int(position), q_rot))
    advance(layer)  # after the write, which read the old value
    # (handing the attention the shared position instead of the model's position ids, to save
    # inductor's position kernel in each layer, measured 4.19 ms against 4.14: not kept)
    rest = {n: a for n, a in kwargs.items() if n not in ("cache", "past_key_values")}
    out, _ = _attention_function(self)(self, q_rot, layer.keys, layer.values, attention_mask, dropout=0.0,
                                       scaling=self.scaling, **rest)
    return self.o_proj(out.reshape(B, 1, -1).contiguous()), None


def _folded_class(cls: type) -> type:
    if cls not in _FOLDED:
        _FOLDED[cls] = type(f"RopeFolded{cls.__name__}", (cls,), {"forward": _folded_forward})
    return _FOLDED[cls]


def _sites(model: nn.Module) -> list[nn.Module]:
    """Attention modules the fold reproduces; a sliding window (Qwen2's option) is not."""
    return [m for m in model.modules() if type(m).__name__ in CLASSES and getattr(m, "sliding_window", None) is None
            and all(hasattr(m, a) for a in ("q_proj", "k_proj", "v_proj", "o_proj", "layer_idx", "scaling"))]


def in_situ_check(model: nn.Module, ids: torch.Tensor, sites: list[nn.Module], prepare: Any) -> float:
    """The largest relative difference, over every folded layer, between what the kernel
    produced in one real decode step (the rotated q, the k and v written to the cache slot)
    and what the module's own ``apply_rotary_pos_emb`` and cache write give for the same
    inputs. The step runs over a static cache filled with ``ids[:, :-1]`` and handed to
    ``prepare`` (which shares its write position); inf when it cannot be shared.

    Judged layer by layer, not on the logits: on a random-weight 8B shape model in bf16 the
    logits move by ~5e-2 from last-bit differences alone (the fused-projection check sees
    4.7e-2), so a step-level comparison can neither pass nor fail there."""
    from transformers import StaticCache

    T = ids.shape[1]
    cache = StaticCache(config=model.config, max_cache_len=T)
    arg = kv_cache_arg(model) or "past_key_values"
    errors: list[float] = []
    with torch.inference_mode():
        model(input_ids=ids[:, :-1], **{arg: cache}, use_cache=True,
              cache_position=torch.arange(T - 1, device=ids.device), logits_to_keep=1)
        if not prepare(cache):
            return float("inf")
        for m in sites:
            m._rope_check = errors
        try:
            model(input_ids=ids[:, -1:], **{arg: cache}, use_cache=True,
                  cache_position=torch.tensor([T - 1], device=ids.device))
        finally:
            for m in sites:
                m._rope_check = None
    return max(errors) if len(errors) == len(sites) else float("inf")


def _check_layer(module: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pe: Any, layer: Any,
                 slot: int, q_rot: torch.Tensor) -> float:
    """``in_situ_check``'s comparison for one layer (eager, outside any compiled graph)."""
    from .spread import rel_err

    B, D = q.shape[0], layer.keys.shape[-1]
    rope = sys.modules[_original_class(module).__module__].apply_rotary_pos_emb
    want_q, want_k = rope(q.view(B, 1, -1, D).transpose(1, 2), k.view(B, 1, -1, D).transpose(1, 2), *pe)
    want_v = v.view(B, 1, -1, D).transpose(1, 2)
    return max(rel_err(q_rot, want_q), rel_err(layer.keys[:, :, slot:slot + 1], want_k),
               rel_err(layer.values[:, :, slot:slot + 1], want_v))


@contextmanager
def folded_rope(model: nn.Module, kernel: Any, check_ids: torch.Tensor | None) -> Iterator[str]:
    """While the block runs, Llama and Qwen2 attention modules rotate and write the cache through
    ``kernel`` on one-token steps over a shared static cache. Yields the record's label, or
    why nothing was folded. ``check_ids``: ``[1, T]`` tokens for the decode-step check (None:
    no check, tests only)."""
    sites = _sites(model)
    if not sites:
        yield "not folded: no Llama or Qwen2 (no sliding window) attention module"
        return
    done: list[nn.Module] = []

    def apply() -> None:
        for m in sites:
            if m not in done:
                m._rope_kernel, m._rope_check = kernel, None
                m.__class__ = _folded_class(type(m))
                done.append(m)

    def undo() -> None:
        for m in done:
            m.__class__ = _original_class(m)
            del m._rope_kernel, m._rope_check
        done.clear()

    label = f"RoPE of q, k and the k/v cache write -> {KERNEL} x{len(sites)}"
    try:
        apply()
        if check_ids is not None:
            err = in_situ_check(model, check_ids, sites, share)
            if not err <= CHECK_TOL:
                undo()
                yield f"not folded: in a checked decode step the kernel differed from the module's RoPE by {err:.1e}"
                return
        yield label
    finally:
        undo()
