"""Configs of the KV-cache methods, and what a budget means.

``budget`` is one field with two unambiguous forms:

- a float in (0, 1]: a fraction of the prompt (prefill) length, resolved to
  ``ceil(budget x prompt tokens)`` tokens when the prompt is prefilled;
- an integer >= 1: that many tokens.

On the command line ``--budget 0.25`` is a fraction and ``--budget 256`` a token count: a
literal with a decimal point or an exponent is a fraction, an integer literal is a count
(so ``1.0`` keeps the whole prompt, ``1`` keeps one token). A float above 1 is refused
rather than read as a count. The budget is the size of the cache: it is fixed at prefill
and kept during decode by the methods that evict while decoding (streaming-kv, h2o).
"""

from __future__ import annotations

import math
import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from sparsebench.api import MethodConfig

_INT = re.compile(r"[+-]?\d+")
BUDGET_HELP = ("cache size: a float in (0, 1] is a fraction of the prompt length (0.25), "
               "an integer >= 1 a number of tokens (256)")


def parse_budget(v: object) -> float | int:
    """A fraction (float) or a token count (int), from a number or the CLI's string."""
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise ValueError(f"budget must be a fraction in (0, 1] or a token count >= 1, got {v!r}")
    if isinstance(v, str):
        s = v.strip()
        try:
            v = int(s) if _INT.fullmatch(s) else float(s)
        except ValueError:
            raise ValueError(f"budget must be a fraction in (0, 1] (e.g. 0.25) or a token count "
                             f">= 1 (e.g. 256), got {v!r}") from None
    if isinstance(v, float):
        if not math.isfinite(v) or not 0.0 < v <= 1.0:
            hint = " (write an integer for a number of tokens)" if math.isfinite(v) and v > 1 else ""
            raise ValueError(f"budget {v:g} is not allowed: a float budget is a fraction of the prompt "
                             f"length in (0, 1]{hint}")
        return v
    if v < 1:
        raise ValueError(f"budget {v} is not allowed: an integer budget is a token count >= 1 "
                         f"(or give a fraction of the prompt length in (0, 1], e.g. 0.25)")
    return v


def budget_tokens(budget: float | int, prompt_tokens: int) -> int:
    """The budget in tokens for a prompt of ``prompt_tokens`` tokens."""
    if isinstance(budget, int):
        return budget
    return max(1, math.ceil(budget * prompt_tokens - 1e-9))


class BudgetConfig(MethodConfig):
    """Base of the evicting methods: one ``budget`` (see the module docstring)."""

    budget: float | int = Field(0.25, description=BUDGET_HELP)

    @field_validator("budget", mode="before")
    @classmethod
    def _budget(cls, v: object) -> float | int:
        return parse_budget(v)

    def reserved(self) -> tuple[int, str]:
        """Tokens the policy always keeps (sinks and/or window), and how to name them."""
        return 0, ""

    def check_tokens(self, tokens: int, prompt_tokens: int | None = None) -> None:
        """Raise ``ValueError`` when ``tokens`` cannot hold the reserved tokens."""
        need, what = self.reserved()
        if tokens < need:
            at = (f" (budget {self.budget:g} of a {prompt_tokens}-token prompt)"
                  if prompt_tokens is not None else "")
            raise ValueError(f"a budget of {tokens} tokens{at} cannot hold {what}; "
                             f"the budget must be at least {need} tokens")

    @model_validator(mode="after")
    def _fits(self) -> BudgetConfig:
        if isinstance(self.budget, int):
            self.check_tokens(self.budget)
        return self


class StreamingKVConfig(BudgetConfig):
    """StreamingLLM: the first ``sinks`` tokens plus the most recent ``budget - sinks``."""

    sinks: int = Field(4, ge=0, description="first tokens always kept (attention sinks)")

    def reserved(self) -> tuple[int, str]:
        return self.sinks + 1, f"sinks={self.sinks} plus at least 1 recent token"


class H2OConfig(BudgetConfig):
    """H2O: the ``window`` most recent tokens plus the heavy hitters (highest attention
    accumulated over every query so far, per KV head) filling the rest of the budget."""

    window: int = Field(32, ge=1, description="most recent tokens always kept")

    def reserved(self) -> tuple[int, str]:
        return self.window, f"window={self.window} (the recent tokens it always keeps)"


class SnapKVConfig(BudgetConfig):
    """SnapKV: at the end of prefill the last ``window`` queries vote; per KV head the
    ``budget - window`` prefix tokens with the highest pooled votes are kept, plus the window.
    Decode tokens are appended without further eviction."""

    window: int = Field(32, ge=1, description="observation window: last prompt queries that vote (kept)")
    kernel_size: int = Field(7, ge=1, description="pooling width over positions (odd)")
    pooling: Literal["max", "avg"] = Field("max", description="vote pooling: 'max' or 'avg'")

    @field_validator("kernel_size")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError(f"kernel_size must be odd (the pooling is centred on each position), got {v}")
        return v

    def reserved(self) -> tuple[int, str]:
        return self.window, f"window={self.window} (the observation window, always kept)"


class KiviConfig(MethodConfig):
    """KIVI: keys quantized per channel (groups of ``group_size`` tokens), values per token
    (groups of ``group_size`` channels), asymmetric min/max; the ``residual`` most recent
    tokens (up to ``residual + group_size - 1``) stay in full precision."""

    bits: Literal[2, 4] = Field(2, description="bits per quantized key/value entry: 2 or 4")
    group_size: int = Field(32, ge=1, description="tokens per key group and channels per value group")
    residual: int = Field(128, ge=0, description="most recent tokens kept in full precision")


class MustafarConfig(MethodConfig):
    """Mustafar-style unstructured pruning: every token's key and value vectors keep their
    ``round(density x head_dim)`` largest-magnitude entries (per head), except the ``window``
    most recent tokens, which stay dense."""

    density: float = Field(0.5, description="fraction of each key/value vector kept, in (0, 1]")
    window: int = Field(32, ge=0, description="most recent tokens kept dense")

    @field_validator("density", mode="before")
    @classmethod
    def _density(cls, v: object) -> float:
        try:
            value = float(v)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ValueError(f"density must be a number in (0, 1], got {v!r}") from None
        if isinstance(v, bool) or not 0.0 < value <= 1.0:
            raise ValueError(f"density must be in (0, 1] (the fraction of key/value entries kept), got {v!r}")
        return value
