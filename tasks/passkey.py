"""Passkey retrieval (needle in a haystack) at several context lengths and depths.

Each prompt hides one sentence with a random 5-7 digit pass key in a slice of the
evaluation split cut to the exact length, at a depth fraction of that slice; it ends with
the question and the start of the answer (``The pass key is``). The model continues
greedily for ``max_new_tokens`` tokens and is right when the first number it writes is
the key. A context length covers prompt and answer: a prompt has exactly
``length - max_new_tokens`` tokens. The needle starts between two words within
``SNAP_TOKENS`` (16) tokens of ``depth x haystack tokens``.

Metrics: ``passkey_accuracy`` over all prompts and ``passkey_accuracy_L<length>_D<depth%>``
per cell (``passkey_accuracy_L4096_D50``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator

from sparsebench.api import EvalContext, Metric, Task, Tolerance

from .longctx import (
    GenerationConfig,
    Haystack,
    LongContextTask,
    accuracy_metric,
    assemble,
    depth_label,
    encode,
    filler_budget,
    length_label,
    parse_list,
    run_generation,
    seeded,
    snap,
)

PREFIX = ("Somewhere in the following story there is a pass key. Find it and remember it; "
          "you will be asked for it at the end.\n\n")
NEEDLE = " The pass key is {key}. Remember it. {key} is the pass key."
QUESTION = "\n\nWhat is the pass key? The pass key is"

_NUMBER = re.compile(r"\d+")


class PasskeyConfig(GenerationConfig):
    version: ClassVar[int] = 1
    depths: tuple[float, ...] = Field(
        (0.1, 0.5, 0.9), description="needle depths as fractions of the haystack, in [0, 1], e.g. 0.1,0.5,0.9")
    min_digits: int = Field(5, ge=1, le=18, description="fewest digits of a key")
    max_digits: int = Field(7, ge=1, le=18, description="most digits of a key")
    max_new_tokens: int = Field(12, ge=1, le=1024, description="greedy answer tokens (part of each length)")

    @field_validator("depths", mode="before")
    @classmethod
    def _parse_depths(cls, v: Any) -> Any:
        return parse_list(v)

    @field_validator("depths")
    @classmethod
    def _check_depths(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if not v:
            raise ValueError("depths must list at least one depth fraction in [0, 1], e.g. [0.1, 0.5, 0.9]")
        bad = [d for d in v if not 0.0 <= d <= 1.0]
        if bad:
            raise ValueError(f"depths are fractions of the haystack and must be in [0, 1], got {bad}")
        if len({depth_label(d) for d in v}) != len(v):
            raise ValueError(f"depths lists a depth twice: {list(v)}")
        return tuple(sorted(v))

    @model_validator(mode="after")
    def _check_digits(self) -> PasskeyConfig:
        if self.min_digits > self.max_digits:
            raise ValueError(f"min_digits ({self.min_digits}) must not exceed max_digits ({self.max_digits})")
        return self


@dataclass(frozen=True)
class PasskeyPrompt:
    ids: tuple[int, ...]
    key: str
    length: int
    depth: float
    haystack_start: int  # index of the first haystack token in ``ids``
    haystack_tokens: int  # haystack tokens in the prompt (the needle not counted)
    needle_start: int  # index of the needle's first token in ``ids``
    needle_tokens: int


def passkey_correct(answer: str, key: str) -> bool:
    """Exact match: the first number in the generated text is the key (``' 4821.'`` for ``4821``)."""
    m = _NUMBER.search(answer)
    return m is not None and m.group(0) == key


def build_prompts(haystack: Haystack, tok: Any, cfg: PasskeyConfig) -> list[PasskeyPrompt]:
    """Every prompt of ``cfg``: lengths x depths x samples, each drawn from its own seeded
    generator (so adding a length or a sample leaves the other prompts as they were)."""
    prefix, question = encode(tok, PREFIX), encode(tok, QUESTION)
    out = []
    for length in cfg.lengths:
        for depth in cfg.depths:
            for s in range(cfg.samples):
                rng = seeded("passkey", cfg.seed, length, depth_label(depth), s)
                digits = rng.randint(cfg.min_digits, cfg.max_digits)
                key = str(rng.randint(10 ** (digits - 1), 10**digits - 1))
                needle = encode(tok, NEEDLE.format(key=key))
                n = filler_budget("passkey", length, cfg.max_new_tokens, len(prefix) + len(needle) + len(question))
                filler, starts = haystack.take(rng, n)
                p = snap(starts, round(depth * n))
                ids, where = assemble(prefix, filler, [(p, needle)], question)
                out.append(PasskeyPrompt(tuple(ids), key, length, depth, len(prefix), n, where[0], len(needle)))
    return out


class Passkey(LongContextTask, Task):
    name = "passkey"
    description = ("Passkey retrieval (needle in a haystack of the shipped text): greedy exact match "
                   "per context length x depth.")
    Config = PasskeyConfig
    config: PasskeyConfig
    # 60 prompts by default: 0.02 absorbs one answer flipping under benign float changes.
    # Cells (passkey_accuracy_L*_D*) depend on the config and get the gate's default.
    tolerances: ClassVar[dict[str, Tolerance]] = {"passkey_accuracy": Tolerance(0.02, "absolute")}

    def evaluate(self, model: Any, ctx: EvalContext) -> dict[str, Metric]:
        self.check_model(model)
        cfg = self.config
        prompts = build_prompts(Haystack(ctx.text, ctx.tokenizer), ctx.tokenizer, cfg)
        answers = run_generation(self.name, model, ctx, prompts, cfg.batch_size, cfg.max_new_tokens)
        hits = [passkey_correct(a, p.key) for a, p in zip(answers, prompts, strict=True)]
        metrics = {"passkey_accuracy": accuracy_metric(hits)}
        for length in cfg.lengths:
            for depth in cfg.depths:
                cell = [h for h, p in zip(hits, prompts, strict=True) if p.length == length and p.depth == depth]
                metrics[f"passkey_accuracy_{length_label(length)}_{depth_label(depth)}"] = accuracy_metric(cell)
        return metrics
