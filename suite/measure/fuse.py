"""Fused sibling projections (q/k/v, gate/up) for latency measurement only.

At batch 1 a decode step is a chain of matrix-vector products. An 8B Llama's k_proj and
v_proj read 8 MB each, too little to fill a GPU, and every projection is one more kernel
boundary; serving engines therefore multiply by the concatenated weight once. This does
the same on any transformers model without touching its attention or MLP code: the
first sibling the module calls (``q_proj``, ``gate_proj``) multiplies by the concatenated
weight and keeps the other slices; each later sibling returns its slice when called with
the very same input tensor (identity), and computes its own product otherwise, so another
call order or input is slower, never wrong. ``fuse_checked_`` also runs one forward before
and after and undoes any group whose siblings did not read the fused product.

The separate weights become views of the fused one, so the model's stored bytes do not
change. Plain ``nn.Linear`` without hooks are fused here; a layer a method replaced (packed,
sparse, quantized) is fused only when its class says how (``fuse_siblings_``, below), else
left alone. ``unfuse_projections_`` restores independent weights.

A method's module opts in with ``fuse_siblings_(self, siblings) -> FusedProduct | str``:
``siblings`` are the group's other modules (same class, in call order); it returns the
reason it cannot fuse with them, or an object whose ``__call__(x)`` computes the modules'
outputs concatenated along the last dimension and whose ``undo()`` gives each module back
weights of its own (while fused, their weights may be views of one concatenated tensor).
The suite finds it by that name only: it imports no method.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .spread import other_blas_spread, rel_err

#: sibling projections that read the same input, lead first. Checked in transformers 5.x:
#: Llama/Mistral/Qwen2/Qwen3 attention call q_proj, k_proj, v_proj in that order on the same
#: ``hidden_states``; their MLPs call gate_proj before up_proj on the same ``x``.
GROUPS: dict[str, tuple[str, ...]] = {"qkv": ("q_proj", "k_proj", "v_proj"), "gate_up": ("gate_proj", "up_proj")}

# A fused product sums in another order than three separate ones (other GEMM shapes, other
# cuBLAS algorithms): in bf16 that moves logits by ~1e-3 relative; a wrong slice by ~1.
CHECK_TOL = 0.1


class Handoff:
    """One fused group: its modules, and the last fused product waiting for the siblings."""

    def __init__(self, kind: str, path: str, modules: list[nn.Linear]):
        self.kind, self.path = kind, path
        self.modules = modules
        self.sizes = [m.out_features for m in modules]
        self.input: torch.Tensor | None = None
        self.outputs: tuple[torch.Tensor, ...] | None = None
        self.served = 0  # sibling calls answered from the fused product (eager calls only)
        self.computed = 0  # sibling calls that fell back to their own product (eager only)
        self.product: Any = None  # a method module's FusedProduct (None: plain nn.Linear fusion)


class _FusedLead(nn.Linear):
    """The first sibling: one product with the concatenated weight, slices handed on."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h: Handoff = self._handoff
        parts = F.linear(x, self.fused_weight, self.fused_bias).split(h.sizes, dim=-1)
        h.input, h.outputs = x, parts
        return parts[0]


def _handed_slice(sibling: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """A later sibling's slice of the lead's product when called with the very same input
    (None: it computes its own); the last sibling drops the group's references."""
    h: Handoff = sibling._handoff
    i: int = sibling._handoff_index
    if h.outputs is not None and h.input is x:
        y = h.outputs[i]
        if i == len(h.sizes) - 1:
            h.input = h.outputs = None
        if not torch.compiler.is_compiling():
            h.served += 1
        return y
    if not torch.compiler.is_compiling():
        h.computed += 1
    return None


class _FusedSibling(nn.Linear):
    """A later sibling: its slice of the lead's product when the input is the same tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _handed_slice(self, x)
        return y if y is not None else F.linear(x, self.weight, self.bias)


class _GenericLead:
    """Mixed in before a method's module class: the first sibling computes the group's
    concatenated product with the module's own ``FusedProduct`` and hands the slices on."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h: Handoff = self._handoff
        parts = self._fused_product(x).split(h.sizes, dim=-1)
        h.input, h.outputs = x, parts
        return parts[0]


class _GenericSibling:
    """Mixed in before a method's module class: the lead's slice for the very same input,
    else the module's own forward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _handed_slice(self, x)
        return y if y is not None else super().forward(x)


_MIXED: dict[tuple[type, type], type] = {}


def _mixed(role: type, cls: type) -> type:
    """``role`` (lead or sibling) in front of a module class, one class per pair."""
    key = (role, cls)
    if key not in _MIXED:
        _MIXED[key] = type(f"{role.__name__.lstrip('_').removeprefix('Generic')}Fused{cls.__name__}", (role, cls), {})
    return _MIXED[key]


@dataclass
class FusionReport:
    """Which groups are fused (by the module path of their parent) and which were not, why."""

    groups: dict[str, list[str]] = field(default_factory=dict)  # kind -> parent paths
    skipped: dict[str, str] = field(default_factory=dict)  # "path:kind" -> why not
    handoffs: list[Handoff] = field(default_factory=list, repr=False)

    @property
    def count(self) -> int:
        return len(self.handoffs)

    def summary(self) -> str:
        """``qkv x32, gate_up x32`` (or ``none``)."""
        return ", ".join(f"{k} x{len(v)}" for k, v in self.groups.items() if v) or "none"

    def where(self) -> str:
        """``qkv: model.layers.{0-31}.self_attn; gate_up: model.layers.{0-31}.mlp``."""
        return "; ".join(f"{k}: {compact_paths(v)}" for k, v in self.groups.items() if v) or "none"


def compact_paths(paths: list[str]) -> str:
    """``model.layers.{0-2,5}.mlp`` for paths that differ only in one layer index."""
    by_pattern: dict[str, list[int]] = {}
    rest: list[str] = []
    for p in paths:
        m = re.fullmatch(r"(.*\.)(\d+)(\..*|)", p)
        if m:
            by_pattern.setdefault(m.group(1) + "{}" + m.group(3), []).append(int(m.group(2)))
        else:
            rest.append(p)
    out = []
    for pat, idx in by_pattern.items():
        idx.sort()
        runs: list[str] = []
        start = prev = idx[0]
        for i in [*idx[1:], None]:
            if i is not None and i == prev + 1:
                prev = i
                continue
            runs.append(str(start) if start == prev else f"{start}-{prev}")
            if i is not None:
                start = prev = i
        out.append(pat.replace("{}", "{" + ",".join(runs) + "}"))
    return ", ".join(out + rest)


def _opted_in(mods: list[Any]) -> bool:
    """Modules of one class that says how to fuse (``fuse_siblings_``), without hooks."""
    cls = type(mods[0])
    return (cls is not nn.Linear and hasattr(cls, "fuse_siblings_") and all(type(m) is cls for m in mods)
            and not any(m._forward_hooks or m._forward_pre_hooks for m in mods))


def _plain(mod: Any) -> bool:
    return type(mod) is nn.Linear and not mod._forward_hooks and not mod._forward_pre_hooks


def _owns_storage(t: torch.Tensor) -> bool:
    """The tensor is the whole of its storage (not tied to, or a view of, another one)."""
    return t.is_contiguous() and t.untyped_storage().nbytes() == t.numel() * t.element_size()


def _why_not(mods: list[Any]) -> str | None:
    if not all(_plain(m) for m in mods):
        return "not all plain nn.Linear without hooks"
    w0 = mods[0].weight
    if any(m.in_features != mods[0].in_features for m in mods):
        return "different input widths"
    if any(m.weight.dtype != w0.dtype or m.weight.device != w0.device for m in mods):
        return "different dtypes or devices"
    if len({m.bias is None for m in mods}) > 1:
        return "bias on some only"
    if any(m.bias is not None and (m.bias.dtype != w0.dtype or not _owns_storage(m.bias)) for m in mods):
        return "bias dtype differs or is shared"
    if w0.device.type == "meta" or not all(_owns_storage(m.weight) for m in mods):
        return "weights shared with other tensors"
    return None


@torch.no_grad()
def _fuse_group(kind: str, path: str, mods: list[nn.Linear]) -> Handoff:
    h = Handoff(kind, path, mods)
    w = torch.cat([m.weight for m in mods])
    b = torch.cat([m.bias for m in mods]) if mods[0].bias is not None else None
    start = 0
    for i, (m, n) in enumerate(zip(mods, h.sizes, strict=True)):
        # the old tensors are released here: the views are now the only copy
        m.weight = nn.Parameter(w[start: start + n], requires_grad=m.weight.requires_grad)
        if b is not None:
            m.bias = nn.Parameter(b[start: start + n], requires_grad=m.bias.requires_grad)
        m._handoff, m._handoff_index = h, i
        m.__class__ = _FusedLead if i == 0 else _FusedSibling
        start += n
    mods[0].register_buffer("fused_weight", w, persistent=False)
    mods[0].register_buffer("fused_bias", b, persistent=False)
    return h


@torch.no_grad()
def _fuse_opted_in(kind: str, path: str, mods: list[nn.Module]) -> Handoff | str:
    product = mods[0].fuse_siblings_(mods[1:])
    if isinstance(product, str):
        return product
    h = Handoff(kind, path, mods)
    h.product = product
    cls = type(mods[0])
    mods[0]._fused_product = product
    for i, m in enumerate(mods):
        m._handoff, m._handoff_index, m._fused_from = h, i, cls
        m.__class__ = _mixed(_GenericLead if i == 0 else _GenericSibling, cls)
    return h


@torch.no_grad()
def _unfuse_group(h: Handoff) -> None:
    if h.product is not None:
        h.product.undo()
        del h.modules[0]._fused_product
        for m in h.modules:
            m.__class__ = m._fused_from
            del m._handoff, m._handoff_index, m._fused_from
        h.input = h.outputs = h.product = None
        return
    lead = h.modules[0]
    del lead.fused_weight, lead.fused_bias
    for m in h.modules:
        m.weight = nn.Parameter(m.weight.clone(), requires_grad=m.weight.requires_grad)
        if m.bias is not None:
            m.bias = nn.Parameter(m.bias.clone(), requires_grad=m.bias.requires_grad)
        del m._handoff, m._handoff_index
        m.__class__ = nn.Linear
    h.input = h.outputs = None


def fuse_projections_(model: nn.Module, groups: dict[str, tuple[str, ...]] | None = None) -> FusionReport:
    """Fuse every group of sibling projections found in ``model`` (in place)."""
    report = FusionReport()
    for kind, names in (groups or GROUPS).items():
        report.groups[kind] = []
        for path, parent in list(model.named_modules()):
            if not all(isinstance(getattr(parent, n, None), nn.Module) for n in names):
                continue
            mods = [getattr(parent, n) for n in names]
            if _opted_in(mods):
                fused = _fuse_opted_in(kind, path, mods)
                if isinstance(fused, str):
                    report.skipped[f"{path}:{kind}"] = fused
                else:
                    report.handoffs.append(fused)
                    report.groups[kind].append(path)
                continue
            why = _why_not(mods)
            if why:
                report.skipped[f"{path}:{kind}"] = why
                continue
            report.handoffs.append(_fuse_group(kind, path, mods))
            report.groups[kind].append(path)
    return report


def fused_groups(model: nn.Module) -> list[Handoff]:
    return [m._handoff for m in model.modules() if type(m) is _FusedLead or isinstance(m, _GenericLead)]


def unfuse_projections_(model: nn.Module) -> int:
    """Give every fused projection its own weight and plain class again; returns how many
    groups were undone."""
    groups = fused_groups(model)
    for h in groups:
        _unfuse_group(h)
    return len(groups)


def check_logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """fp32 logits of one cache-free forward over ``ids`` ([batch, seq]): what a check
    forward compares before and after a change to the model."""
    with torch.inference_mode():
        return model(input_ids=ids, use_cache=False).logits.float()


@contextmanager
def checked_fold(model: nn.Module, ids: torch.Tensor | None, apply: Callable[[], None], undo: Callable[[], None],
                 tol: float, label: str) -> Iterator[str]:
    """A latency-only fold while the block runs: ``apply()`` makes it, ``undo()`` takes it back
    on exit. With ``ids`` one forward before and one after must agree within ``tol``
    (relative), else it is undone at once and the yielded label says by how much; otherwise
    ``label`` is yielded (``ids`` None: no check, tests only)."""
    before = check_logits(model, ids) if ids is not None else None
    apply()
    applied = True
    try:
        if before is not None:
            err = rel_err(check_logits(model, ids), before)
            if not err <= tol:
                undo()
                applied = False
                yield f"not folded: the check forward moved the logits by {err:.1e} (relative)"
                return
        yield label
    finally:
        if applied:
            undo()


@dataclass
class FusionCheck:
    """What ``fuse_checked_`` left fused, and how the fused forward compared."""

    report: FusionReport
    rel_err: float | None = None  # logits, fused vs separate, on the check input
    spread: float | None = None  # the fused logits under the other cuBLAS library (when rel_err >= tol)
    undone: dict[str, str] = field(default_factory=dict)  # "path:kind" -> why it was undone

    @property
    def label(self) -> str:
        """The ``kernels["projections"]`` entry of a record."""
        return f"fused({self.report.summary()})" if self.report.count else "separate"

    def note(self) -> str:
        r = self.report
        parts = [f"latency measured with fused projections ({r.summary()}): {r.where()}"
                 if r.count else "latency measured with separate projections (nothing fused)"]
        if self.rel_err is not None:
            parts.append(f"check forward: logits rel err {self.rel_err:.1e} vs separate")
        if self.spread is not None and r.count:
            parts.append(f"inconclusive: the model's own logits move by {self.spread:.1e} under another "
                         "cuBLAS library (it amplifies last-bit differences, e.g. thresholds on random "
                         "weights), so the groups whose siblings all read their slices were kept")
        if r.skipped:
            parts.append(f"left separate: {len(r.skipped)} group(s), e.g. {next(iter(r.skipped.items()))}")
        if self.undone:
            parts.append(f"undone after the check: {len(self.undone)} group(s), e.g. "
                         f"{next(iter(self.undone.items()))}")
        return "; ".join(parts)


def fuse_checked_(model: nn.Module, ids: torch.Tensor, tol: float = CHECK_TOL) -> FusionCheck:
    """Fuse, then prove it on one forward over ``ids`` ([batch, seq]): every sibling must have
    read its slice (else that group is undone: it would only cost) and the logits must match
    the unfused ones within ``tol`` (else everything is undone), unless the fused logits
    themselves move past ``tol`` under the other cuBLAS library: then the comparison says
    nothing (``spread.py``) and only the slice check decides."""
    ref = check_logits(model, ids)
    check = FusionCheck(fuse_projections_(model))
    if not check.report.count:
        return check
    for h in check.report.handoffs:
        h.served = h.computed = 0
    got = check_logits(model, ids)
    check.rel_err = rel_err(got, ref)
    del ref
    read = {id(h): (h.served, h.computed) for h in check.report.handoffs}  # before any other forward
    failed = not check.rel_err < tol
    if failed:
        check.spread = other_blas_spread(lambda: check_logits(model, ids), got)
        failed = not check.spread >= tol
    del got
    for h in list(check.report.handoffs):
        served, computed = read[id(h)]
        why = (f"logits moved by {check.rel_err:.2e} relative" if failed else
               None if served == len(h.sizes) - 1 and computed == 0 else
               f"siblings read the fused product {served}x, computed their own {computed}x")
        if why:
            _unfuse_group(h)
            check.report.handoffs.remove(h)
            check.report.groups[h.kind].remove(h.path)
            check.undone[f"{h.path}:{h.kind}"] = why
    return check
