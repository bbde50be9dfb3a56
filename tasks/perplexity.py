"""Perplexity of the model on the evaluation split, over fixed token windows.

Each window of ``window`` tokens advances by ``stride``; only tokens not scored by an
earlier window count (the usual sliding-window protocol), so every scored token sees at
least ``window - stride`` tokens of context. ``stride = window`` gives disjoint windows.
The standard error comes from the spread of per-window mean NLL (delta method for exp).
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import Field, model_validator

from sparsebench.api import EvalContext, Metric, Task, TaskConfig, Tolerance


class PerplexityConfig(TaskConfig):
    window: int = Field(512, ge=16, description="tokens per window")
    stride: int | None = Field(None, ge=1, description="tokens a window advances (default: window)")
    max_tokens: int = Field(16384, ge=32, description="evaluation tokens taken from the split")
    batch_size: int = Field(4, ge=1)

    @model_validator(mode="after")
    def _check(self) -> PerplexityConfig:
        if self.stride is not None and self.stride > self.window:
            raise ValueError(f"stride ({self.stride}) must not exceed window ({self.window})")
        if self.max_tokens < self.window:
            raise ValueError(f"max_tokens ({self.max_tokens}) must be at least window ({self.window})")
        return self


def windows(n_tokens: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, first scored position within the window) for each window."""
    out = []
    prev_end = 0
    for begin in range(0, n_tokens - 1, stride):
        end = min(begin + window, n_tokens)
        first = max(prev_end - begin, 1) if begin else 1
        if end - begin < 2 or first >= end - begin:
            break
        out.append((begin, end, first))
        prev_end = end
        if end == n_tokens:
            break
    return out


class Perplexity(Task):
    name = "perplexity"
    description = "Token-level perplexity on the evaluation split of the shipped text (sliding windows)."
    Config = PerplexityConfig
    config: PerplexityConfig
    # On CPU a fixed spec gives bit-identical perplexity (tests/suite/test_gate_determinism.py),
    # so any move is a real change; 0.1% leaves room only for benign float reassociation
    # (a torch upgrade, another ISA), far below what a pruning bug costs (several %).
    tolerances = {"perplexity": Tolerance(0.001), "perplexity_nll": Tolerance(0.001, "absolute")}

    def evaluate(self, model: Any, ctx: EvalContext) -> dict[str, Metric]:
        import torch
        import torch.nn.functional as F

        cfg = self.config
        stride = cfg.stride or cfg.window
        # tokenize only a generous prefix: byte-level BPE gives well over 1 token per 8 chars
        ids = ctx.tokenizer(ctx.text[: cfg.max_tokens * 8], add_special_tokens=False)["input_ids"]
        ids = torch.tensor(ids[: cfg.max_tokens], dtype=torch.long)
        if ids.numel() < cfg.window:
            raise ValueError(f"the evaluation text has only {ids.numel()} tokens, fewer than window={cfg.window}")
        spans = windows(ids.numel(), cfg.window, stride)
        per_window: list[tuple[float, int]] = []
        by_len: dict[int, list[tuple[int, int, int]]] = {}
        for s in spans:
            by_len.setdefault(s[1] - s[0], []).append(s)
        batches = [grp[i:i + cfg.batch_size] for grp in by_len.values() for i in range(0, len(grp), cfg.batch_size)]
        with torch.inference_mode():
            for batch in ctx.progress(batches, desc="perplexity", total=len(batches)):
                x = torch.stack([ids[b:e] for b, e, _ in batch]).to(ctx.device)
                logits = model(input_ids=x, use_cache=False).logits.float()
                nll = F.cross_entropy(
                    logits[:, :-1].reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="none"
                ).view(x.shape[0], -1).double().cpu()
                for row, (_b, _e, first) in enumerate(batch):
                    scored = nll[row, first - 1:]
                    per_window.append((float(scored.sum()), scored.numel()))
        total = sum(s for s, _ in per_window)
        count = sum(n for _, n in per_window)
        mean_nll = total / count
        means = [s / n for s, n in per_window]
        k = len(means)
        se = math.sqrt(sum((m - mean_nll) ** 2 for m in means) / (k - 1) / k) if k > 1 else float("nan")
        ppl = math.exp(mean_nll)
        return {
            "perplexity": Metric(value=ppl, stderr=ppl * se, direction="lower", n=count),
            "perplexity_nll": Metric(value=mean_nll, stderr=se, direction="lower", n=count, unit="nats/token"),
            "perplexity_tokens": Metric(value=count, direction="none", unit="tokens"),
            "perplexity_windows": Metric(value=k, direction="none"),
        }
