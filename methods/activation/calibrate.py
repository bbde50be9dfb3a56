"""Thresholds from calibration activations, and TEAL's greedy per-layer allocation.

All thresholds are quantiles: ``t`` such that a fraction ``s`` of the calibration values
satisfy ``value <= t`` (those are dropped; ``|x| > t`` survives).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

_MAX_VALUES = 1 << 21  # values a quantile is taken over (whole rows, evenly strided, beyond this)


def _subsample(values: torch.Tensor) -> torch.Tensor:
    """At most about ``_MAX_VALUES`` values, taking whole rows of a ``[rows, width]`` sample
    (a flat stride would keep the same channels in every row when it divides the width)."""
    v = values.detach().float()
    if v.numel() <= _MAX_VALUES:
        return v.flatten()
    if v.dim() == 1:
        return v[:: -(-v.numel() // _MAX_VALUES)]
    v = v.reshape(-1, v.shape[-1])
    return v[:: -(-v.numel() // _MAX_VALUES)].flatten()


def quantile_threshold(values: torch.Tensor, sparsity: float) -> float:
    """The threshold dropping a fraction ``sparsity`` of ``values`` (0 keeps everything nonzero)."""
    if sparsity <= 0.0:
        return 0.0
    v = _subsample(values)
    k = min(v.numel(), max(1, round(sparsity * v.numel())))
    return float(v.kthvalue(k).values)


def scaled_thresholds(abs_x: torch.Tensor, scale: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Per-input thresholds ``t / scale_j`` where ``t`` drops a fraction ``sparsity`` of the
    scores ``|x_j| * scale_j`` (WINA: scale = column norms of W; CHESS: mean |up_j|).
    A channel with scale 0 contributes nothing and is always dropped (threshold +inf)."""
    scale = scale.float()
    t = quantile_threshold(abs_x * scale[None, :], sparsity)
    out = torch.full_like(scale, float("inf"))
    live = scale > 0
    out[live] = t / scale[live]
    return out


@dataclass
class Site:
    """Linears that read the same input (q/k/v share theirs, gate/up theirs)."""

    names: list[str]
    sample: torch.Tensor  # calibration input rows [rows, in]
    weights: list[torch.Tensor]  # each [out, in]

    @property
    def params(self) -> int:
        return sum(w.numel() for w in self.weights)

    def error_curve(self, levels: Sequence[float], rows: torch.Tensor) -> list[float]:
        """Relative output error ``||(x dropped) W^T||^2 / ||x W^T||^2`` (summed over the site's
        linears) on ``rows`` when a fraction ``level`` of their |x| is dropped, per level."""
        sorted_abs = rows.abs().flatten().sort().values
        n = sorted_abs.numel()
        ref = sum(float((rows @ w.float().t()).pow(2).sum()) for w in self.weights)
        out = []
        zero = torch.zeros((), dtype=rows.dtype, device=rows.device)
        for lv in levels:
            if lv <= 0:
                out.append(0.0)
                continue
            t = sorted_abs[min(n, max(1, round(lv * n))) - 1]
            dropped = torch.where(rows.abs() <= t, rows, zero)
            out.append(sum(float((dropped @ w.float().t()).pow(2).sum()) for w in self.weights) / max(ref, 1e-30))
        return out


def group_sites(names: Sequence[str], samples: dict[str, torch.Tensor],
                weights: dict[str, torch.Tensor]) -> list[Site]:
    """Group linears whose calibration inputs are identical."""
    sites: list[Site] = []
    for n in names:
        for s in sites:
            if s.sample.shape == samples[n].shape and torch.equal(s.sample, samples[n]):
                s.names.append(n)
                s.weights.append(weights[n])
                break
        else:
            sites.append(Site([n], samples[n], [weights[n]]))
    return sites


def greedy_allocation(sites: list[Site], target: float, step: float = 0.05, cap: float = 0.95,
                      error_rows: int = 256) -> list[float]:
    """Per-site sparsity whose size-weighted mean is ``target``, found greedily.

    Every site starts dense. Each step raises by ``step`` the sparsity of the site where that
    costs the least relative output error per weight skipped (errors measured on up to
    ``error_rows`` calibration rows), until the weighted mean reaches the target; the last
    site moved is then trimmed so the mean is exactly the target. Targets above ``cap``
    fall back to uniform.
    """
    if target <= 0.0:
        return [0.0] * len(sites)
    if target > cap:
        return [target] * len(sites)
    levels = [round(i * step, 10) for i in range(int(round(cap / step)) + 1)]
    total = sum(s.params for s in sites)
    errors = [s.error_curve(levels, s.sample[:: max(1, -(-s.sample.shape[0] // error_rows))]) for s in sites]
    level = [0] * len(sites)
    mean = 0.0
    last = 0
    while mean < target - 1e-12:
        candidates = [i for i in range(len(sites)) if level[i] + 1 < len(levels)]
        if not candidates:
            break
        last = min(candidates, key=lambda i: (errors[i][level[i] + 1] - errors[i][level[i]]) / sites[i].params)
        level[last] += 1
        mean += step * sites[last].params / total
    out = [levels[lv] for lv in level]
    out[last] -= (mean - target) * total / sites[last].params
    return out
