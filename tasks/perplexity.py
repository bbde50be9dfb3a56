"""Perplexity of the model on the evaluation split, over fixed token windows.

Each window of ``window`` tokens advances by ``stride``; only tokens not scored by an
earlier window count (the usual sliding-window protocol), so every scored token sees at
least ``window - stride`` tokens of context. ``stride = window`` gives disjoint windows.
The standard error comes from the spread of per-window mean NLL (delta method for exp).
"""

from __future__ import annotations

import inspect
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
        cfg = self.config
        stride = cfg.stride or cfg.window
        ids = evaluation_ids(ctx, cfg.max_tokens)
        if ids.numel() < cfg.window:
            raise ValueError(f"the evaluation text has only {ids.numel()} tokens, fewer than window={cfg.window}")
        spans = windows(ids.numel(), cfg.window, stride)
        per_window = window_nlls(model, ids, spans, cfg.batch_size, ctx, desc="perplexity")
        mean_nll, se, count, k = summarize(per_window)
        ppl = math.exp(mean_nll)
        return {
            "perplexity": Metric(value=ppl, stderr=ppl * se, direction="lower", n=count),
            "perplexity_nll": Metric(value=mean_nll, stderr=se, direction="lower", n=count, unit="nats/token"),
            "perplexity_tokens": Metric(value=count, direction="none", unit="tokens"),
            "perplexity_windows": Metric(value=k, direction="none"),
        }


def evaluation_ids(ctx: EvalContext, max_tokens: int) -> Any:
    """The first ``max_tokens`` tokens of the evaluation text (a LongTensor)."""
    import torch

    # tokenize only a generous prefix: byte-level BPE gives well over 1 token per 8 chars
    ids = ctx.tokenizer(ctx.text[: max_tokens * 8], add_special_tokens=False)["input_ids"]
    return torch.tensor(ids[:max_tokens], dtype=torch.long)


def window_nlls(model: Any, ids: Any, spans: list[tuple[int, int, int]], batch_size: int,
                ctx: EvalContext, desc: str, chunk: int | None = None) -> list[tuple[float, int]]:
    """(sum of NLL, tokens) over the scored tokens of each window, windows of one length
    batched together. ``chunk`` computes the loss over that many positions at a time and
    only from the first scored one (long windows: the logits are never copied whole);
    ``None`` is one call over the whole window (what ``perplexity`` has always done)."""
    import torch
    import torch.nn.functional as F

    per_window: list[tuple[float, int]] = []
    keep_arg: bool | None = None
    by_len: dict[int, list[tuple[int, int, int]]] = {}
    for s in spans:
        by_len.setdefault(s[1] - s[0], []).append(s)
    batches = [grp[i:i + batch_size] for grp in by_len.values() for i in range(0, len(grp), batch_size)]
    with torch.inference_mode():
        for batch in ctx.progress(batches, desc=desc, total=len(batches)):
            x = torch.stack([ids[b:e] for b, e, _ in batch]).to(ctx.device)
            if chunk is None:
                logits = model(input_ids=x, use_cache=False).logits.float()
                nll = F.cross_entropy(
                    logits[:, :-1].reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="none"
                ).view(x.shape[0], -1).double().cpu()
                lo = 0
            else:
                lo = min(first for _, _, first in batch) - 1
                if keep_arg is None:
                    keep_arg = "logits_to_keep" in inspect.signature(model.forward).parameters
                # logits of positions lo.. only (the scored tokens are a suffix of each window)
                keep = {"logits_to_keep": x.shape[1] - lo} if keep_arg else {}
                logits = model(input_ids=x, use_cache=False, **keep).logits
                shift = x.shape[1] - logits.shape[1]  # position of logits[:, 0]
                parts = []
                for a in range(lo, x.shape[1] - 1, chunk):
                    z = min(a + chunk, x.shape[1] - 1)
                    lg = logits[:, a - shift:z - shift].float()
                    parts.append(F.cross_entropy(lg.reshape(-1, lg.shape[-1]), x[:, a + 1:z + 1].reshape(-1),
                                                 reduction="none").view(x.shape[0], -1).double().cpu())
                nll = torch.cat(parts, dim=1)
            del logits
            for row, (_b, _e, first) in enumerate(batch):
                scored = nll[row, first - 1 - lo:]
                per_window.append((float(scored.sum()), scored.numel()))
    return per_window


def summarize(per_window: list[tuple[float, int]]) -> tuple[float, float, int, int]:
    """Mean NLL per token, its standard error (from the spread of per-window means), the
    scored tokens and the number of windows."""
    total = sum(s for s, _ in per_window)
    count = sum(n for _, n in per_window)
    mean_nll = total / count
    means = [s / n for s, n in per_window]
    k = len(means)
    se = math.sqrt(sum((m - mean_nll) ** 2 for m in means) / (k - 1) / k) if k > 1 else float("nan")
    return mean_nll, se, count, k
