"""SiLU(gate) x up folded into the fused gate/up GEMV, on the ``+gemv`` decode path (latency
only).

In the compiled 8B-shaped decode step on an H200 each layer's MLP ran the gate/up GEMV, then
a kernel of its own for ``silu(gate) * up`` (32 a step). The GEMV plugin's ``swiglu`` has
each program compute matching gate and up rows and write the activation, rounded as the
unfused model rounds it, so that kernel goes away and no bytes are added. (Folding the
activation into the *down* GEMV instead was measured and dropped: every program there
recomputed it from gate and up.)

Where a layer's MLP computes ``down(act(gate(x)) * up(x))`` with a SiLU ``act`` and a fused
gate/up group (``sparsebench.measure.fuse``, with or without the folded RMSNorm), its class
is swapped for one whose one-row forward is ``down(plugin.swiglu(x, W_gate_up))``; other
inputs (the prefill) run the MLP as before. One check forward of a single token (the path
that changes) must reproduce the logits, else everything is undone; ``folded_glu`` undoes
it all on exit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .decode_kernels import one_row
from .fuse import _FusedLead, checked_fold
from .norm_fold import _NormFoldedLead

# the check runs the same rounding on both sides; only the exp inside SiLU may differ
CHECK_TOL = 1e-2


class _GluMLP:
    """Mixed in before an MLP's class: one-row inputs through the plugin's fused SwiGLU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = self.gate_proj
        if one_row(x, lead.fused_weight, self._glu_device):
            if isinstance(lead, _NormFoldedLead):
                act = self._glu_kernel.swiglu(x, lead.fused_weight, lead.fused_bias, lead.folded_norm.weight,
                                              lead._fold_eps)
            else:
                act = self._glu_kernel.swiglu(x, lead.fused_weight, lead.fused_bias)
            return self.down_proj(act)
        return super().forward(x)


_CLASSES: dict[type, type] = {}


def _glu_class(cls: type) -> type:
    if cls not in _CLASSES:
        _CLASSES[cls] = type(f"Glu{cls.__name__}", (_GluMLP, cls), {})
    return _CLASSES[cls]


def is_silu(act: Any) -> bool:
    """Whether ``act`` computes SiLU (checked on a random input, not by its class name)."""
    if not callable(act):
        return False
    t = torch.randn(64, generator=torch.Generator().manual_seed(0)) * 4
    with torch.no_grad():
        try:
            return bool(torch.allclose(act(t), F.silu(t), rtol=1e-5, atol=1e-6))
        except Exception:
            return False


def _sites(model: nn.Module) -> list[nn.Module]:
    out = []
    for mlp in model.modules():
        lead = getattr(mlp, "gate_proj", None)
        if (type(lead) in (_FusedLead, _NormFoldedLead) and isinstance(getattr(mlp, "down_proj", None), nn.Module)
                and lead._handoff.sizes[0] * 2 == lead.fused_weight.shape[0] and is_silu(getattr(mlp, "act_fn", None))):
            out.append(mlp)
    return out


def _undo(done: list[nn.Module]) -> None:
    for mlp in done:
        mlp.__class__ = mlp._glu_from
        del mlp._glu_from, mlp._glu_kernel, mlp._glu_device


@contextmanager
def folded_glu(model: nn.Module, kernel: Any, device: str, check_ids: torch.Tensor | None) -> Iterator[str]:
    """Fold SiLU(gate) x up into the fused gate/up GEMVs while the block runs (``kernel``: the
    linear-kernel plugin, which must have ``swiglu``). Yields the record's label (or why
    none). ``check_ids``: ``[1, T]`` tokens; the check forward takes the first (None: no
    check, tests only)."""
    if not hasattr(kernel, "swiglu"):
        yield "not folded: the GEMV plugin has no swiglu product"
        return
    sites = _sites(model)
    if not sites:
        yield "not folded: no fused gate/up group under a SiLU"
        return
    def apply() -> None:
        for mlp in sites:
            mlp._glu_from, mlp._glu_kernel, mlp._glu_device = type(mlp), kernel, device
            mlp.__class__ = _glu_class(type(mlp))

    one = check_ids[:, :1] if check_ids is not None else None  # the one-row path is what changes
    with checked_fold(model, one, apply, lambda: _undo(sites), CHECK_TOL,
                      f"SiLU(gate) x up -> gate_up GEMV x{len(sites)}") as label:
        yield label
