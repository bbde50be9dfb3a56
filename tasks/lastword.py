"""Last-word prediction (a LAMBADA-style cloze) built from the evaluation split.

Items: sentences of the shipped prose whose final word is alphabetic and long enough,
with the preceding ``context_words`` words as the prompt. The model is right when its
greedy prediction reproduces every token of the word. Items are chosen evenly over the
text with a seeded generator, so the same text and seed always give the same items.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from sparsebench.api import EvalContext, Metric, Task, TaskConfig, Tolerance

_SENTENCE_END = re.compile(r"\b([A-Za-z]+)([.!?])(?=[\"'\u201d\u2019)]?\s)")


@dataclass(frozen=True)
class Item:
    context: str
    target: str  # the word, without its leading space


class LastWordConfig(TaskConfig):
    items: int = Field(200, ge=1, description="number of cloze items")
    context_words: int = Field(60, ge=5, description="words of context before the target")
    min_word_chars: int = Field(4, ge=1, description="shortest target word")
    batch_size: int = Field(8, ge=1)


def build_items(text: str, cfg: LastWordConfig, seed: int) -> list[Item]:
    """Pick cloze items deterministically from ``text``."""
    candidates: list[Item] = []
    for m in _SENTENCE_END.finditer(text):
        word = m.group(1)
        if len(word) < cfg.min_word_chars:
            continue
        before = text[max(0, m.start(1) - cfg.context_words * 12): m.start(1)]
        words = before.split()
        if len(words) < cfg.context_words or not before[-1:].isspace():
            continue
        candidates.append(Item(" ".join(words[-cfg.context_words:]), word))
    if len(candidates) < cfg.items:
        raise ValueError(
            f"the evaluation text yields only {len(candidates)} last-word items, fewer than items={cfg.items}"
        )
    rng = random.Random(seed)
    picked = sorted(rng.sample(range(len(candidates)), cfg.items))
    return [candidates[i] for i in picked]


class LastWord(Task):
    name = "lastword"
    description = "Zero-shot last-word prediction (LAMBADA-style cloze) on sentences of the shipped text."
    Config = LastWordConfig
    config: LastWordConfig
    # Accuracy is absolute, in points: one point (two items of the default 200) absorbs a
    # borderline argmax flipping under benign float changes; a lost item of a tiny suite fails.
    tolerances = {"lastword_accuracy": Tolerance(0.01, "absolute"), "lastword_nll": Tolerance(0.001)}

    def evaluate(self, model: Any, ctx: EvalContext) -> dict[str, Metric]:
        import torch
        import torch.nn.functional as F

        cfg = self.config
        tok = ctx.tokenizer
        items = build_items(ctx.text, cfg, ctx.seed)
        encoded = []
        for it in items:
            c = tok(it.context, add_special_tokens=False)["input_ids"]
            t = tok(" " + it.target, add_special_tokens=False)["input_ids"]
            encoded.append((c, t))
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        correct = 0
        nll_sum = 0.0
        batches = [encoded[i:i + cfg.batch_size] for i in range(0, len(encoded), cfg.batch_size)]
        with torch.inference_mode():
            for batch in ctx.progress(batches, desc="lastword", total=len(batches)):
                seqs = [c + t for c, t in batch]
                width = max(len(s) for s in seqs)
                x = torch.full((len(seqs), width), pad, dtype=torch.long)
                att = torch.zeros_like(x)
                for r, s in enumerate(seqs):
                    x[r, : len(s)] = torch.tensor(s)
                    att[r, : len(s)] = 1
                logits = model(input_ids=x.to(ctx.device), attention_mask=att.to(ctx.device),
                               use_cache=False).logits.float().cpu()
                for r, (c, t) in enumerate(batch):
                    pos = torch.arange(len(c) - 1, len(c) + len(t) - 1)
                    lg = logits[r, pos]
                    target = torch.tensor(t)
                    correct += int(bool((lg.argmax(-1) == target).all()))
                    nll_sum += float(F.cross_entropy(lg, target, reduction="sum"))
        n = len(items)
        acc = correct / n
        return {
            "lastword_accuracy": Metric(value=acc, stderr=math.sqrt(acc * (1 - acc) / n),
                                        direction="higher", n=n),
            "lastword_nll": Metric(value=nll_sum / n, direction="lower", n=n, unit="nats/word"),
        }
