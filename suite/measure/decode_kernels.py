"""The decode step's own kernels, for the ``compile-tuned+gemv+graph`` path (latency only).

Profiled on an H200 (8B shape, bs 1, context 512, ``benchmarks/decode_probe.py ... +prof``),
the compiled decode step spends ~87% of its time in the one-row matrix products and most
of the rest in attention. Three changes, all undone when the step has been timed:

* every one-row ``F.linear`` whose weight is a plain row-major matrix goes to a dense GEMV
  kernel found through the ``sparsebench.linear_kernels`` entry points (the suite does not
  import kernels): in the step it streamed weights at ~4.1 TB/s, where inductor's tuned
  reduction with the RMSNorm or SiLU fused into it streamed ~3.4 TB/s. Products of more
  rows, and layers a method replaced with its own modules, are left as they are;
* a model on transformers' SDPA attention attends its one new token through a decode
  attention kernel found through the ``sparsebench.attention_kernels`` entry points,
  reading the static cache in place: with a mask (a static cache always passes one) SDPA
  copies K/V to every query head first, then runs a kernel built for long queries. Other
  calls (the prefill, a batch whose mask is not one contiguous run per row) still go to
  SDPA. Without the plugin the eager (matmul + softmax) attention is used, which inductor
  fuses and tunes. Another attention a method installed is kept. Each sequence's length
  goes to the kernel as the new token's position id (or the mask's last row), which the
  kernel reads itself: a length computed in the graph was one more kernel per layer;
* the RMSNorm in front of each fused q/k/v and gate/up group runs inside that group's GEMV
  (``norm_fold``);
* all layers of the static cache write at one shared position, advanced once a step
  (``cache_length``), instead of each keeping and advancing its own counter;
* each layer's RoPE of q and k and its k/v cache write run as one kernel (``rope_fold``,
  found under the ``sparsebench.attention_kernels`` entry point ``rope_cache``) on Llama
  attention over the shared-position cache: one launch a layer instead of three;
* (opt-in, ``fold_glu``) SiLU(gate) x up computed by the fused gate/up GEMV (``glu_fold``):
  on an H200 it made the step slower (4.47 against 4.20 ms: the SwiGLU GEMVs lost more than
  the 32 activation kernels cost), so the suite's paths leave it off.

Accuracy never sees any of it: the tasks ran before, on the model as the method left it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

KERNEL = "dense_gemv"
ATTENTION_KERNEL = "static_decode"
ATTENTION = "sparsebench_decode"  # the name the attention function is registered under


def set_attention(model: Any, name: str) -> None:
    """Switch a transformers model's attention implementation by name."""
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(name)
    else:  # older transformers
        model.config._attn_implementation = name


def one_row(x: Any, weight: Any, device: str) -> bool:
    """Whether the GEMV kernel takes this product: one row of x on ``device``, a 2-D weight
    of x's dtype with contiguous rows."""
    return (x.device.type == device and x.numel() == x.shape[-1] and weight.dim() == 2
            and weight.dtype == x.dtype and weight.stride(-1) == 1)


def length_rows(mask: Any) -> Any:
    """The last query row of a boolean ``[B, 1, q, L]`` mask, ``[B, L]`` (a view): the kernel
    counts each row's allowed positions as that sequence's length (in the kernel, not a kernel
    per layer). Right for a mask that allows one prefix per row (causal, no padding: the
    latency measure's inputs); the decode graph's check against an eager step and the fusion
    check's logits do not test this, so padded batches must not come here."""
    return mask[:, 0, -1, :]


def last_positions(position_ids: Any, batch: int, device: str) -> Any:
    """``[B]`` positions of the new tokens (a view of ``position_ids [B, q]``, its last column),
    or None when the attention call was not given usable ones. With no padding the new token
    at position p attends p + 1 tokens: the kernel reads that straight from the model's input,
    where the mask row must first be computed (inductor does that once per layer). Same
    no-padding rule as ``length_rows``."""
    import torch

    if (isinstance(position_ids, torch.Tensor) and position_ids.dim() == 2 and position_ids.shape[0] == batch
            and position_ids.device.type == device and position_ids.dtype in (torch.int32, torch.int64)):
        return position_ids[:, -1]
    return None


def decode_attention_function(kernel: Any, device: str) -> Any:
    """A transformers attention function: one query token with a boolean mask over a
    contiguous cache on ``device`` goes to ``kernel``; everything else to SDPA."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    def attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, dropout: float = 0.0,
                  scaling: float | None = None, **kwargs: Any) -> tuple[Any, None]:
        if (query.shape[2] == 1 and query.device.type == device and attention_mask is not None
                and attention_mask.dtype == torch.bool and attention_mask.dim() == 4
                and attention_mask.shape[-1] == key.shape[2] and dropout == 0.0
                and key.is_contiguous() and value.is_contiguous()):
            scale = scaling if scaling is not None else query.shape[-1] ** -0.5
            pos = last_positions(kwargs.get("position_ids"), query.shape[0], device)
            if pos is not None:
                out = kernel(query, key, value, pos, scale, positions=True)  # [B, Hq, D]
            else:
                out = kernel(query, key, value, length_rows(attention_mask), scale)
            return out.unsqueeze(1), None  # [B, 1, Hq, D], as the attention modules expect
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)

    return attention


def _register_attention(kernel: Any, device: str) -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    AttentionInterface.register(ATTENTION, decode_attention_function(kernel, device))
    AttentionMaskInterface.register(ATTENTION, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])  # boolean masks


PDL_ENV = "SPARSEBENCH_PDL"  # read by the kernels' launchers (kernels/launch.py)


@contextmanager
def pdl_launches() -> Iterator[None]:
    """``SPARSEBENCH_PDL=1`` while the block runs (the launchers read it at each launch), and
    whatever was there before put back after."""
    import os

    before = os.environ.get(PDL_ENV)
    os.environ[PDL_ENV] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(PDL_ENV, None)
        else:
            os.environ[PDL_ENV] = before


@contextmanager
def gemv_decode(model: Any, device: str, pdl: bool = False, fold_norms: bool = True,
                check_ids: Any = None, share_lengths: bool = True,
                fold_glu: bool = False, fold_rope: bool = True) -> Iterator[dict[str, str]]:
    """Route one-row linear products to the GEMV plugin and SDPA attention to the decode
    attention plugin (else eager) while the block runs; yields the labels for the record's
    ``kernels`` (``decode_linear``, ``decode_attention``, ``decode_norms``, and
    ``decode_launch`` with ``pdl``). ``pdl``: the plugins launch with programmatic dependent
    launch (``SPARSEBENCH_PDL=1`` while the block runs). ``fold_norms``: the RMSNorms in
    front of fused groups run inside those GEMVs (``norm_fold``; ``check_ids`` ``[1, T]``
    tokens for its check forward). ``share_lengths``: one write position for all cache
    layers (``cache_length``; label ``decode_cache``). ``fold_glu``: SiLU(gate) x up inside
    the fused gate/up GEMVs (``glu_fold``; label ``decode_mlp``; off by default: slower on an
    H200). ``fold_rope``: RoPE and the cache write in one kernel a layer (``rope_fold``; label
    ``decode_rope``; needs ``share_lengths`` and the ``rope_cache`` plugin). Raises
    ``UsageError`` when no GEMV plugin loads."""
    import os
    from contextlib import ExitStack

    import torch.nn.functional as F

    from ..registry import attention_kernels, linear_kernels
    from .cache_length import shared_lengths
    from .glu_fold import folded_glu
    from .norm_fold import folded_norms
    from .rope_fold import KERNEL as ROPE_KERNEL
    from .rope_fold import folded_rope

    kernel = linear_kernels().get(KERNEL)
    original = F.linear

    def linear(x: Any, weight: Any, bias: Any = None) -> Any:
        if one_row(x, weight, device):
            return kernel(x, weight, bias)
        return original(x, weight, bias)

    attention = getattr(model.config, "_attn_implementation", None)
    swap_to = None
    labels = {"decode_linear": f"{KERNEL}: {kernel.describe()} for one-row products, else F.linear",
              "decode_attention": f"{attention} (as installed)"}
    if attention == "sdpa":
        if ATTENTION_KERNEL in attention_kernels():
            attn_kernel = attention_kernels().get(ATTENTION_KERNEL)
            _register_attention(attn_kernel, device)
            swap_to = ATTENTION
            labels["decode_attention"] = f"{ATTENTION_KERNEL}: {attn_kernel.describe()} for one token, else sdpa"
        else:
            swap_to = "eager"
            labels["decode_attention"] = "eager (matmul + softmax, compiled): no attention kernel plugin loads"
    F.linear = linear
    try:
        if swap_to:
            set_attention(model, swap_to)
        with ExitStack() as stack:
            if pdl:
                stack.enter_context(pdl_launches())
            if os.environ.get(PDL_ENV) == "1":
                labels["decode_launch"] = ("programmatic dependent launch (Hopper+): the plugins' kernels"
                                           + (" and inductor's" if pdl else f", by {PDL_ENV}=1 in the environment"))
            if fold_norms:
                labels["decode_norms"] = stack.enter_context(folded_norms(model, kernel, device, check_ids))
            if fold_glu:  # after the norms: a norm-folded lead passes its norm to the fused product
                labels["decode_mlp"] = stack.enter_context(folded_glu(model, kernel, device, check_ids))
            if share_lengths:
                labels["decode_cache"] = stack.enter_context(shared_lengths())
            if fold_rope:  # inside shared_lengths: the fold writes at the shared position
                if not share_lengths:
                    labels["decode_rope"] = "not folded: needs the shared cache write position"
                elif ROPE_KERNEL not in attention_kernels():
                    labels["decode_rope"] = f"not folded: no {ROPE_KERNEL} attention kernel plugin loads"
                else:
                    labels["decode_rope"] = stack.enter_context(
                        folded_rope(model, attention_kernels().get(ROPE_KERNEL), check_ids))
            yield labels
    finally:
        F.linear = original
        if swap_to:
            set_attention(model, attention)
