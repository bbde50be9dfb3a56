"""A decode step's RoPE and KV-cache write as one kernel, for the ``+gemv`` decode path
(latency only).

In the compiled 8B-shaped step on an H200, each layer's rotary embedding and cache write
were three kernels (RoPE of q; RoPE of k fused with its ``index_copy_``; the ``index_copy_``
of v): 96 of the step's ~390 launches, each a link in the chain of dependent kernels. While
``folded_rope`` is active, the attention modules of Llama (whose forward is the plain
project / rotate / cache / attend / project sequence) take a one-token step over a static
cache whose layers share one write position (``cache_length``) through the plugin found
under the ``sparsebench.attention_kernels`` entry point ``rope_cache``: one launch rotates
q and k and writes k and v at that position. Any other call (prefill, a cache that is not
shared) runs the module's own forward.

Before anything is timed one decode step over a small static cache runs with and without
the fold; the logits and the written cache slots must agree, else it is undone and the
label says by how much. Accuracy never sees any of it: the tasks ran before.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

KERNEL = "rope_cache"
#: attention classes whose forward the fold reproduces (by class name: the suite imports no model code)
CLASSES = ("LlamaAttention",)
CHECK_TOL = 1e-2  # one decode step, bf16 rounding of q and k in one place instead of three
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
    return layer if getattr(layer, "_shared_length", None) is not None else None


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
    shared = layer._shared_length
    q = self._rope_kernel(q, k, v, cos.reshape(B, -1), sin.reshape(B, -1), layer.keys, layer.values,
                          shared.reshape(1))
    if layer._advances_shared:  # after the write, which read the old value
        shared.add_(1)
    rest = {n: a for n, a in kwargs.items() if n not in ("cache", "past_key_values")}
    out, _ = _attention_function(self)(self, q, layer.keys, layer.values, attention_mask, dropout=0.0,
                                       scaling=self.scaling, **rest)
    return self.o_proj(out.reshape(B, 1, -1).contiguous()), None


def _folded_class(cls: type) -> type:
    if cls not in _FOLDED:
        _FOLDED[cls] = type(f"RopeFolded{cls.__name__}", (cls,), {"forward": _folded_forward})
    return _FOLDED[cls]


def _sites(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if type(m).__name__ in CLASSES
            and all(hasattr(m, a) for a in ("q_proj", "k_proj", "v_proj", "o_proj", "layer_idx", "scaling"))]


def decode_step_check(model: nn.Module, ids: torch.Tensor, apply: Any, undo: Any, prepare: Any) -> float:
    """Relative difference of one decode step with the fold against without it (logits and
    the cache slot it wrote, whichever is larger), on a static cache filled with ``ids[:, :-1]``
    and handed to ``prepare`` (which shares its write position). Leaves the fold applied."""
    from transformers import StaticCache

    from .spread import rel_err

    T = ids.shape[1]
    cache = StaticCache(config=model.config, max_cache_len=T)
    with torch.inference_mode():
        model(input_ids=ids[:, :-1], past_key_values=cache, use_cache=True,
              cache_position=torch.arange(T - 1, device=ids.device), logits_to_keep=1)
        if not prepare(cache):
            apply()
            return float("inf")
        saved = [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers]
        length = cache.layers[0].cumulative_length.clone()

        def step() -> tuple[torch.Tensor, torch.Tensor]:
            logits = model(input_ids=ids[:, -1:], past_key_values=cache, use_cache=True,
                           cache_position=torch.tensor([T - 1], device=ids.device)).logits.float()
            slot = torch.cat([torch.cat((layer.keys[:, :, T - 1], layer.values[:, :, T - 1])).flatten()
                              for layer in cache.layers]).float()
            return logits, slot

        undo()
        want = step()
        for layer, (keys, values) in zip(cache.layers, saved, strict=True):
            layer.keys.copy_(keys)
            layer.values.copy_(values)
        cache.layers[0].cumulative_length.copy_(length)  # shared by every layer
        apply()
        got = step()
    return max(rel_err(got[0], want[0]), rel_err(got[1], want[1]))


@contextmanager
def folded_rope(model: nn.Module, kernel: Any, check_ids: torch.Tensor | None) -> Iterator[str]:
    """While the block runs, Llama attention modules rotate and write the cache through
    ``kernel`` on one-token steps over a shared static cache. Yields the record's label, or
    why nothing was folded. ``check_ids``: ``[1, T]`` tokens for the decode-step check (None:
    no check, tests only)."""
    from .cache_length import share

    sites = _sites(model)
    if not sites:
        yield "not folded: no Llama attention module"
        return
    done: list[nn.Module] = []

    def apply() -> None:
        for m in sites:
            if m not in done:
                m._rope_kernel = kernel
                m.__class__ = _folded_class(type(m))
                done.append(m)

    def undo() -> None:
        for m in done:
            m.__class__ = _original_class(m)
            del m._rope_kernel
        done.clear()

    label = f"RoPE of q, k and the k/v cache write -> {KERNEL} x{len(sites)}"
    try:
        if check_ids is not None:
            err = decode_step_check(model, check_ids, apply, undo, share)
            if not err <= CHECK_TOL:
                undo()
                yield f"not folded: the decode-step check moved the logits or cache by {err:.1e} (relative)"
                return
        else:
            apply()
        yield label
    finally:
        undo()
