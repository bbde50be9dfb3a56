"""StreamingLLM, H2O, SnapKV, KIVI and Mustafar: five ways to hold less KV cache.

One mechanism for all (``install.py``, ``cache.py``, ``attention.py``): every generation
gets a fresh ``CompressedCache``, whose layers differ only in what they keep after a step:
a subset of the tokens chosen by a policy (``EvictingLayer`` + ``policies.py``), every
token quantized (``KiviLayer``) or every token pruned (``SparseLayer``). No weights change;
``report`` gives the KV bytes held against the full cache of the same tokens.
"""

from __future__ import annotations

from typing import Any

from sparsebench.api import ApplyContext, Method, MethodResult, Metric

from .cache import EvictingLayer, KVLayer
from .config import (
    BudgetConfig,
    H2OConfig,
    KiviConfig,
    MustafarConfig,
    SnapKVConfig,
    StreamingKVConfig,
)
from .install import STATE, Installation, check_installable, text_config
from .policies import H2OPolicy, Policy, SnapKVPolicy, StreamingPolicy
from .storage import KiviLayer, SparseLayer

KERNEL = ("sparsebench_kv attention (torch SDPA; explicit fp32 softmax in query chunks where "
          "scores are needed)")


def head_dim(model: Any) -> int:
    cfg = text_config(model)
    d = getattr(cfg, "head_dim", None)
    return int(d) if d else cfg.hidden_size // cfg.num_attention_heads


class KVCacheMethod(Method):
    """Base of the family: install a compressed cache; report what it held."""

    family = "kv_cache"
    needs_calibration = False

    def make_layer(self, idx: int) -> KVLayer:
        raise NotImplementedError

    def check_model(self, model: Any) -> None:
        check_installable(model)

    def save_unsupported_reason(self) -> str | None:
        return ("a KV-cache method changes no weights (it only changes the cache at inference); "
                "the saved model would be the dense one")

    def apply_(self, model: Any, ctx: ApplyContext) -> MethodResult:
        Installation(model, self.make_layer)  # held by the model (its hooks), not by the method
        return MethodResult(metrics=self.target(), kernels={"kv_attention": KERNEL})

    def target(self) -> dict[str, Metric]:
        return {}

    def report(self, model: Any) -> dict[str, Metric]:
        inst = getattr(model, STATE, None)
        return {} if inst is None else inst.tally.metrics()


class EvictingMethod(KVCacheMethod):
    """An eviction policy per layer, built from the method's config."""

    config: BudgetConfig
    policy_class: type[Policy]

    def make_layer(self, idx: int) -> KVLayer:
        return EvictingLayer(self.policy_class(self.config))

    def target(self) -> dict[str, Metric]:
        b = self.config.budget
        key = "kv_budget_fraction" if isinstance(b, float) else "kv_budget_tokens"
        return {key: Metric(value=float(b))}


class StreamingKV(EvictingMethod):
    name = "streaming-kv"
    description = ("StreamingLLM: keep the first `sinks` tokens (attention sinks) and the most recent "
                   "ones, `budget` in all; the oldest non-sink token is evicted as decoding goes on.")
    paper = "https://arxiv.org/abs/2309.17453"
    Config = StreamingKVConfig
    config: StreamingKVConfig
    policy_class = StreamingPolicy


class H2O(EvictingMethod):
    name = "h2o"
    description = ("Heavy-hitter oracle: keep the `window` most recent tokens plus the tokens with the "
                   "highest attention accumulated over all queries so far (per KV head), `budget` in all.")
    paper = "https://arxiv.org/abs/2306.14048"
    Config = H2OConfig
    config: H2OConfig
    policy_class = H2OPolicy


class SnapKV(EvictingMethod):
    name = "snapkv"
    description = ("At the end of prefill the last `window` prompt queries vote (pooled attention, per KV "
                   "head); the top prompt tokens plus the window are kept, `budget` in all; decode appends.")
    paper = "https://arxiv.org/abs/2404.14469"
    Config = SnapKVConfig
    config: SnapKVConfig
    policy_class = SnapKVPolicy


class Kivi(KVCacheMethod):
    name = "kivi"
    description = ("2/4-bit KV cache: keys quantized per channel, values per token (asymmetric, grouped), "
                   "the most recent `residual` tokens in full precision.")
    paper = "https://arxiv.org/abs/2402.02750"
    Config = KiviConfig
    config: KiviConfig

    def check_model(self, model: Any) -> None:
        super().check_model(model)
        d = head_dim(model)
        g = min(self.config.group_size, d)
        if d % g:
            raise ValueError(f"kivi groups value channels by group_size={self.config.group_size}, which must "
                             f"divide head_dim={d} (or be >= it)")
        if (d * self.config.bits) % 8:
            raise ValueError(f"kivi packs head_dim={d} codes of {self.config.bits} bits per token; "
                             f"head_dim x bits must be a multiple of 8")

    def make_layer(self, idx: int) -> KVLayer:
        return KiviLayer(self.config.bits, self.config.group_size, self.config.residual)

    def target(self) -> dict[str, Metric]:
        return {"kv_bits": Metric(value=float(self.config.bits))}


class Mustafar(KVCacheMethod):
    name = "mustafar"
    description = ("Unstructured KV pruning: each token's key and value vectors keep their largest-magnitude "
                   "entries at `density` (per head); the `window` most recent tokens stay dense.")
    paper = "https://arxiv.org/abs/2505.22913"
    Config = MustafarConfig
    config: MustafarConfig

    def make_layer(self, idx: int) -> KVLayer:
        return SparseLayer(self.config.density, self.config.window)

    def target(self) -> dict[str, Metric]:
        return {"kv_density_target": Metric(value=self.config.density)}
