"""The config shared by score-based pruning methods (magnitude, Wanda)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from sparsebench.api import MethodConfig

from .masks import parse_pattern


class PruningConfig(MethodConfig):
    """``sparsity``: fraction of weights zeroed (default 0.5; for N:M it is implied, 1 - N/M).
    ``pattern``: ``unstructured`` or ``N:M`` (N kept of every M, e.g. ``2:4``, ``4:8``).
    ``comparison``: for unstructured, rank scores within each output ``row`` or the whole ``layer``.
    """

    sparsity: float = Field(0.5, description="fraction of weights set to zero, in [0, 1)")
    pattern: str = Field("unstructured", description="'unstructured' or 'N:M' (N kept of every M)")
    comparison: Literal["row", "layer"] = Field("row", description="unstructured ranking group")

    @model_validator(mode="before")
    @classmethod
    def _resolve(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        pattern = data.get("pattern", "unstructured")
        nm = parse_pattern(pattern) if isinstance(pattern, str) else None
        given = data.get("sparsity")
        if given is not None:
            try:
                given = float(given)
            except (TypeError, ValueError):
                raise ValueError(f"sparsity must be a number in [0, 1), got {data['sparsity']!r}") from None
            if not 0.0 <= given < 1.0:
                raise ValueError(f"sparsity must be in [0, 1) (the fraction of weights set to zero), got {given:g}")
            data["sparsity"] = given
        if nm is not None:
            implied = 1.0 - nm[0] / nm[1]
            if given is not None and abs(float(given) - implied) > 1e-9:
                raise ValueError(
                    f"sparsity {given} conflicts with pattern {pattern}, which fixes it at "
                    f"{implied:g}; leave sparsity out when using an N:M pattern"
                )
            data["sparsity"] = implied
        return data
