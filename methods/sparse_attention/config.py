"""Configs of the sparse-attention methods.

Every refusal names the field, the value and what is allowed. Values may arrive as the
command line's strings (``--window 512``, ``--selection-layers 2,15``).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from sparsebench.api import MethodConfig

PatternName = Literal["a_shape", "vertical_slash", "block_sparse"]
PATTERNS: tuple[str, ...] = ("a_shape", "vertical_slash", "block_sparse")
#: MInference's default candidates: A-shape left out (README, "MInference recall favours
#: A-shape": on prose it narrowly wins heads that retrieve, and passkey fell from 3/3 to 0/3)
DEFAULT_PATTERNS: tuple[str, ...] = ("vertical_slash", "block_sparse")


def _number(field: str, v: Any, allowed: str) -> float:
    if isinstance(v, bool):
        raise ValueError(f"{field} must be {allowed}, got {v!r}")
    try:
        value = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"{field} must be {allowed}, got {v!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{field} must be {allowed}, got {v!r}")
    return value


def _integer(field: str, v: Any, minimum: int, allowed: str) -> int:
    value = _number(field, v, allowed)
    if value != int(value) or value < minimum:
        raise ValueError(f"{field} must be {allowed}, got {v!r}")
    return int(value)


def _parse_list(v: Any) -> Any:
    """``"2,15"``, ``"2 15"`` or ``"[2, 15]"`` (what the CLI passes) -> list; others as they are."""
    if isinstance(v, int) and not isinstance(v, bool):
        return [v]
    if not isinstance(v, str):
        return v
    s = v.strip()
    if s.lower() in ("", "none", "auto", "null"):
        return None
    if s.startswith("["):
        try:
            return json.loads(s)
        except json.JSONDecodeError:
            raise ValueError(f"not a JSON list: {v!r}") from None
    return [x for x in re.split(r"[,\s]+", s) if x]


class SparseAttentionConfig(MethodConfig):
    """Base of the family's configs."""


class StreamingConfig(SparseAttentionConfig):
    """StreamingLLM as an attention pattern: each query attends the first ``sinks`` tokens and
    the last ``window`` tokens up to and including itself (prefill and decode)."""

    sinks: int = Field(4, description="attention-sink tokens at the start every query attends (>= 0)")
    window: int = Field(1024, description="most recent tokens (the query's own included) every query attends (> 0)")

    @field_validator("sinks", mode="before")
    @classmethod
    def _sinks(cls, v: Any) -> int:
        return _integer("sinks", v, 0, "an integer >= 0 (attention-sink tokens)")

    @field_validator("window", mode="before")
    @classmethod
    def _window(cls, v: Any) -> int:
        return _integer("window", v, 1, "an integer > 0 (tokens of the sliding window)")


class MInferenceConfig(SparseAttentionConfig):
    """MInference: one pattern per head chosen on the calibration text, its indices estimated
    online at every long enough prefill; decode stays dense."""

    density: float = Field(0.2, description="target fraction of the causal query-key pairs computed at prefill, in (0, 1]")
    last_q: int = Field(64, description="last queries whose scores estimate the vertical/slash indices (> 0)")
    block_size: int = Field(64, description="block edge in tokens of the block patterns (> 0)")
    min_length: int = Field(512, description="prompts shorter than this (tokens) are prefilled densely (>= 1)")
    patterns: tuple[PatternName, ...] = Field(
        DEFAULT_PATTERNS, description="candidate head patterns, from a_shape, vertical_slash, block_sparse "
                                      "(comma separated; default vertical_slash,block_sparse)")

    @field_validator("density", mode="before")
    @classmethod
    def _density(cls, v: Any) -> float:
        value = _number("density", v, "a number in (0, 1] (fraction of causal query-key pairs computed)")
        if not 0.0 < value <= 1.0:
            raise ValueError(f"density must be in (0, 1] (fraction of causal query-key pairs computed), got {v!r}")
        return value

    @field_validator("last_q", "block_size", mode="before")
    @classmethod
    def _positive(cls, v: Any, info: Any) -> int:
        return _integer(info.field_name, v, 1, "an integer > 0")

    @field_validator("min_length", mode="before")
    @classmethod
    def _min_length(cls, v: Any) -> int:
        return _integer("min_length", v, 1, "an integer >= 1 (tokens)")

    @field_validator("patterns", mode="before")
    @classmethod
    def _parse_patterns(cls, v: Any) -> Any:
        v = _parse_list(v)
        if v is None or (isinstance(v, (list, tuple)) and not v):
            raise ValueError(f"patterns must list at least one of {', '.join(PATTERNS)}, got {v!r}")
        if isinstance(v, (list, tuple)):
            bad = [p for p in v if p not in PATTERNS]
            if bad:
                raise ValueError(f"patterns may only hold {', '.join(PATTERNS)}, got {bad}")
            if len(set(v)) != len(v):
                raise ValueError(f"patterns lists a pattern twice: {list(v)}")
        return v


class DecodeBudgetConfig(SparseAttentionConfig):
    """Decode budget of the top-k methods: ``budget`` keys per decode step, as a fraction of the
    context (``budget_unit=fraction``, in (0, 1]) or a token count (``tokens``, an integer >= 1)."""

    budget: float = Field(0.25, description="keys attended per decode step: a fraction of the context in (0, 1], "
                                            "or a token count with --budget-unit tokens")
    budget_unit: Literal["fraction", "tokens"] = Field("fraction", description="'fraction' or 'tokens'")

    @field_validator("budget", mode="before")
    @classmethod
    def _budget(cls, v: Any) -> float:
        value = _number("budget", v, "a number > 0 (a fraction in (0, 1] or a token count)")
        if value <= 0.0:
            raise ValueError(f"budget must be > 0 (a fraction in (0, 1] or a token count), got {v!r}")
        return value

    @model_validator(mode="after")
    def _budget_fits_unit(self) -> DecodeBudgetConfig:
        if self.budget_unit == "fraction" and self.budget > 1.0:
            raise ValueError(f"budget must be in (0, 1] with budget_unit='fraction' (a fraction of the context), "
                             f"got {self.budget:g}; for a token count set budget_unit='tokens'")
        if self.budget_unit == "tokens" and self.budget != int(self.budget):
            raise ValueError(f"budget must be an integer >= 1 with budget_unit='tokens', got {self.budget:g}")
        return self


class QuestConfig(DecodeBudgetConfig):
    """Quest: pages of ``page_size`` keys with per-page min/max; each query head attends the
    pages of highest upper bound (the current page always). Prefill dense; the first
    ``dense_layers`` layers decode densely (as in the paper)."""

    page_size: int = Field(16, description="tokens per page (> 0)")
    dense_layers: int = Field(2, description="first layers that decode densely (>= 0)")

    @field_validator("page_size", mode="before")
    @classmethod
    def _page(cls, v: Any) -> int:
        return _integer("page_size", v, 1, "an integer > 0 (tokens per page)")

    @field_validator("dense_layers", mode="before")
    @classmethod
    def _dense(cls, v: Any) -> int:
        return _integer("dense_layers", v, 0, "an integer >= 0 (first layers decoded densely)")


class TidalDecodeConfig(DecodeBudgetConfig):
    """TidalDecode: full attention in the ``selection_layers``, which pick each head's top-k
    token positions; every later layer attends only those positions (until the next selection
    layer). Layers before the first selection layer decode densely; prefill dense.
    ``selection_layers`` unset: layer 2 and the middle layer (the paper's choice)."""

    selection_layers: tuple[int, ...] | None = Field(
        None, description="layers doing full attention and token selection, e.g. 2,15 (default: 2 and the middle layer)")

    @field_validator("selection_layers", mode="before")
    @classmethod
    def _layers(cls, v: Any) -> Any:
        v = _parse_list(v)
        if v is None:
            return None
        if isinstance(v, (list, tuple)):
            if not v:
                raise ValueError("selection_layers must list at least one layer index, e.g. 2,15")
            out = [_integer("selection_layers", x, 0, "a list of layer indices >= 0") for x in v]
            if len(set(out)) != len(out):
                raise ValueError(f"selection_layers lists a layer twice: {out}")
            return tuple(sorted(out))
        return v
