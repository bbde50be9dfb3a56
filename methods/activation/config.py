"""Configs of the activation-sparsity methods."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from sparsebench.api import MethodConfig


class ActivationConfig(MethodConfig):
    """``sparsity``: target fraction of the inputs zeroed at every sparsified layer, in [0, 1).
    Thresholds are calibrated on the calibration text; the record reports the fraction
    actually reached on the evaluation text."""

    sparsity: float = Field(0.5, description="target fraction of layer inputs set to zero, in [0, 1)")

    @field_validator("sparsity", mode="before")
    @classmethod
    def _in_range(cls, v: object) -> float:
        try:
            value = float(v)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ValueError(f"sparsity must be a number in [0, 1), got {v!r}") from None
        if not 0.0 <= value < 1.0:
            raise ValueError(f"sparsity must be in [0, 1) (the fraction of layer inputs set to zero), got {value:g}")
        return value


class TealConfig(ActivationConfig):
    """``allocation``: ``uniform`` (every layer input at the target) or ``greedy`` (within each
    block, sparsity moves to the inputs whose zeroing costs the least output error, keeping the
    block's fraction of skipped weight reads at the target)."""

    allocation: Literal["uniform", "greedy"] = Field(
        "greedy", description="per-layer sparsity allocation: 'uniform' or 'greedy'")


class CatsConfig(ActivationConfig):
    """CATS sparsifies only the MLP: the SiLU(gate) activations, hence the down_proj input."""


class WinaConfig(ActivationConfig):
    """WINA ranks inputs by |x_j| x ||W[:, j]||_2, one threshold per layer."""


class ChessConfig(ActivationConfig):
    """``attention``: which attention inputs are also sparsified (per-tensor thresholds):
    ``none``, ``o_proj`` (the attention output only), or ``all`` (q/k/v input and o_proj)."""

    attention: Literal["none", "o_proj", "all"] = Field(
        "o_proj", description="attention inputs also sparsified: 'none', 'o_proj' or 'all'")
