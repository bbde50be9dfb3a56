"""Timing used by kernels that pick their own launch configuration on the device.

The harness's ``sparsebench.measure.kernelbench`` is the place that *reports* timings;
kernels may not import the harness, so the small in-process timer their autotuning needs
lives here. Each candidate is replayed in a CUDA graph so the host set-up of a call (plan
creation, argument packing) does not decide which configuration wins.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch


def median(values: Sequence[float]) -> float:
    return sorted(values)[len(values) // 2]


def back_to_back_ms(fns: Sequence[Callable[[], Any]], replays: int = 3,
                    statistic: Callable[[Sequence[float]], float] = min, eager_fallback: bool = False) -> float:
    """Milliseconds per call of ``fns`` run back to back: each called once (compiles, caches),
    all captured in one CUDA graph, which is replayed ``replays`` times after one warm replay;
    ``statistic`` of the per-call times. When capture fails this raises, or with
    ``eager_fallback`` times the calls eagerly. Never call it under an outer capture."""
    for f in fns:
        f()
    torch.cuda.synchronize()
    graph = None
    try:
        graph = torch.cuda.CUDAGraph()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for f in fns:
                f()
        torch.cuda.current_stream().wait_stream(side)
        with torch.cuda.graph(graph):
            for f in fns:
                f()
        run = graph.replay
    except Exception:  # e.g. an alg id the library refuses: the caller decides
        if not eager_fallback:
            raise
        torch.cuda.synchronize()

        def run() -> None:
            for f in fns:
                f()
    run()
    times = []
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(replays):
        start.record()
        run()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) / len(fns))
    del graph
    return statistic(times)


def time_ms(fn: Any, calls: int = 3, replays: int = 3) -> float:
    """Milliseconds per call of ``fn`` replayed in a CUDA graph (best of ``replays``)."""
    return back_to_back_ms([fn] * calls, replays=replays)
