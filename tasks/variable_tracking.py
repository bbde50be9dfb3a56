"""Variable tracking (RULER-style multi-hop tracing) in a haystack of the shipped text.

A chain assigns a number to a variable and then passes it on, one hop at a time
(``VAR QKZTP = 48213.``, ``VAR MLRTA = VAR QKZTP.``, ...). ``chains`` chains with distinct
values are hidden in one haystack, their statements in order at seeded random depths;
the question asks which variables hold the value of the first chain. The score of a
prompt is the fraction of that chain's ``hops + 1`` variables named in the greedy answer
(case-sensitive whole words). Prompts have exactly ``length - max_new_tokens`` tokens.

Metrics: ``vt_recall`` over all prompts and ``vt_recall_L<length>`` per length.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import Field

from sparsebench.api import EvalContext, Metric, Task, Tolerance

from .longctx import (
    GenerationConfig,
    Haystack,
    LongContextTask,
    assemble,
    encode,
    filler_budget,
    recall,
    recall_by_length,
    run_generation,
    seeded,
    snap,
)

PREFIX = ("Read the following text carefully: hidden in it are assignments of values to variables, "
          "which pass values from one variable to the next. Keep track of them.\n\n")
FIRST = " VAR {name} = {value}."
HOP = " VAR {name} = VAR {prev}."
QUESTION = ("\n\nQuestion: Which variables hold the value {value} after all the assignments in the "
            "text above?\nAnswer: The {n} variables that hold the value {value} are:")


class VariableTrackingConfig(GenerationConfig):
    version: ClassVar[int] = 1
    chains: int = Field(1, ge=1, le=20, description="chains hidden in a prompt (one asked for, the others distract)")
    hops: int = Field(4, ge=1, le=50, description="assignments passing the value on, per chain")
    name_letters: int = Field(5, ge=3, le=12, description="upper-case letters per variable name")
    max_new_tokens: int = Field(48, ge=1, le=1024, description="greedy answer tokens (part of each length)")


@dataclass(frozen=True)
class VTPrompt:
    ids: tuple[int, ...]
    length: int
    value: str
    expected: tuple[str, ...]  # the asked chain's variables, in assignment order
    chains: tuple[tuple[str, ...], ...]  # every chain's variables (the first is asked for)
    statement_starts: tuple[int, ...]  # index in ids of each statement, in text order


def make_chains(rng: Any, cfg: VariableTrackingConfig) -> tuple[list[list[str]], list[str]]:
    """Distinct variable names (``chains x (hops + 1)``) and distinct 5-digit values."""
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < cfg.chains * (cfg.hops + 1):
        name = "".join(rng.choice(string.ascii_uppercase) for _ in range(cfg.name_letters))
        if name not in seen and name != "VAR":
            seen.add(name)
            names.append(name)
    chains = [names[c * (cfg.hops + 1):(c + 1) * (cfg.hops + 1)] for c in range(cfg.chains)]
    values = [str(v) for v in rng.sample(range(10_000, 100_000), cfg.chains)]
    return chains, values


def build_prompts(haystack: Haystack, tok: Any, cfg: VariableTrackingConfig) -> list[VTPrompt]:
    prefix = encode(tok, PREFIX)
    out = []
    for length in cfg.lengths:
        for s in range(cfg.samples):
            rng = seeded("vt", cfg.seed, length, s)
            chains, values = make_chains(rng, cfg)
            # statements in text order: a seeded interleaving that keeps each chain in order
            order = [c for c in range(cfg.chains) for _ in range(cfg.hops + 1)]
            rng.shuffle(order)
            pos_in_chain = [0] * cfg.chains
            pieces = []
            for c in order:
                k = pos_in_chain[c]
                pos_in_chain[c] += 1
                text = (FIRST.format(name=chains[c][0], value=values[c]) if k == 0
                        else HOP.format(name=chains[c][k], prev=chains[c][k - 1]))
                pieces.append(encode(tok, text))
            question = encode(tok, QUESTION.format(value=values[0], n=cfg.hops + 1))
            fixed = len(prefix) + sum(map(len, pieces)) + len(question)
            n = filler_budget("vt", length, cfg.max_new_tokens, fixed)
            filler, starts = haystack.take(rng, n)
            targets = sorted(rng.randrange(n + 1) for _ in pieces)
            points = sorted(snap(starts, t) for t in targets)
            ids, where = assemble(prefix, filler, list(zip(points, pieces, strict=True)), question)
            out.append(VTPrompt(tuple(ids), length, values[0], tuple(chains[0]),
                                tuple(tuple(c) for c in chains), tuple(where)))
    return out


class VariableTracking(LongContextTask, Task):
    name = "vt"
    description = ("Variable tracking (RULER-style): name every variable a chain of assignments hidden "
                   "in the shipped text passes a value to; recall per context length.")
    Config = VariableTrackingConfig
    config: VariableTrackingConfig
    # 20 prompts x 5 variables by default: 0.02 absorbs two names flipping.
    tolerances: ClassVar[dict[str, Tolerance]] = {"vt_recall": Tolerance(0.02, "absolute")}

    def evaluate(self, model: Any, ctx: EvalContext) -> dict[str, Metric]:
        self.check_model(model)
        cfg = self.config
        prompts = build_prompts(Haystack(ctx.text, ctx.tokenizer), ctx.tokenizer, cfg)
        answers = run_generation(self.name, model, ctx, prompts, cfg.batch_size, cfg.max_new_tokens)
        scores = [recall(a, p.expected) for a, p in zip(answers, prompts, strict=True)]
        return recall_by_length("vt_recall", scores, prompts, cfg.lengths)
