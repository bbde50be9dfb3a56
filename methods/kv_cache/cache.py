"""The one cache abstraction of the family, on top of transformers' Cache API.

``CompressedCache`` is a ``transformers.cache_utils.Cache`` whose layers are ``KVLayer``s.
A step of the model (prefill or decode) goes, per layer:

1. ``update(k, v)`` (called by the attention module, after RoPE): the layer appends the new
   keys/values and returns what the step attends: every held entry plus the new tokens;
2. the registered attention function (``attention.py``) asks ``votes_needed(q_len)``,
   computes the attention (all held entries visible, causal among the new tokens) and the
   votes the layer asked for, and calls ``after_attention(votes)``;
3. ``after_attention`` compresses: evicts, quantizes or prunes.

So a step always attends what was held before it plus its own tokens at full precision,
and compression happens after. ``get_seq_length()`` is the number of tokens *seen* (what
transformers needs for positions), not the number held. Held keys keep the rotary
embedding of their original position. Bytes are counted per layer, cheaply, from shapes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

from .policies import Policy


@dataclass(frozen=True)
class Summary:
    """A cache's state after a forward: tokens seen, entries held per (row, head) averaged
    over layers, bytes held (in the method's format) and bytes of the full cache."""

    tokens_seen: int
    tokens_held: float
    bytes_held: int
    bytes_full: int


class KVLayer(CacheLayerMixin):
    """Base of one layer's storage. Subclasses implement ``update``, ``after_attention``,
    ``tokens_held`` and ``bytes_held``."""

    is_sliding = False
    is_compileable = False
    is_croppable = False

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0  # tokens seen, including the current step's
        self.step = 0  # forward steps this layer has taken
        self.q_len = 0  # tokens of the current step
        self.shape: tuple[int, int, int] | None = None  # batch, kv heads, head_dim
        self.elem = 0  # bytes per full-precision entry

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        b, h, _, d = key_states.shape
        self.shape, self.elem = (b, h, d), key_states.element_size()
        self.dtype, self.device = key_states.dtype, key_states.device
        self.is_initialized = True

    def begin(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """Bookkeeping at the start of ``update``."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        elif key_states.shape[0] != self.shape[0]:
            raise ValueError(f"this cache was filled with a batch of {self.shape[0]}, got {key_states.shape[0]}")
        self.q_len = key_states.shape[-2]
        self.seen += self.q_len
        self.step += 1

    def votes_needed(self, q_len: int) -> int:
        """How many trailing queries of this step must hand their attention to the cache."""
        return 0

    def after_attention(self, votes: torch.Tensor | None) -> None:
        """Compress once the step's attention is computed."""

    def tokens_held(self) -> float:
        return float(self.seen)

    def bytes_held(self) -> int:
        raise NotImplementedError

    def bytes_full(self) -> int:
        if self.shape is None:
            return 0
        b, h, d = self.shape
        return 2 * b * h * d * self.seen * self.elem

    # ---- the Cache layer API
    def get_seq_length(self) -> int:
        return self.seen

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.seen + query_length, 0

    def get_max_length(self) -> int:
        return -1

    def reset(self) -> None:
        self.__init__()

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("a compressed KV cache cannot be cropped (evicted tokens are gone)")

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        raise NotImplementedError("a compressed KV cache does not support beam search")

    def batch_repeat_interleave(self, repeats: int) -> None:
        raise NotImplementedError("a compressed KV cache cannot be expanded along the batch")

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        raise NotImplementedError("a compressed KV cache cannot select batch rows")


class EvictingLayer(KVLayer):
    """Full-precision entries, a subset of the tokens seen, in position order; ``positions``
    ``[batch, kv_heads, held]`` says which token each entry is; ``scores`` is the policy's
    per-entry state (H2O's accumulated attention), gathered along with the entries."""

    def __init__(self, policy: Policy) -> None:
        super().__init__()
        self.policy = policy
        self.budget = 0
        self.positions: torch.Tensor | None = None
        self.scores: torch.Tensor | None = None

    def reset(self) -> None:
        self.__init__(self.policy)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
               ) -> tuple[torch.Tensor, torch.Tensor]:
        first = not self.is_initialized
        self.begin(key_states, value_states)
        b, h, q, _ = key_states.shape
        new_pos = torch.arange(self.seen - q, self.seen, device=key_states.device).view(1, 1, q).expand(b, h, q)
        if first:
            self.budget = self.policy.budget(q)
            self.keys, self.values, self.positions = key_states, value_states, new_pos
        else:
            self.keys = torch.cat([self.keys, key_states], dim=-2)
            self.values = torch.cat([self.values, value_states], dim=-2)
            self.positions = torch.cat([self.positions, new_pos], dim=-1)
        return self.keys, self.values

    def votes_needed(self, q_len: int) -> int:
        return self.policy.votes_needed(self, q_len)

    def after_attention(self, votes: torch.Tensor | None) -> None:
        idx = self.policy.keep(self, votes)
        if idx is None:
            return
        d = self.keys.shape[-1]
        full = idx.unsqueeze(-1).expand(-1, -1, -1, d)
        self.keys = self.keys.gather(2, full)
        self.values = self.values.gather(2, full)
        self.positions = self.positions.gather(2, idx)
        if self.scores is not None:
            self.scores = self.scores.gather(2, idx)

    def tokens_held(self) -> float:
        return 0.0 if self.keys is None else float(self.keys.shape[-2])

    def bytes_held(self) -> int:
        if self.keys is None:
            return 0
        return self.keys.numel() * self.keys.element_size() + self.values.numel() * self.values.element_size()


class CompressedCache(Cache):
    """A Cache of ``KVLayer``s, one per decoder layer; ``serial`` numbers the caches an
    installation created (one per generation)."""

    def __init__(self, layers: list[KVLayer], serial: int = 0):
        super().__init__(layers=layers)
        self.serial = serial

    def layer(self, idx: int) -> KVLayer:
        return self.layers[idx]

    def summary(self) -> Summary:
        layers = [la for la in self.layers if la.is_initialized]
        if not layers:
            return Summary(0, 0.0, 0, 0)
        return Summary(
            tokens_seen=layers[0].seen,
            tokens_held=sum(la.tokens_held() for la in layers) / len(layers),
            bytes_held=sum(la.bytes_held() for la in layers),
            bytes_full=sum(la.bytes_full() for la in layers),
        )
