"""The one mechanism of every activation-sparsity method: modules that drop small inputs.

``SparseInputLinear`` replaces an ``nn.Linear``: ``y = W[:, keep] @ x[keep] + b`` with
``keep = |x| > threshold`` (a scalar, or one threshold per input channel), computed by
``sparsebench.kernels.sparse_gemv``. With the fast kernel the weight is stored transposed,
``[in, out]``, so a surviving input reads one contiguous row of weights; with the reference
the original ``nn.Linear`` is kept as a child (same parameter bytes either way).

``ThresholdedActivation`` replaces an MLP's activation: ``a = act(g)``, entries with
``|a| <= threshold`` set to zero (CATS, CHESS); the product with ``up`` is then zero there
and the down projection (a ``SparseInputLinear`` with threshold 0) skips those inputs.

Both count, while ``counting`` is on, how many inputs they dropped: ``activation_report``
turns the counts into the metrics the record stores.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sparsebench.api import Metric
from sparsebench.kernels.sparse_gemv import keep_mask, sparse_gemv

from ..fused_views import concat_as_views_, mixed_bias, own_copies_

Threshold = float | torch.Tensor


class _Counting(nn.Module):
    def _init_counts(self) -> None:
        self.counting = False
        self.dropped: torch.Tensor | None = None  # device scalar: no host sync per call
        self.seen = 0

    def _count(self, x: torch.Tensor, threshold: Threshold) -> None:
        d = (~keep_mask(x, threshold)).sum()
        self.dropped = d if self.dropped is None else self.dropped + d
        self.seen += x.numel()

    def reset_counts(self) -> None:
        self.dropped, self.seen = None, 0

    def achieved(self) -> float | None:
        return None if not self.seen or self.dropped is None else float(self.dropped) / self.seen


def _set_threshold(mod: nn.Module, threshold: Threshold, device: torch.device) -> None:
    if isinstance(threshold, torch.Tensor):
        mod.register_buffer("threshold", threshold.detach().float().to(device).contiguous())
    else:
        mod.threshold = float(threshold)


class SparseInputLinear(_Counting):
    def __init__(self, linear: nn.Linear, threshold: Threshold, impl: str = "ref"):
        super().__init__()
        self.in_features, self.out_features, self.impl = linear.in_features, linear.out_features, impl
        w = linear.weight
        if impl == "ref":
            self.linear = linear
            self.weight_t = None
        else:
            self.linear = None
            self.weight_t = nn.Parameter(w.detach().t().contiguous(), requires_grad=False)
        self.bias = None if linear.bias is None or impl == "ref" else linear.bias
        if isinstance(threshold, torch.Tensor) and threshold.numel() != self.in_features:
            raise ValueError(f"a per-input threshold needs {self.in_features} values, got {threshold.numel()}")
        _set_threshold(self, threshold, w.device)
        self._init_counts()

    @property
    def w_t(self) -> torch.Tensor:
        return self.linear.weight.t() if self.linear is not None else self.weight_t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.counting:
            self._count(x, self.threshold)
        bias = self.linear.bias if self.linear is not None else self.bias
        return sparse_gemv(x, self.w_t, self.threshold, impl=self.impl, bias=bias)

    def fuse_siblings_(self, siblings: list[SparseInputLinear]) -> _FusedSparseProduct | str:
        """Fuse with sibling projections that read the same input (the harness's latency-only
        projection fusion, ``sparsebench.measure.fuse``): one sparse GEMV over the concatenated
        transposed weights, so the live inputs are found once and one kernel runs. Only with
        the same threshold (TEAL calibrates one per input site) and the fast kernel's layout;
        returns why not otherwise."""
        mods = [self, *siblings]
        if any(m.weight_t is None for m in mods):
            return "the reference layout (fusing pays only with the kernel's transposed weights)"
        if any(m.counting for m in mods):
            return "counting dropped inputs"
        t0 = self.threshold
        same = all(isinstance(m.threshold, torch.Tensor) == isinstance(t0, torch.Tensor) for m in mods) and all(
            torch.equal(m.threshold, t0) if isinstance(t0, torch.Tensor) else m.threshold == t0 for m in mods)
        if not same:
            return "different thresholds"
        w0 = self.weight_t
        if any(m.in_features != self.in_features or m.weight_t.dtype != w0.dtype or m.weight_t.device != w0.device
               for m in mods):
            return "different input widths, dtypes or devices"
        if mixed_bias(mods):
            return "bias on some only"
        return _FusedSparseProduct(mods)

    def extra_repr(self) -> str:
        t = "per-input" if isinstance(self.threshold, torch.Tensor) else f"{self.threshold:.4g}"
        return f"in={self.in_features}, out={self.out_features}, threshold={t}, impl={self.impl}"


class _FusedSparseProduct:
    """Sibling ``SparseInputLinear`` layers as one: their transposed weights concatenated along
    the output dimension (each layer's ``weight_t`` becomes a column slice of it, so no bytes
    are added), one threshold, biases concatenated."""

    def __init__(self, mods: list[SparseInputLinear]):
        self.mods = mods
        fused = concat_as_views_(mods, {"weight_t": 1, "bias": 0})
        self.w_t, self.bias = fused["weight_t"], fused["bias"]
        self.threshold, self.impl = mods[0].threshold, mods[0].impl

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return sparse_gemv(x, self.w_t, self.threshold, impl=self.impl, bias=self.bias)

    def undo(self) -> None:
        own_copies_(self.mods, ("weight_t", "bias"))
        self.mods, self.w_t, self.bias = [], None, None


class ThresholdedActivation(_Counting):
    def __init__(self, act: nn.Module, threshold: Threshold, device: torch.device):
        super().__init__()
        self.act = act
        _set_threshold(self, threshold, device)
        self._init_counts()

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        a = self.act(g)
        if self.counting:
            self._count(a, self.threshold)
        return torch.where(keep_mask(a, self.threshold), a, torch.zeros((), dtype=a.dtype, device=a.device))


def install(block: nn.Module, linears: dict[str, Threshold], impl: str,
            act: Threshold | None = None) -> None:
    """Replace the named linears of ``block`` (and ``block.mlp.act_fn`` when ``act`` is given)."""
    for name, t in linears.items():
        parent_name, _, child = name.rpartition(".")
        parent = block.get_submodule(parent_name) if parent_name else block
        setattr(parent, child, SparseInputLinear(getattr(parent, child), t, impl))
    if act is not None:
        block.mlp.act_fn = ThresholdedActivation(block.mlp.act_fn, act, next(block.parameters()).device)


def sparse_modules(model: nn.Module) -> dict[str, SparseInputLinear]:
    return {_short(n): m for n, m in model.named_modules() if isinstance(m, SparseInputLinear)}


def set_counting(model: nn.Module, on: bool, reset: bool = True) -> None:
    for m in model.modules():
        if isinstance(m, _Counting):
            m.counting = on
            if reset:
                m.reset_counts()


def _short(name: str) -> str:
    return name.removeprefix("model.")


def achieved_sparsity(model: nn.Module) -> dict[str, tuple[float, int]]:
    """Per sparsified linear: (fraction of its inputs that were zero, inputs seen)."""
    out = {}
    for name, m in sparse_modules(model).items():
        frac = m.achieved()
        if frac is not None:
            out[name] = (frac, m.seen)
    return out


def activation_report(model: nn.Module, prefix: str = "activation_sparsity") -> dict[str, Metric]:
    """Metrics from the counts gathered since counting was switched on; switches it off.

    ``<prefix>.<layer>``: fraction of that linear's inputs that were zero (achieved, not the
    target); ``<prefix>_mean``: their plain mean; ``activation_weight_reads_skipped``: the
    fraction of all decoder-block weight reads a decode step skips at those rates (each
    layer weighted by its size, unsparsified layers counting as dense).
    """
    per_layer = achieved_sparsity(model)
    set_counting(model, False, reset=False)
    if not per_layer:
        return {}
    mods = sparse_modules(model)
    metrics = {f"{prefix}.{name}": Metric(value=frac, n=n) for name, (frac, n) in per_layer.items()}
    metrics[f"{prefix}_mean"] = Metric(value=sum(f for f, _ in per_layer.values()) / len(per_layer),
                                       n=len(per_layer))
    skipped = sum(frac * mods[name].in_features * mods[name].out_features for name, (frac, _) in per_layer.items())
    metrics["activation_weight_reads_skipped"] = Metric(value=skipped / max(_decoder_linear_params(model), 1))
    return metrics


def _decoder_linear_params(model: Any) -> int:
    """Weights of every linear in the decoder blocks, wrapped or not (each counted once)."""
    wrapped = {id(m.linear) for m in model.modules() if isinstance(m, SparseInputLinear) and m.linear is not None}
    return sum(m.in_features * m.out_features for b in model.model.layers for m in b.modules()
               if isinstance(m, SparseInputLinear) or (isinstance(m, nn.Linear) and id(m) not in wrapped))
