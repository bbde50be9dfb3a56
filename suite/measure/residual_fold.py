"""Residual adds folded into the GEMVs before them, for the ``+gemv`` decode path (latency
only; off unless asked for: not yet timed on a GPU).

In the compiled decode step each layer's two residual adds are kernels of their own (62 a
step on an 8B model, ~1.2 us each): they follow the o and down projections, opaque GEMV ops
inductor cannot fuse into. A GEMV adds a bias per output row anyway, so the residual row can
be that bias: ``h + W a`` in one launch.

The adds live in the decoder layer's forward, so this swaps the layer's class for a subclass
whose forward is the Llama-family pre-norm layer written with the o and down products
explicit (``self_attn.o_proj`` and ``mlp.down_proj`` become the identity and the layer
multiplies their output itself, adding the residual in the same product). It applies to
layers with ``input_layernorm``, ``self_attn.o_proj``, ``post_attention_layernorm`` and
``mlp.down_proj`` (plain, bias-free ``nn.Linear``), and only if two check forwards (several
tokens, and one token through the GEMV) give the logits of the unfolded model: a layer
whose forward differs (a parallel block, another return type) fails them and everything is
undone. ``folded_residuals`` undoes it all on exit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .decode_kernels import one_row
from .fuse import check_logits, rel_err
from .norm_fold import Deferred

# one token through the GEMV: the folded product adds in fp32 and rounds once, the model
# rounds W a before adding; a wrong wiring moves the logits by ~1
ONE_TOKEN_TOL = 0.05
MANY_TOKENS_TOL = 1e-3  # several tokens: F.linear + add in both runs, only the wiring differs

_SUBCLASSES: dict[type, type] = {}


def _project_add(layer: nn.Module, linear: nn.Linear, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """``residual + x W^T``: one GEMV with the residual as its bias for one row, else F.linear + add."""
    if one_row(x, linear.weight, layer._fold_device) and residual.numel() == linear.out_features:
        return layer._fold_kernel(x, linear.weight, residual.reshape(-1)).view_as(residual)
    return residual + F.linear(x, linear.weight)


def _layer_forward(self: nn.Module, hidden_states: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    residual = hidden_states
    out = self.self_attn(hidden_states=self.input_layernorm(hidden_states), **kwargs)
    attn = out[0] if isinstance(out, tuple) else out
    hidden_states = _project_add(self, self.self_attn.o_proj.original, attn, residual)
    act = self.mlp(self.post_attention_layernorm(hidden_states))
    return _project_add(self, self.mlp.down_proj.original, act, hidden_states)


def _subclass(cls: type) -> type:
    if cls not in _SUBCLASSES:
        _SUBCLASSES[cls] = type(f"ResidualFolded{cls.__name__}", (cls,), {"forward": _layer_forward})
    return _SUBCLASSES[cls]


def _plain(linear: Any) -> bool:
    return type(linear) is nn.Linear and linear.bias is None and not linear._forward_hooks


def _sites(model: nn.Module) -> list[nn.Module]:
    return [layer for layer in model.modules()
            if all(isinstance(getattr(layer, n, None), nn.Module)
                   for n in ("input_layernorm", "self_attn", "post_attention_layernorm", "mlp"))
            and _plain(getattr(layer.self_attn, "o_proj", None)) and _plain(getattr(layer.mlp, "down_proj", None))
            and not layer._forward_hooks and not layer._forward_pre_hooks]


def _undo(done: list[nn.Module]) -> None:
    for layer in done:
        layer.__class__ = type(layer).__mro__[1]
        layer.self_attn.o_proj = layer.self_attn.o_proj.original
        layer.mlp.down_proj = layer.mlp.down_proj.original
        del layer._fold_kernel, layer._fold_device


@contextmanager
def folded_residuals(model: nn.Module, kernel: Any, device: str, check_ids: torch.Tensor) -> Iterator[str]:
    """Fold each decoder layer's two residual adds into its o and down GEMVs while the block
    runs (``kernel``: the linear-kernel plugin, ``(x, weight, bias)``). ``check_ids``: ``[1, T]``
    tokens, T >= 2, for the check forwards. Yields the record's label (or why not folded)."""
    sites = _sites(model)
    if not sites:
        yield "not folded: no pre-norm decoder layer with plain o_proj and down_proj"
        return
    before_many, before_one = check_logits(model, check_ids), check_logits(model, check_ids[:, :1])
    done: list[nn.Module] = []
    for layer in sites:
        layer._fold_kernel, layer._fold_device = kernel, device
        layer.self_attn.o_proj = Deferred(layer.self_attn.o_proj)
        layer.mlp.down_proj = Deferred(layer.mlp.down_proj)
        layer.__class__ = _subclass(type(layer))
        done.append(layer)
    try:
        try:
            errs = (rel_err(check_logits(model, check_ids), before_many),
                    rel_err(check_logits(model, check_ids[:, :1]), before_one))
        except Exception as exc:  # a layer called another way than the folded forward takes
            errs, why = (float("inf"), float("inf")), f"the check forward failed ({type(exc).__name__}: {exc})"
        else:
            why = f"the check forwards moved the logits by {errs[0]:.1e} / {errs[1]:.1e} (relative)"
        if not (errs[0] <= MANY_TOKENS_TOL and errs[1] <= ONE_TOKEN_TOL):
            _undo(done)
            done = []
            yield f"not folded: {why}"
            return
        yield f"residual adds -> o / down GEMV x{2 * len(done)}"
    finally:
        _undo(done)
