"""Common words extraction (RULER-style aggregation) over a list of real words.

A prompt is a comma-separated list of words taken from the evaluation split (distinct
lower-case words of 4-10 letters): ``common`` words appear ``common_freq`` times each,
many others ("rare") at most ``rare_freq`` times, in a seeded shuffled order; the question
asks for the ``common`` most frequent words. The score of a prompt is the fraction of the
common words named in the greedy answer (whole words, any case).

Rare words are added until the next one no longer fits, so a prompt has at most
``length - max_new_tokens`` tokens and falls short of it by less than one list item (a
word and its comma: a few tokens). Prompts of one length may differ by those few tokens;
they are batched by exact length.

Metrics: ``cwe_recall`` over all prompts and ``cwe_recall_L<length>`` per length.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import Field, model_validator

from sparsebench.api import EvalContext, Metric, Task, Tolerance

from .longctx import (
    GenerationConfig,
    LongContextTask,
    encode,
    filler_budget,
    recall,
    recall_by_length,
    run_generation,
    seeded,
)

PREFIX = ("Below is a list of words separated by commas. Some of the words appear many more times "
          "than the others. Find the words that appear most often.\n\n")
QUESTION = ("\n\nQuestion: Which {k} words appear most often in the list above?\n"
            "Answer: The {k} words that appear most often in the list are:")

_WORD = re.compile(r"(?<![A-Za-z'\-])[a-z]{4,10}(?![A-Za-z'\-])")


class CommonWordsConfig(GenerationConfig):
    version: ClassVar[int] = 1
    common: int = Field(10, ge=1, le=100, description="common words to find")
    common_freq: int = Field(20, ge=2, description="times each common word appears")
    rare_freq: int = Field(3, ge=1, description="most times a rare word appears")
    max_new_tokens: int = Field(48, ge=1, le=1024, description="greedy answer tokens (part of each length)")

    @model_validator(mode="after")
    def _check_freqs(self) -> CommonWordsConfig:
        if self.rare_freq >= self.common_freq:
            raise ValueError(f"rare_freq ({self.rare_freq}) must be below common_freq ({self.common_freq}), "
                             "or the common words are not the most frequent")
        return self


@dataclass(frozen=True)
class CWEPrompt:
    ids: tuple[int, ...]
    length: int
    common: tuple[str, ...]
    counts: tuple[tuple[str, int], ...]  # every word of the list and how often it appears


def vocabulary(text: str) -> list[str]:
    """Distinct lower-case words of the text, sorted (the draws then depend only on the seed)."""
    return sorted(set(_WORD.findall(text)))


def build_prompts(text: str, tok: Any, cfg: CommonWordsConfig) -> list[CWEPrompt]:
    words = vocabulary(text)
    prefix = encode(tok, PREFIX)
    question = encode(tok, QUESTION.format(k=cfg.common))
    item_ids: dict[str, list[int]] = {}

    def item(w: str) -> list[int]:
        if w not in item_ids:
            item_ids[w] = encode(tok, f" {w},")
        return item_ids[w]

    out = []
    for length in cfg.lengths:
        budget = filler_budget("cwe", length, cfg.max_new_tokens, len(prefix) + len(question))
        for s in range(cfg.samples):
            rng = seeded("cwe", cfg.seed, length, s)
            order = rng.sample(words, len(words))
            common = order[:cfg.common]
            counts = {w: cfg.common_freq for w in common}
            used = sum(len(item(w)) * cfg.common_freq for w in common)
            if used > budget:
                raise ValueError(
                    f"task 'cwe': {cfg.common} common words x {cfg.common_freq} take {used} tokens, more "
                    f"than the {budget} a context of {length} tokens leaves; lower common or common_freq "
                    "or use a longer length")
            for w in order[cfg.common:]:
                k = min(cfg.rare_freq, (budget - used) // len(item(w)))
                if k == 0:
                    break
                counts[w] = k
                used += k * len(item(w))
            else:
                raise ValueError(
                    f"task 'cwe': the evaluation text has only {len(words)} distinct words, too few to fill "
                    f"{length} tokens with at most {cfg.rare_freq} copies of each rare word; raise rare_freq "
                    "or use a shorter length")
            seq = [w for w, k in counts.items() for _ in range(k)]
            rng.shuffle(seq)
            ids = prefix + [t for w in seq for t in item(w)] + question
            out.append(CWEPrompt(tuple(ids), length, tuple(common), tuple(counts.items())))
    return out


class CommonWords(LongContextTask, Task):
    name = "cwe"
    description = ("Common words extraction (RULER-style): name the most frequent words of a long list "
                   "of words of the shipped text; recall per context length.")
    Config = CommonWordsConfig
    config: CommonWordsConfig
    # 20 prompts x 10 words by default: 0.02 absorbs four words flipping.
    tolerances: ClassVar[dict[str, Tolerance]] = {"cwe_recall": Tolerance(0.02, "absolute")}

    def evaluate(self, model: Any, ctx: EvalContext) -> dict[str, Metric]:
        self.check_model(model)
        cfg = self.config
        prompts = build_prompts(ctx.text, ctx.tokenizer, cfg)
        answers = run_generation(self.name, model, ctx, prompts, cfg.batch_size, cfg.max_new_tokens)
        scores = [recall(a, p.common, case_sensitive=False) for a, p in zip(answers, prompts, strict=True)]
        return recall_by_length("cwe_recall", scores, prompts, cfg.lengths)
