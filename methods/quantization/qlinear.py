"""``QuantLinear``: a linear layer whose weight is held packed (codes + per-group scale/offset).

It replaces ``nn.Linear`` in the model, so the model's stored bytes are the packed bytes.
The forward pass uses the Triton int4 kernel for 4-bit weights on CUDA (``kernel`` auto or
fast). Otherwise it runs the reference: the dequantized weight and a dense matmul. The
reference keeps that dequantized weight after its first use (a plain attribute, not a
buffer, so stored bytes stay the packed bytes): unpacking every layer on every forward
made a 200-item cloze task on the 135M default model take tens of minutes on 2 CPU cores.
The cost is memory: on CPU the process holds a dense copy as well (peak RSS shows it).
"""

from __future__ import annotations

import torch
from torch import nn

from sparsebench.kernels import int4_matmul as int4

from ..fused_views import concat_as_views_, mixed_bias, own_copies_
from .grid import Grid, dequantize
from .packing import pack, unpack

PARAM_DTYPE = torch.float16  # scales and offsets: 2 bytes each per group


class QuantLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, grid: Grid, bias: bool, kernel: str = "auto",
                 device: torch.device | str | None = None, compute_dtype: torch.dtype = torch.float32):
        super().__init__()
        self.in_features, self.out_features, self.grid = in_features, out_features, grid
        self.kernel = kernel
        self.compute_dtype = compute_dtype
        groups = grid.groups(in_features)
        self.register_buffer("qweight", torch.zeros(out_features, in_features * grid.bits // 8, dtype=torch.uint8,
                                                    device=device))
        self.register_buffer("scales", torch.zeros(out_features, groups, dtype=PARAM_DTYPE, device=device))
        self.register_buffer("offsets", torch.zeros(out_features, groups, dtype=PARAM_DTYPE, device=device))
        self.bias = nn.Parameter(torch.zeros(out_features, dtype=compute_dtype, device=device)) if bias else None
        self._dense: tuple[tuple[int, ...], torch.Tensor] | None = None  # (buffer versions, weight)

    @classmethod
    def from_codes(cls, linear: nn.Linear, q: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor,
                   grid: Grid, kernel: str = "auto") -> QuantLinear:
        w = linear.weight
        mod = cls(linear.in_features, linear.out_features, grid, linear.bias is not None, kernel,
                  device=w.device, compute_dtype=w.dtype)
        mod.qweight.copy_(pack(q, grid.bits))
        mod.scales.copy_(scale.to(PARAM_DTYPE))
        mod.offsets.copy_(offset.to(PARAM_DTYPE))
        if linear.bias is not None:
            mod.bias.data.copy_(linear.bias.data)
        return mod

    def codes(self) -> torch.Tensor:
        return unpack(self.qweight, self.grid.bits, self.in_features)

    def dequantized(self) -> torch.Tensor:
        """The weight this layer computes with, fp32 ``[out, in]``."""
        return dequantize(self.codes(), self.scales, self.offsets, self.grid.group_of(self.in_features))

    def weight_zero_count(self) -> tuple[int, int]:
        """(weights that dequantize to exactly 0, all weights): how the harness counts the
        sparsity and the decode bytes of packed layers without importing this module."""
        w = self.dequantized()
        return int((w == 0).sum()), w.numel()

    def uses_fast_kernel(self, x: torch.Tensor) -> bool:
        return self.grid.bits == 4 and self.kernel != "ref" and x.device.type == "cuda"

    def reference_weight(self, dtype: torch.dtype) -> torch.Tensor:
        """The dequantized weight in ``dtype``, rebuilt only when a packed buffer changed."""
        versions = (self.qweight._version, self.scales._version, self.offsets._version,
                    self.qweight.data_ptr(), self.scales.data_ptr())
        if self._dense is None or self._dense[0] != versions or self._dense[1].dtype != dtype:
            self._dense = (versions, self.dequantized().to(dtype))
        return self._dense[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.uses_fast_kernel(x):
            # scales/offsets stay fp16: the kernel converts them in registers
            y = int4.int4_matmul(x, self.qweight, self.scales, self.offsets,
                                 self.grid.group_of(self.in_features), impl="triton")
        else:
            y = nn.functional.linear(x, self.reference_weight(x.dtype))
        return y + self.bias if self.bias is not None else y

    def fuse_siblings_(self, siblings: list[QuantLinear]) -> _FusedQuantProduct | str:
        """Fuse with sibling projections that read the same input (the harness's latency-only
        projection fusion, ``sparsebench.measure.fuse``): the packed codes, scales and offsets
        concatenated along the output rows, one int4 kernel call for q/k/v and one for
        gate/up. Each layer's buffers become row slices of the concatenated ones, so the
        stored bytes do not change. Returns why not when the layers differ or the int4 kernel
        would not run (fusing pays only with it)."""
        mods = [self, *siblings]
        if self.grid.bits != 4 or self.kernel == "ref":
            return "not on the int4 kernel (bits other than 4, or kernel 'ref'): fusing pays only with it"
        if any(m.grid != self.grid or m.in_features != self.in_features or m.kernel != self.kernel
               or m.compute_dtype != self.compute_dtype or m.qweight.device != self.qweight.device for m in mods):
            return "different grids, input widths, kernels, dtypes or devices"
        if mixed_bias(mods):
            return "bias on some only"
        return _FusedQuantProduct(mods)

    def extra_repr(self) -> str:
        return (f"in={self.in_features}, out={self.out_features}, bits={self.grid.bits}, "
                f"group={self.grid.group_size or 'channel'}, symmetric={self.grid.symmetric}")


class _FusedQuantProduct:
    """Sibling ``QuantLinear`` layers as one: their packed buffers concatenated along the
    output rows (each layer's buffer becomes a row slice of them), biases concatenated. On
    the int4 kernel one call computes all outputs; elsewhere (the reference) the layers'
    own products are concatenated, so the result is theirs exactly."""

    BUFFERS = ("qweight", "scales", "offsets")

    def __init__(self, mods: list[QuantLinear]):
        self.mods, self.lead = mods, mods[0]
        self.packed = concat_as_views_(mods, {b: 0 for b in (*self.BUFFERS, "bias")})
        self.bias = self.packed.pop("bias")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.lead.uses_fast_kernel(x):  # each layer's own forward (not the fused class's)
            return torch.cat([QuantLinear.forward(m, x) for m in self.mods], dim=-1)
        p = self.packed
        y = int4.int4_matmul(x, p["qweight"], p["scales"], p["offsets"],
                             self.lead.grid.group_of(self.lead.in_features), impl="triton")
        return y + self.bias if self.bias is not None else y

    def undo(self) -> None:
        own_copies_(self.mods, (*self.BUFFERS, "bias"))
        self.mods, self.packed, self.bias = [], {}, None


def set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)
