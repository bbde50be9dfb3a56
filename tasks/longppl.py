"""Perplexity at long context: sliding windows of 4096 / 8192 tokens over the evaluation split.

For each window length ``W`` the first ``max_tokens`` tokens of the evaluation split are
cut into windows advancing by ``stride = round(W x stride_fraction)``; a window scores
only its last ``stride`` tokens (the first window too), so every scored token sees at
least ``W - stride`` and fewer than ``W`` tokens of context: this measures the model at
long context, where ``perplexity`` (512-token windows) measures it at short context.
``stride_fraction = 1`` gives disjoint windows scored whole, as ``perplexity`` does.
The windowing and scoring are ``perplexity``'s own (``windows``, ``window_nlls``,
``summarize``); the loss is computed in chunks, from the first scored position only.

Metrics per window length: ``longppl_W<W>`` (perplexity), ``longppl_nll_W<W>`` (mean NLL,
nats/token), ``longppl_tokens_W<W>`` and ``longppl_windows_W<W>``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator

from sparsebench.api import EvalContext, Metric, Task, TaskConfig, Tolerance

from .longctx import LongContextTask, check_lengths, parse_list
from .perplexity import evaluation_ids, summarize, window_nlls, windows

DEFAULT_WINDOWS = (4096, 8192)
LOSS_CHUNK = 1024  # positions per cross-entropy call: bounds the fp32 logits copied at once


class LongPerplexityConfig(TaskConfig):
    version: ClassVar[int] = 1
    windows: tuple[int, ...] = Field(DEFAULT_WINDOWS, description="window lengths in tokens, e.g. 4096,8192")
    stride_fraction: float = Field(
        0.5, gt=0.0, le=1.0, description="a window advances by this fraction of its length and scores that many tokens")
    max_tokens: int = Field(32768, ge=256, description="evaluation tokens taken from the split")
    batch_size: int = Field(1, ge=1)

    @field_validator("windows", mode="before")
    @classmethod
    def _parse_windows(cls, v: Any) -> Any:
        return parse_list(v)

    @field_validator("windows")
    @classmethod
    def _check_windows(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        return check_lengths(v, "windows")

    @model_validator(mode="after")
    def _check(self) -> LongPerplexityConfig:
        if self.max_tokens < max(self.windows):
            raise ValueError(f"max_tokens ({self.max_tokens}) must be at least the longest window ({max(self.windows)})")
        return self


def long_windows(n_tokens: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """``perplexity.windows`` with the first window's leading ``window - stride`` tokens as
    context only, so every scored token has at least that much context."""
    spans = windows(n_tokens, window, stride)
    if spans and window > stride:
        b, e, first = spans[0]
        spans[0] = (b, e, max(first, min(window - stride, e - b - 1)))
    return spans


class LongPerplexity(LongContextTask, Task):
    name = "longppl"
    description = ("Perplexity at long context: sliding 4096/8192-token windows over the evaluation split, "
                   "scoring only tokens with at least half a window of context.")
    Config = LongPerplexityConfig
    config: LongPerplexityConfig
    length_option = "windows"
    # as perplexity: bit-identical on CPU for a fixed spec; windows other than the default get
    # the gate's default (0.1% relative)
    tolerances: ClassVar[dict[str, Tolerance]] = {
        **{f"longppl_W{w}": Tolerance(0.001) for w in DEFAULT_WINDOWS},
        **{f"longppl_nll_W{w}": Tolerance(0.001, "absolute") for w in DEFAULT_WINDOWS},
    }

    def evaluate(self, model: Any, ctx: EvalContext) -> dict[str, Metric]:
        self.check_model(model)
        cfg = self.config
        ids = evaluation_ids(ctx, cfg.max_tokens)
        if ids.numel() < max(cfg.windows):
            raise ValueError(f"task 'longppl': the evaluation text has only {ids.numel()} tokens, fewer than "
                             f"the longest window ({max(cfg.windows)}); use shorter windows")
        metrics: dict[str, Metric] = {}
        for w in cfg.windows:
            stride = max(1, round(w * cfg.stride_fraction))
            spans = long_windows(ids.numel(), w, stride)
            per_window = window_nlls(model, ids, spans, cfg.batch_size, ctx, desc=f"longppl {w}",
                                     chunk=LOSS_CHUNK)
            mean_nll, se, count, k = summarize(per_window)
            ppl = math.exp(mean_nll)
            metrics[f"longppl_W{w}"] = Metric(value=ppl, stderr=ppl * se, direction="lower", n=count)
            metrics[f"longppl_nll_W{w}"] = Metric(value=mean_nll, stderr=se, direction="lower", n=count,
                                                  unit="nats/token")
            metrics[f"longppl_tokens_W{w}"] = Metric(value=count, direction="none", unit="tokens")
            metrics[f"longppl_windows_W{w}"] = Metric(value=k, direction="none")
        return metrics
