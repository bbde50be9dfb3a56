"""MInference's offline choice: per head, the pattern that recovers the most dense attention
mass at the target density on the calibration text.

``RecallProbe`` is a calibration-time layer handler: at each fresh causal prefill it builds
every candidate pattern exactly as the online estimation would (same functions, same
density), computes the dense attention probabilities chunk by chunk, and adds up, per head,
the probability mass inside each candidate's mask (``recall``: 1.0 = all of it). It returns
``None``, so the model's forward stays dense while calibrating. The recall is a mean over
query rows; it is measured on at most ``PROBE_ROWS`` rows per prefill, evenly spaced (an
unbiased estimate of the mean over all rows at a fraction of the cost).
"""

from __future__ import annotations

from typing import Any

import torch

from . import ops
from . import patterns as P
from .attention import Causal, DensityStats, LayerHandler

#: query rows per calibration prefill whose dense attention is compared with the candidates
PROBE_ROWS = 512


class RecallProbe(LayerHandler):
    def __init__(self, layer_idx: int, candidates: tuple[str, ...], density: float, last_q: int,
                 block_size: int):
        super().__init__(layer_idx, DensityStats())
        self.candidates, self.density, self.last_q, self.block_size = candidates, density, last_q, block_size
        self.mass: torch.Tensor | None = None  # [candidates, heads], float64
        self.rows = 0

    def prefill(self, module: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, base: Causal,
                scale: float) -> None:
        if not base.fresh_prefill:
            return None
        b, hq, n, _ = q.shape
        kx = ops.expand_kv(k, hq)
        rows = {c: self._rows(c, q, kx, n, scale) for c in self.candidates}
        mass = torch.zeros(len(self.candidates), hq, dtype=torch.float64, device=q.device)
        kf = kx.float()
        probe = torch.linspace(0, n - 1, min(n, PROBE_ROWS), device=q.device).round().long().unique()
        step = max(1, ops.CHUNK_ELEMENTS // max(1, b * hq * n))
        for s in range(0, probe.numel(), step):
            pos = probe[s:s + step]
            causal = torch.arange(n, device=q.device)[None, :] <= pos[:, None]
            scores = (q[:, :, pos].float() @ kf.transpose(-1, -2) * scale).masked_fill(~causal, float("-inf"))
            probs = torch.softmax(scores, -1)
            for i, c in enumerate(self.candidates):
                mass[i] += torch.where(rows[c](pos), probs, 0.0).sum((0, 2, 3)).double()
        self.mass = mass if self.mass is None else self.mass + mass
        self.rows += b * probe.numel()
        return None

    def _rows(self, pattern: str, q: torch.Tensor, k: torch.Tensor, n: int, scale: float) -> Any:
        bs = self.block_size
        if pattern == "vertical_slash":
            cols, diags = P.estimate_vertical_slash(q, k, scale, self.last_q, self.density)
            return lambda pos: P.vertical_slash_at(cols, diags, pos)
        if pattern == "a_shape":
            bm = P.a_shape_block_mask(n, bs, self.density, q.device)
        else:
            bm = P.block_sparse_mask(q, k, bs, self.density, scale)
        return lambda pos: P.block_mask_at(bm, pos, n, bs)

    def recall(self) -> torch.Tensor | None:
        """``[candidates, heads]``: mean over query rows of the attention mass inside each pattern."""
        return None if self.mass is None else (self.mass / self.rows).float().cpu()


def choose_patterns(probes: dict[int, RecallProbe], candidates: tuple[str, ...]
                    ) -> tuple[dict[int, dict[str, list[int]]], dict[int, torch.Tensor]]:
    """Per layer: ``{pattern: [query heads]}`` (highest recall; ties go to the earlier candidate)
    and the chosen recall per head. Raises when no calibration prefill reached a layer."""
    heads: dict[int, dict[str, list[int]]] = {}
    chosen: dict[int, torch.Tensor] = {}
    for layer, probe in probes.items():
        r = probe.recall()
        if r is None:
            raise RuntimeError(f"no calibration prefill reached layer {layer}")
        best = r.argmax(0)  # argmax returns the first maximum
        heads[layer] = {c: [h for h in range(r.shape[1]) if int(best[h]) == i] for i, c in enumerate(candidates)}
        chosen[layer] = r.gather(0, best[None]).squeeze(0)
    return heads, chosen
