"""Installing a KV-cache method on a model, and the cheap bookkeeping behind ``report``.

``install(model, make_layer)``:
- switches the model to the registered attention function (``attention.NAME``);
- puts one shared ``Binding`` on every attention module;
- adds a forward pre-hook (with kwargs) on the model: a call with ``use_cache`` on (given,
  or the config's default) and no cache gets a fresh ``CompressedCache`` injected under the
  name the model's forward takes (``cache`` in transformers >= 5.2x, ``past_key_values``
  before); a call that passes a cache keeps it. The cache of the call is bound for the
  attention function; a padded attention mask with a compressed cache is refused;
- adds a forward hook that unbinds the cache and records its ``Summary`` in the ``Tally``
  (a few integer sums per layer; caches are not kept alive).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from sparsebench.api import Metric, kv_cache_arg

from .attention import BINDING, NAME, register
from .cache import CompressedCache, KVLayer, Summary

STATE = "_sparsebench_kv_state"


@dataclass
class Binding:
    cache: Any = None


@dataclass
class Tally:
    """The last ``Summary`` of every cache (= generation) created since the install."""

    created: int = 0
    summaries: dict[int, Summary] = field(default_factory=dict)

    def record(self, cache: CompressedCache) -> None:
        self.summaries[cache.serial] = cache.summary()

    def metrics(self) -> dict[str, Metric]:
        rows = [s for _, s in sorted(self.summaries.items()) if s.tokens_seen > 0]
        if not rows:
            return {}

        def frac(s: Summary) -> float:
            return s.bytes_held / s.bytes_full if s.bytes_full else float("nan")

        series = {
            "kv_bytes_held": ([float(s.bytes_held) for s in rows], "lower", "bytes"),
            "kv_bytes_full": ([float(s.bytes_full) for s in rows], "none", "bytes"),
            "kv_fraction_held": ([frac(s) for s in rows], "lower", None),
            "kv_tokens_held": ([s.tokens_held for s in rows], "none", "tokens"),
            "kv_tokens_seen": ([float(s.tokens_seen) for s in rows], "none", "tokens"),
        }
        out: dict[str, Metric] = {}
        for name, (values, direction, unit) in series.items():
            n = len(values)
            mean = sum(values) / n
            se = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n) if n > 1 else None
            out[name] = Metric(value=values[-1], direction=direction, unit=unit)
            out[f"{name}_mean"] = Metric(value=mean, stderr=se, direction=direction, unit=unit, n=n)
        return out


def text_config(model: Any) -> Any:
    cfg = model.config
    return cfg.gettext_config() if hasattr(cfg, "gettext_config") else cfg


def attention_modules(model: Any) -> list[Any]:
    return [m for m in model.modules() if hasattr(m, "layer_idx") and hasattr(m, "k_proj")]


def check_installable(model: Any) -> None:
    """Raise ``ValueError`` when the family cannot run on ``model``."""
    if getattr(model, STATE, None) is not None:
        raise ValueError("a KV-cache method is already installed on this model")
    cfg = text_config(model)
    types = set(getattr(cfg, "layer_types", None) or ["full_attention"])
    if types != {"full_attention"}:
        raise ValueError(f"KV-cache methods support full-attention layers only; this model has "
                         f"layer types {sorted(types)}")
    layers = getattr(cfg, "num_hidden_layers", None)
    mods = attention_modules(model)
    if not layers or len(mods) != layers:
        raise ValueError(f"expected one attention module with q/k/v projections per decoder layer "
                         f"({layers}), found {len(mods)}")
    if kv_cache_arg(model) is None:
        raise ValueError("the model's forward takes no KV cache ('cache' or 'past_key_values')")


def _mask_of(args: tuple, kwargs: dict) -> Any:
    if "attention_mask" in kwargs:
        return kwargs["attention_mask"]
    return args[1] if len(args) > 1 else None


def _check_unpadded(mask: Any) -> None:
    if mask is None:
        return
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2 or not bool(mask.bool().all()):
        raise ValueError("KV-cache methods need unpadded batches: pass no attention_mask or an "
                         "all-ones [batch, tokens] mask (this one masks some tokens out); batch "
                         "prompts of one length instead of padding them")


class Installation:
    """What ``install`` put on a model; ``remove()`` takes it off again."""

    def __init__(self, model: Any, make_layer: Callable[[int], KVLayer]):
        check_installable(model)
        register()
        self._model = weakref.ref(model)  # the model holds this object, not the other way round
        self.make_layer = make_layer
        self.layers = text_config(model).num_hidden_layers
        self.cache_arg = kv_cache_arg(model)
        self.tally = Tally()
        self.binding = Binding()
        self.previous = text_config(model)._attn_implementation
        self.modules = attention_modules(model)
        for m in self.modules:
            setattr(m, BINDING, self.binding)
        self._set_attn(model, NAME)
        self.handles = [
            model.register_forward_pre_hook(self._before, with_kwargs=True),
            model.register_forward_hook(self._after, always_call=True),
        ]
        setattr(model, STATE, self)

    @staticmethod
    def _set_attn(model: Any, name: str) -> None:
        if hasattr(model, "set_attn_implementation"):
            model.set_attn_implementation(name)
        else:  # pragma: no cover - older transformers
            model.config._attn_implementation = name

    def new_cache(self) -> CompressedCache:
        self.tally.created += 1
        return CompressedCache([self.make_layer(i) for i in range(self.layers)], serial=self.tally.created)

    def _before(self, module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        cache = kwargs.get("cache")
        if cache is None:
            cache = kwargs.get("past_key_values")
        use_cache = kwargs.get("use_cache")
        if use_cache is None:
            use_cache = getattr(getattr(module, "config", None), "use_cache", True)
        if cache is None and use_cache:
            cache = self.new_cache()
            kwargs = {**kwargs, self.cache_arg: cache}
        if isinstance(cache, CompressedCache):
            _check_unpadded(_mask_of(args, kwargs))
        self.binding.cache = cache
        return args, kwargs

    def _after(self, module: Any, args: tuple, output: Any) -> None:
        cache, self.binding.cache = self.binding.cache, None
        if isinstance(cache, CompressedCache):
            self.tally.record(cache)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        for m in self.modules:
            if hasattr(m, BINDING):
                delattr(m, BINDING)
        model = self._model()
        if model is not None:
            self._set_attn(model, self.previous)
            setattr(model, STATE, None)


def install(model: Any, make_layer: Callable[[int], KVLayer]) -> Installation:
    return Installation(model, make_layer)
