"""The definition of the thresholded sparse GEMV (pure PyTorch, fp32 accumulation).

    keep = |x| > threshold                    (threshold: a scalar or one value per input)
    y    = x[keep] @ W_t[keep, :] (+ bias)    i.e. y = W[:, keep] @ x[keep] for W = W_t^T

``x`` is ``[..., K]`` (decode: a few rows), ``w_t`` is the weight stored transposed,
``[K, N]``, so that input ``j`` owns the contiguous row ``w_t[j]``. Inputs that do not pass
the threshold contribute nothing and their weight rows need never be read. The threshold
is compared in fp32 with the fp32 value of ``x`` (as the fast paths do). The output has
``x``'s dtype.
"""

from __future__ import annotations

import torch


def keep_mask(x: torch.Tensor, threshold: float | torch.Tensor) -> torch.Tensor:
    """Which inputs survive: ``|x| > threshold`` compared in fp32 (broadcast over rows)."""
    t = threshold.float() if isinstance(threshold, torch.Tensor) else float(threshold)
    return x.float().abs() > t


def sparse_gemv_ref(x: torch.Tensor, w_t: torch.Tensor, threshold: float | torch.Tensor,
                    bias: torch.Tensor | None = None) -> torch.Tensor:
    k, n = w_t.shape
    if x.shape[-1] != k:
        raise ValueError(f"x has {x.shape[-1]} inputs but w_t has {k} rows")
    xf = x.reshape(-1, k).float()
    kept = torch.where(keep_mask(xf, threshold), xf, torch.zeros((), dtype=xf.dtype, device=xf.device))
    y = kept @ w_t.float()
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype).reshape(*x.shape[:-1], n)
