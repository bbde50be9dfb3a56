"""RMSNorms folded into the fused projection that reads them, for the ``+gemv`` decode path
(latency only).

Profiled on an H200 (8B shape, bs 1, ``compile-tuned+gemv+graph``), each decoder layer's two
RMSNorms ran as kernels of their own (the residual add fused in), 65 a step and ~200 us: the
GEMV after them is an opaque op, so inductor cannot fuse the norm into its loads. The norm
is cheap to do inside the GEMV: every program streams all of x anyway, so it sums x^2 on
the side and scales its dot products once at the end (``W (g x / rms(x)) = (W (g x)) / rms(x)``).

Where a layer's ``input_layernorm`` feeds a fused q/k/v group and its
``post_attention_layernorm`` a fused gate/up group (``sparsebench.measure.fuse``), the norm
becomes the identity and the group's lead applies it: one-row products through the GEMV
plugin's ``normed``, anything else (the prefill) as the norm module followed by the product.
A norm counts only when it computes what the kernel does (checked on a random input), and
one checked forward of several tokens must give the same logits as before, else everything
is undone: a model whose norm output feeds anything besides that group (a parallel-block
layer) fails that check. ``folded_norms`` undoes it all on exit.
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

#: (layer's norm attribute, child module holding the fused group, lead projection of the group)
SITES = (("input_layernorm", "self_attn", "q_proj"), ("post_attention_layernorm", "mlp", "gate_proj"))
# the check forward takes the norm explicitly in both runs: only the wiring can differ
CHECK_TOL = 1e-3


class Deferred(nn.Module):
    """The identity where a module was (kept as ``original``): whoever folded it applies it
    (here the group's lead normalises)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.original = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class _NormFoldedLead(_FusedLead):
    """A fused group's lead that applies the folded RMSNorm to its input first."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self._handoff
        if one_row(x, self.fused_weight, self._fold_device):
            y = self._fold_kernel.normed(x, self.fused_weight, self.fused_bias, self.folded_norm.weight,
                                         self._fold_eps)
        else:
            y = F.linear(self.folded_norm(x), self.fused_weight, self.fused_bias)
        parts = y.split(h.sizes, dim=-1)
        h.input, h.outputs = x, parts
        return parts[0]


def rms_eps(norm: nn.Module) -> float | None:
    """The epsilon of a Llama-style RMSNorm (``weight * x / sqrt(mean(x^2) + eps)``), or None
    when the module does not compute that (checked on a random input, in fp32)."""
    eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", None))
    w = getattr(norm, "weight", None)
    if not isinstance(eps, float) or not isinstance(w, torch.Tensor) or w.dim() != 1 or norm._forward_hooks:
        return None
    with torch.no_grad():
        x = torch.randn(2, w.shape[0], generator=torch.Generator().manual_seed(0)).to(w.device, w.dtype)
        xf = x.float()
        want = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)) * w.float()
        got = norm(x).float()
    tol = 1e-5 if w.dtype == torch.float32 else 2e-2
    return eps if torch.allclose(got, want, rtol=tol, atol=tol * float(want.abs().max())) else None


def _sites(model: nn.Module) -> list[tuple[nn.Module, str, _FusedLead, float]]:
    out = []
    for layer in model.modules():
        for norm_name, child, lead_name in SITES:
            norm = getattr(layer, norm_name, None)
            lead = getattr(getattr(layer, child, None), lead_name, None)
            if norm is None or type(lead) is not _FusedLead:
                continue
            eps = rms_eps(norm)
            if eps is not None and lead.fused_weight.shape[1] == norm.weight.shape[0]:
                out.append((layer, norm_name, lead, eps))
    return out


def _undo(done: list[tuple[nn.Module, str, _FusedLead]]) -> None:
    for layer, norm_name, lead in done:
        setattr(layer, norm_name, getattr(layer, norm_name).original)
        del lead.folded_norm, lead._fold_kernel, lead._fold_eps, lead._fold_device
        lead.__class__ = _FusedLead


@contextmanager
def folded_norms(model: nn.Module, kernel: Any, device: str, check_ids: torch.Tensor | None) -> Iterator[str]:
    """Fold the RMSNorms in front of fused groups into those groups' GEMVs while the block runs
    (``kernel``: the linear-kernel plugin, which must have ``normed``). Yields the label for
    the record (``"input + post-attention RMSNorm -> qkv / gate_up GEMV x64"``, or why none).
    ``check_ids``: ``[1, T]`` tokens for the check forward (None: no check, tests only)."""
    if not hasattr(kernel, "normed"):
        yield "not folded: the GEMV plugin has no normed product"
        return
    sites = _sites(model)
    if not sites:
        yield "not folded: no Llama-style RMSNorm in front of a fused q/k/v or gate/up group"
        return
    done: list[tuple[nn.Module, str, _FusedLead]] = []

    def apply() -> None:
        for layer, norm_name, lead, eps in sites:
            norm = getattr(layer, norm_name)
            lead.folded_norm = norm  # registered on the lead too: the traced forward reads it as a module
            lead._fold_kernel, lead._fold_eps, lead._fold_device = kernel, eps, device
            lead.__class__ = _NormFoldedLead
            setattr(layer, norm_name, Deferred(norm))
            done.append((layer, norm_name, lead))

    with checked_fold(model, check_ids, apply, lambda: _undo(done), CHECK_TOL,
                      f"input + post-attention RMSNorm -> qkv / gate_up GEMV x{len(sites)}") as label:
        yield label
