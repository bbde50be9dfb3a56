"""Which cached tokens to keep: StreamingLLM, H2O and SnapKV.

The selection functions are pure: they take the number of held entries (or their scores,
``[batch, kv_heads, entries]``) and return the indices of the entries to keep, sorted, as
``[batch, kv_heads, kept]``, or ``None`` when everything fits. Entries are always held in
position order, so "the last ``w`` entries" are the ``w`` most recent tokens.

A ``Policy`` wraps one of them for ``EvictingLayer``: ``votes_needed`` says how many of a
step's trailing queries must hand their attention probabilities to the cache (summed over
those queries and over the query heads of each KV head), ``keep`` picks the entries to keep
after the step. Policies are stateless; the per-layer state (accumulated scores) lives on
the layer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from .config import H2OConfig, SnapKVConfig, StreamingKVConfig, budget_tokens

if TYPE_CHECKING:  # pragma: no cover
    from .cache import EvictingLayer


def _expand(idx: torch.Tensor, batch: int, heads: int) -> torch.Tensor:
    return idx.view(1, 1, -1).expand(batch, heads, -1)


def streaming_keep(entries: int, budget: int, sinks: int, batch: int = 1, heads: int = 1) -> torch.Tensor | None:
    """The first ``sinks`` entries and the last ``budget - sinks``."""
    if entries <= budget:
        return None
    recent = budget - sinks
    idx = torch.cat([torch.arange(sinks), torch.arange(entries - recent, entries)])
    return _expand(idx, batch, heads)


def top_with_window(scores: torch.Tensor, budget: int, window: int) -> torch.Tensor | None:
    """The last ``window`` entries plus the ``budget - window`` highest-scored of the others,
    per batch row and head (``scores``: ``[batch, heads, entries]``)."""
    b, h, n = scores.shape
    if n <= budget:
        return None
    heavy = scores[..., : n - window].topk(budget - window, dim=-1).indices
    recent = _expand(torch.arange(n - window, n, device=scores.device), b, h)
    return torch.cat([heavy.sort(dim=-1).values, recent], dim=-1)


def pool_votes(votes: torch.Tensor, kernel_size: int, pooling: str) -> torch.Tensor:
    """SnapKV's smoothing: max or average pooling over positions, stride 1, centred
    (average pooling counts the zero padding, as ``F.avg_pool1d`` does)."""
    if kernel_size == 1:
        return votes
    b, h, n = votes.shape
    x = votes.reshape(b * h, 1, n)
    pad = kernel_size // 2
    if pooling == "max":
        x = F.max_pool1d(x, kernel_size, stride=1, padding=pad)
    else:
        x = F.avg_pool1d(x, kernel_size, stride=1, padding=pad)
    return x.view(b, h, n)


def snapkv_keep(votes: torch.Tensor, budget: int, window: int, kernel_size: int,
                pooling: str) -> torch.Tensor | None:
    """``votes``: attention of the last ``window`` queries, summed, ``[batch, heads, entries]``;
    keep the window plus the ``budget - window`` prefix entries with the highest pooled votes."""
    n = votes.shape[-1]
    if n <= budget:
        return None
    pooled = pool_votes(votes[..., : n - window], kernel_size, pooling)
    return top_with_window(torch.cat([pooled, votes[..., n - window:]], dim=-1), budget, window)


class Policy:
    """Base: keep everything."""

    def budget(self, prompt_tokens: int) -> int:
        return prompt_tokens

    def votes_needed(self, layer: EvictingLayer, q_len: int) -> int:
        return 0

    def keep(self, layer: EvictingLayer, votes: torch.Tensor | None) -> torch.Tensor | None:
        return None


class BudgetPolicy(Policy):
    def __init__(self, config: StreamingKVConfig | H2OConfig | SnapKVConfig):
        self.config = config

    def budget(self, prompt_tokens: int) -> int:
        tokens = budget_tokens(self.config.budget, prompt_tokens)
        self.config.check_tokens(tokens, prompt_tokens)
        return tokens


class StreamingPolicy(BudgetPolicy):
    config: StreamingKVConfig

    def keep(self, layer: EvictingLayer, votes: torch.Tensor | None) -> torch.Tensor | None:
        b, h, n, _ = layer.keys.shape
        idx = streaming_keep(n, layer.budget, self.config.sinks, b, h)
        return None if idx is None else idx.to(layer.keys.device)


class H2OPolicy(BudgetPolicy):
    """Scores accumulate over every query (prefill and decode); eviction after every step."""

    config: H2OConfig

    def votes_needed(self, layer: EvictingLayer, q_len: int) -> int:
        return q_len

    def keep(self, layer: EvictingLayer, votes: torch.Tensor | None) -> torch.Tensor | None:
        assert votes is not None
        n = votes.shape[-1]
        acc = layer.scores
        if acc is None:
            acc = votes
        else:
            acc = F.pad(acc, (0, n - acc.shape[-1])) + votes
        layer.scores = acc
        return top_with_window(acc, layer.budget, self.config.window)


class SnapKVPolicy(BudgetPolicy):
    """Votes are taken once, at the end of prefill (the first step); decode only appends."""

    config: SnapKVConfig

    def votes_needed(self, layer: EvictingLayer, q_len: int) -> int:
        return min(self.config.window, q_len) if layer.step == 1 else 0

    def keep(self, layer: EvictingLayer, votes: torch.Tensor | None) -> torch.Tensor | None:
        if votes is None:
            return None
        window = min(self.config.window, votes.shape[-1])
        return snapkv_keep(votes, layer.budget, window, self.config.kernel_size, self.config.pooling)
