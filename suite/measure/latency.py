"""Prefill and per-token decode latency with warm-up, repetitions and raw samples kept.

Prefill: one forward over ``batch x seq`` tokens, timed whole.
Decode: after an untimed prefill of ``context`` tokens, each next-token step (one token
per sequence, KV cache reused) is timed on its own; every step is one sample.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..api import kv_cache_arg
from .timer import timer_for


def _tokens(source: Any, batch: int, seq: int, offset: int = 0) -> Any:
    """``[batch, seq]`` ids cut from a 1-D id tensor of real text (wrapping around)."""

    need = batch * seq
    reps = need // source.numel() + 2
    flat = source.repeat(reps)[offset : offset + need]
    return flat.view(batch, seq).clone()


def measure_prefill(
    model: Any, ids: Any, *, batch: int, seq: int, warmup: int, repetitions: int,
    device: str, progress: Callable[..., Any],
) -> list[float]:
    import torch

    x = _tokens(ids, batch, seq).to(device)
    timer = timer_for(device)
    samples: list[float] = []
    with torch.inference_mode():
        for i in progress(range(warmup + repetitions), desc=f"prefill b{batch}x{seq}", leave=False):
            timer.start()
            model(input_ids=x, use_cache=False)
            ms = timer.stop_ms()
            if i >= warmup:
                samples.append(ms)
    return samples


def measure_decode(
    model: Any, ids: Any, *, batch: int, context: int, tokens: int, warmup: int,
    repetitions: int, device: str, progress: Callable[..., Any],
) -> list[float]:
    import torch
    from transformers import DynamicCache

    x = _tokens(ids, batch, context).to(device)
    arg = kv_cache_arg(model) or "past_key_values"
    timer = timer_for(device)
    samples: list[float] = []
    with torch.inference_mode():
        for i in progress(range(warmup + repetitions), desc=f"decode b{batch}@{context}", leave=False):
            with_cache = {arg: DynamicCache()}
            out = model(input_ids=x, use_cache=True, **with_cache)
            nxt = out.logits[:, -1:].argmax(-1)
            for _ in range(tokens):
                timer.start()
                out = model(input_ids=nxt, use_cache=True, **with_cache)
                ms = timer.stop_ms()
                nxt = out.logits[:, -1:].argmax(-1)
                if i >= warmup:
                    samples.append(ms)
    return samples
