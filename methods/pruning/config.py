"""The config shared by the mask-based pruning methods (magnitude, Wanda, SparseGPT, DSnoT)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from fnmatch import fnmatchcase
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from sparsebench.api import MethodConfig

from .masks import parse_pattern


def _layer_sparsity_pairs(value: Any) -> Any:
    """Accept a mapping, a JSON object string (what the CLI passes) or a list of pairs."""
    if value is None:
        return ()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(
                "layer_sparsity must be a JSON object of glob pattern -> sparsity, such as "
                f"'{{\"mlp.down_proj\": 0.3, \"layers.0.*\": 0.2}}', got {value!r}"
            ) from None
    if isinstance(value, dict):
        return tuple(value.items())
    return value


class PruningConfig(MethodConfig):
    """``sparsity``: fraction of weights zeroed (default 0.5; for N:M it is implied, 1 - N/M).
    ``pattern``: ``unstructured`` or ``N:M`` (N kept of every M, e.g. ``2:4``, ``4:8``).
    ``comparison``: for unstructured, rank scores within each output ``row`` or the whole ``layer``.
    ``layer_sparsity``: per-layer overrides of ``sparsity`` (unstructured only), glob pattern ->
    sparsity. A pattern matches a layer named ``layers.<i>.<path>`` (``layers.3.mlp.down_proj``)
    when it matches the whole name or its tail after a dot (``mlp.down_proj``, ``*.q_proj``,
    ``layers.0.*``); when several match, the one listed last wins. Every pattern must match
    at least one layer of the model.

    An empty ``layer_sparsity`` is left out of ``to_dict`` (and so of the spec key): a config
    without overrides is numerically what it was before the field existed, and its records
    stay comparable with those made then.
    """

    sparsity: float = Field(0.5, description="fraction of weights set to zero, in [0, 1)")
    pattern: str = Field("unstructured", description="'unstructured' or 'N:M' (N kept of every M)")
    comparison: Literal["row", "layer"] = Field("row", description="unstructured ranking group")
    layer_sparsity: tuple[tuple[str, float], ...] = Field(
        (), description='per-layer sparsity, JSON object of glob -> sparsity, e.g. '
        '\'{"mlp.down_proj": 0.3, "layers.0.*": 0.2}\' (unstructured only; last match wins)')

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
        if "layer_sparsity" in data:
            data["layer_sparsity"] = _layer_sparsity_pairs(data["layer_sparsity"])
        if nm is not None:
            implied = 1.0 - nm[0] / nm[1]
            if given is not None and abs(float(given) - implied) > 1e-9:
                raise ValueError(
                    f"sparsity {given:g} conflicts with pattern {pattern}, which keeps {nm[0]} of every "
                    f"{nm[1]} weights and so fixes the sparsity at {implied:g}; leave sparsity out "
                    "when using an N:M pattern (or use pattern 'unstructured' for other sparsities)"
                )
            if data.get("layer_sparsity"):
                raise ValueError(
                    f"layer_sparsity applies to the unstructured pattern only; pattern {pattern} fixes "
                    f"every layer's sparsity at {implied:g}"
                )
            data["sparsity"] = implied
        return data

    @field_validator("layer_sparsity")
    @classmethod
    def _check_layer_sparsity(cls, v: tuple[tuple[str, float], ...]) -> tuple[tuple[str, float], ...]:
        seen = set()
        for pat, sp in v:
            if not pat:
                raise ValueError("layer_sparsity has an empty pattern")
            if pat in seen:
                raise ValueError(f"layer_sparsity lists pattern {pat!r} twice")
            seen.add(pat)
            if not 0.0 <= sp < 1.0:
                raise ValueError(f"layer_sparsity[{pat!r}] must be in [0, 1), got {sp:g}")
        return v

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if not self.layer_sparsity:
            out.pop("layer_sparsity")
        else:
            out["layer_sparsity"] = [list(p) for p in self.layer_sparsity]
        return out

    def sparsity_of(self, layer: str) -> float:
        """The sparsity of the layer named ``layers.<i>.<path>``: the last matching override,
        else ``sparsity``."""
        out = self.sparsity
        for pat, sp in self.layer_sparsity:
            if layer_matches(layer, pat):
                out = sp
        return out

    def check_layer_names(self, names: Iterable[str]) -> None:
        """Refuse ``layer_sparsity`` patterns that match none of ``names``."""
        names = list(names)
        unused = [p for p, _ in self.layer_sparsity if not any(layer_matches(n, p) for n in names)]
        if unused:
            example = ", ".join(names[:3])
            raise ValueError(
                f"layer_sparsity pattern(s) {', '.join(map(repr, unused))} match no linear layer of "
                f"this model; layers are named like {example} (a pattern may also match the tail "
                "after a dot, e.g. 'mlp.down_proj' or '*.q_proj')"
            )


def layer_matches(name: str, pattern: str) -> bool:
    """Whether glob ``pattern`` matches layer ``name`` or a tail of it after a dot."""
    return fnmatchcase(name, pattern) or fnmatchcase(name, "*." + pattern)
