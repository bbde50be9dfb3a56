"""Prefill and per-token decode latency with warm-up, repetitions and raw samples kept.

Prefill: one forward over ``batch x seq`` tokens, timed whole.
Decode: after an untimed prefill of ``context`` tokens, each next-token step (one token
per sequence, KV cache reused) is timed on its own; every step is one sample.

A repetition is one *round*. ``measure_interleaved`` times several models round by round in
one loop, so that slow drift of the machine (on a shared 2-core CPU successive phases of
one process moved by ~15%) hits every model alike instead of reading as a speed-up for
whichever was timed in the faster stretch. The order inside a round alternates (AB, BA,
AB, ...): a model that always ran second, right after the other evicted its weights from
cache, would carry a bias of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from ..api import kv_cache_arg
from .timer import timer_for

Round = Callable[[], list[float]]  # one repetition of one model: its samples in ms


def _tokens(source: Any, batch: int, seq: int, offset: int = 0) -> Any:
    """``[batch, seq]`` ids cut from a 1-D id tensor of real text (wrapping around)."""

    need = batch * seq
    reps = need // source.numel() + 2
    flat = source.repeat(reps)[offset : offset + need]
    return flat.view(batch, seq).clone()


def prefill_round(model: Any, ids: Any, *, batch: int, seq: int, device: str) -> Round:
    x = _tokens(ids, batch, seq).to(device)
    timer = timer_for(device)

    def one() -> list[float]:
        timer.start()
        model(input_ids=x, use_cache=False)
        return [timer.stop_ms()]

    return one


def decode_round(model: Any, ids: Any, *, batch: int, context: int, tokens: int, device: str) -> Round:
    from transformers import DynamicCache

    x = _tokens(ids, batch, context).to(device)
    arg = kv_cache_arg(model) or "past_key_values"
    timer = timer_for(device)

    def one() -> list[float]:
        with_cache = {arg: DynamicCache()}
        out = model(input_ids=x, use_cache=True, **with_cache)  # the context: untimed
        nxt = out.logits[:, -1:].argmax(-1)
        samples = []
        for _ in range(tokens):
            timer.start()
            out = model(input_ids=nxt, use_cache=True, **with_cache)
            samples.append(timer.stop_ms())
            nxt = out.logits[:, -1:].argmax(-1)
        return samples

    return one


def measure_interleaved(rounds: dict[str, Round], *, warmup: int, repetitions: int,
                        progress: Callable[..., Any], desc: str) -> dict[str, list[float]]:
    """Samples of each named round, timed in alternating order, warm-up rounds dropped."""
    import torch

    samples: dict[str, list[float]] = {name: [] for name in rounds}
    order = list(rounds)
    with torch.inference_mode():
        for i in progress(range(warmup + repetitions), desc=desc, leave=False):
            for name in order if i % 2 == 0 else order[::-1]:
                got = rounds[name]()
                if i >= warmup:
                    samples[name].extend(got)
    return samples


def measure_prefill(
    model: Any, ids: Any, *, batch: int, seq: int, warmup: int, repetitions: int,
    device: str, progress: Callable[..., Any],
) -> list[float]:
    one = prefill_round(model, ids, batch=batch, seq=seq, device=device)
    return measure_interleaved({"m": one}, warmup=warmup, repetitions=repetitions, progress=progress,
                               desc=f"prefill b{batch}x{seq}")["m"]


def measure_decode(
    model: Any, ids: Any, *, batch: int, context: int, tokens: int, warmup: int,
    repetitions: int, device: str, progress: Callable[..., Any],
) -> list[float]:
    one = decode_round(model, ids, batch=batch, context=context, tokens=tokens, device=device)
    return measure_interleaved({"m": one}, warmup=warmup, repetitions=repetitions, progress=progress,
                               desc=f"decode b{batch}@{context}")["m"]


def interleaved_grid(models: dict[str, Any], ids: Any, measure: Any, device: str,
                     progress: Callable[..., Any]) -> dict[str, dict[str, list[float]]]:
    """The runner's latency grid (per batch size: the decode step, then each prefill length)
    with ``models`` timed in alternating rounds: ``{"<point>_ms": {name: samples}}``."""
    m = measure
    out: dict[str, dict[str, list[float]]] = {}
    for b in m.batch_sizes:
        points: list[tuple[str, Callable[..., Round]]] = [(
            f"decode_b{b}_c{m.decode_context}",
            partial(decode_round, ids=ids, batch=b, context=m.decode_context, tokens=m.decode_tokens, device=device))]
        points += [(f"prefill_b{b}_s{s}", partial(prefill_round, ids=ids, batch=b, seq=s, device=device))
                   for s in m.prefill_lengths]
        for name, make in points:
            out[f"{name}_ms"] = measure_interleaved({k: make(v) for k, v in models.items()}, warmup=m.warmup,
                                                    repetitions=m.repetitions, progress=progress,
                                                    desc=f"{name} interleaved")
    return out
