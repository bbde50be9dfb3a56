"""Per-layer handlers of the four methods (installed on the attention modules by
``attention.install``): each turns one attention call into a pattern and an ``ops`` call."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import torch

from . import ops
from . import patterns as P
from .attention import Causal, DensityStats, LayerHandler


@functools.lru_cache(maxsize=64)
def _prefill_pairs(n: int, sinks: int, window: int) -> int:
    """Pairs of the streaming pattern over a fresh ``n``-token prefill (on the host, once per length)."""
    return int(P.streaming_pairs(torch.arange(n)[None], sinks, window))


class StreamingHandler(LayerHandler):
    """Sinks + sliding window at prefill and decode. When the pattern covers every causal pair
    (``n <= sinks + window`` with a plain causal mask) the call runs dense and counts as a
    fallback. With ``impl`` ``triton`` (the method resolves ``auto``) a fresh causal prefill
    runs through the block-sparse kernel (``ops.streaming_prefill``, token-exact); chunked and
    static-cache prefills and decode run the masked reference."""

    def __init__(self, layer_idx: int, stats: DensityStats, sinks: int, window: int, first: bool = False,
                 impl: str = "ref"):
        super().__init__(layer_idx, stats, first)
        self.sinks, self.window, self.impl = sinks, window, impl

    def _run(self, phase: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, base: Causal,
             scale: float) -> torch.Tensor | None:
        b, hq = q.shape[:2]
        longest = base.n if base.nq == 1 else base.nq  # positions reach n - 1 (decode) / nq - 1
        if base.mask is None and longest <= self.sinks + self.window:
            return self.dense(phase, base, hq, fallback=True)
        if phase == "prefill" and self.impl == "triton" and base.fresh_prefill:
            out = ops.streaming_prefill(q, k, v, self.sinks, self.window, scale, self.impl)
            return self.sparse(phase, base, hq, _prefill_pairs(base.n, self.sinks, self.window) * hq * b, out)
        q_pos = base.q_pos()
        out = ops.streaming_attention(q, k, v, q_pos, self.sinks, self.window, scale, base.mask)
        attended = P.streaming_pairs(q_pos, self.sinks, self.window) * hq * (b // q_pos.shape[0])
        return self.sparse(phase, base, hq, attended, out)

    def prefill(self, module: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, base: Causal,
                scale: float) -> torch.Tensor | None:
        return self._run("prefill", q, k, v, base, scale)

    def decode(self, module: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, base: Causal,
               scale: float) -> torch.Tensor | None:
        return self._run("decode", q, k, v, base, scale)


class MInferenceHandler(LayerHandler):
    """Per-head patterns at prefill (``heads[pattern]``: the query heads using it); indices
    estimated from this prompt. Dense for prompts shorter than ``min_length`` and for anything
    but a fresh causal prefill (chunked prefill, static cache); decode dense.

    ``impl`` (resolved by the method: ``ref`` or ``triton``) ``ref``: each pattern runs its
    exact masked definition (vertical-slash token-exact). ``triton`` (the kernel): every head's pattern becomes one block mask over all
    heads (vertical-slash heads: the blocks their columns and diagonals touch, a superset of
    the pairs) and one kernel call on the model's GQA keys computes it; the recorded density
    is then the block mask's, the pattern's own is recorded beside it."""

    def __init__(self, layer_idx: int, stats: DensityStats, heads: dict[str, list[int]], density: float,
                 last_q: int, block_size: int, min_length: int, first: bool = False, impl: str = "ref"):
        super().__init__(layer_idx, stats, first)
        self.impl = impl  # of the block-sparse kernel: ref, auto or triton
        self.heads = {p: h for p, h in heads.items() if h}
        self.density, self.last_q, self.block_size, self.min_length = density, last_q, block_size, min_length
        self._index: dict[tuple[str, str], torch.Tensor] = {}  # (pattern, device) -> head index

    def index(self, pattern: str, device: torch.device) -> torch.Tensor:
        """The pattern's head indices on ``device``, made once (no host copy in a captured call)."""
        key = (pattern, str(device))
        if key not in self._index:
            self._index[key] = torch.tensor(self.heads[pattern], device=device)
        return self._index[key]

    def block_mask(self, pattern: str, qh: torch.Tensor, kh: torch.Tensor, scale: float) -> torch.Tensor:
        """The A-shape (``[nb, nb]``) or block-sparse (``[b, h, nb, nb]``) block mask."""
        if pattern == "a_shape":
            return P.a_shape_block_mask(qh.shape[2], self.block_size, self.density, qh.device)
        return P.block_sparse_mask(qh, kh, self.block_size, self.density, scale)

    def prefill(self, module: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, base: Causal,
                scale: float) -> torch.Tensor | None:
        b, hq, n, _ = q.shape
        if not base.fresh_prefill or n < self.min_length:
            return self.dense("prefill", base, hq, fallback=True)
        if self.impl == "triton":
            return self._prefill_blocks(q, k, v, base, scale)
        kx, vx = ops.expand_kv(k, hq), ops.expand_kv(v, hq)
        out = torch.empty_like(q)
        attended: Any = 0
        for pattern, heads in self.heads.items():
            idx = self.index(pattern, q.device)
            qh, kh, vh = q[:, idx], kx[:, idx], vx[:, idx]
            if pattern == "vertical_slash":
                cols, diags = P.estimate_vertical_slash(qh, kh, scale, self.last_q, self.density)
                out[:, idx] = ops.vertical_slash_prefill(qh, kh, vh, cols, diags, scale)
                attended = attended + P.vertical_slash_pairs(cols, diags)
            else:
                bm = self.block_mask(pattern, qh, kh, scale)
                if bm.dim() == 2:
                    bm = bm.expand(b, len(heads), -1, -1)
                out[:, idx] = ops.block_sparse_prefill(qh, kh, vh, bm, self.block_size, scale, self.impl)
                attended = attended + P.block_mask_pairs(bm, n, self.block_size)
        return self.sparse("prefill", base, hq, attended, out)

    def _prefill_blocks(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, base: Causal,
                        scale: float) -> torch.Tensor:
        b, hq, n, _ = q.shape
        nb = P.n_blocks(n, self.block_size)
        kx = ops.expand_kv(k, hq)
        full: torch.Tensor | None = None
        pattern_pairs: Any = 0
        for pattern, heads in self.heads.items():
            every = heads == list(range(hq))
            idx = self.index(pattern, q.device)
            qh, kh = (q, kx) if every else (q[:, idx], kx[:, idx])
            if pattern == "vertical_slash":
                cols, diags = P.estimate_vertical_slash(qh, kh, scale, self.last_q, self.density)
                bm = ops.vertical_slash_blocks(cols, diags, self.block_size)
                pattern_pairs = pattern_pairs + P.vertical_slash_pairs(cols, diags)
            else:
                bm = self.block_mask(pattern, qh, kh, scale).expand(b, len(heads), nb, nb)
                pattern_pairs = pattern_pairs + P.block_mask_pairs(bm, n, self.block_size)
            if every:
                full = bm
            else:
                if full is None:
                    full = torch.zeros(b, hq, nb, nb, dtype=torch.bool, device=q.device)
                full[:, idx] = bm
        assert full is not None
        dense = ops.runs_dense(full, self.impl, q)  # most blocks live: dense SDPA computes them all
        out = ops.block_sparse_prefill(q, k, v, full, self.block_size, scale, self.impl, dense=dense)
        attended = P.block_mask_pairs(torch.ones_like(full) if dense else full, n, self.block_size)
        return self.sparse("prefill", base, hq, attended, out, pattern=pattern_pairs)


def decode_budget(budget: float, unit: str, base: Causal) -> tuple[Any, torch.Tensor | None]:
    """(keys a decode step may attend, valid keys ``[b|1, n]`` or None)."""
    valid = base.valid()
    n_valid = base.n if valid is None else valid.sum(-1)
    return P.budget_tokens(budget, unit, n_valid), valid


class QuestHandler(LayerHandler):
    """Quest at decode: pages of ``page_size`` keys, the top pages by upper bound per query head
    (current page always), within the budget; dense prefill; ``sparse_layer=False`` layers
    decode densely."""

    def __init__(self, layer_idx: int, stats: DensityStats, page_size: int, budget: float, unit: str,
                 sparse_layer: bool, first: bool = False):
        super().__init__(layer_idx, stats, first)
        self.page_size, self.budget, self.unit, self.sparse_layer = page_size, budget, unit, sparse_layer

    def decode(self, module: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, base: Causal,
               scale: float) -> torch.Tensor | None:
        hq = q.shape[1]
        if not self.sparse_layer:
            return self.dense("decode", base, hq)
        k_tokens, valid = decode_budget(self.budget, self.unit, base)
        k_pages = (k_tokens + self.page_size - 1) // self.page_size
        current = base.q_pos()[:, -1] // self.page_size
        pages = P.quest_pages(q[:, :, 0], k, self.page_size, k_pages, current, valid)
        out = ops.page_decode(q, k, v, pages, self.page_size, scale, valid)
        keep = P.pages_to_tokens(pages, self.page_size, k.shape[2])
        attended = (keep if valid is None else keep & valid[:, None]).sum()
        return self.sparse("decode", base, hq, attended, out)


@dataclass
class TidalState:
    """Positions the last selection layer picked in this decode step (``[b, hq, n]`` bool)."""

    keep: torch.Tensor | None = None


class TidalHandler(LayerHandler):
    """TidalDecode at decode. ``role``: ``dense`` (layers before the first selection layer),
    ``select`` (full attention, then each query head's top-k keys by score, the current token
    always, stored in ``state``), ``reuse`` (attend only the stored positions). Dense prefill."""

    def __init__(self, layer_idx: int, stats: DensityStats, role: str, state: TidalState, budget: float,
                 unit: str, first: bool = False):
        super().__init__(layer_idx, stats, first)
        self.role, self.state, self.budget, self.unit = role, state, budget, unit
        self.sparse_layer = role == "reuse"

    def prefill(self, module: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, base: Causal,
                scale: float) -> torch.Tensor | None:
        self.state.keep = None
        return self.dense("prefill", base, q.shape[1])

    def decode(self, module: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, base: Causal,
               scale: float) -> torch.Tensor | None:
        hq, n = q.shape[1], k.shape[2]
        if self.role == "dense":
            self.state.keep = None
            return self.dense("decode", base, hq)
        if self.role == "select":
            self.state.keep = self.select(q, k, base, scale)
            return self.dense("decode", base, hq)
        keep = self.state.keep
        if keep is None or keep.shape[-1] != n or keep.shape[:2] != q.shape[:2]:
            return self.dense("decode", base, hq, fallback=True)
        out = ops.sparse_decode(q, k, v, keep, scale)
        return self.sparse("decode", base, hq, keep.sum(), out)

    def select(self, q: torch.Tensor, k: torch.Tensor, base: Causal, scale: float) -> torch.Tensor:
        hq, n = q.shape[1], k.shape[2]
        k_tokens, valid = decode_budget(self.budget, self.unit, base)
        scores = (q[:, :, 0:1].float() @ ops.expand_kv(k, hq).float().transpose(-1, -2))[:, :, 0] * scale
        if valid is not None:
            scores = scores.masked_fill(~valid[:, None], -math.inf)
        current = torch.arange(n, device=q.device)[None, :] == base.q_pos()[:, -1:]
        scores = scores.masked_fill(current[:, None], math.inf)
        if isinstance(k_tokens, torch.Tensor):
            k_tokens = k_tokens.view(-1, 1, 1)
        return P.topk_keep(scores, k_tokens)
