"""Timing used by kernels that pick their own launch configuration on the device.

The harness's ``sparsebench.measure.kernelbench`` is the place that *reports* timings;
kernels may not import the harness, so the small in-process timer their autotuning needs
lives here. Each candidate is replayed in a CUDA graph so the host set-up of a call (plan
creation, argument packing) does not decide which configuration wins.
"""

from __future__ import annotations

from typing import Any

import torch


def time_ms(fn: Any, calls: int = 3, replays: int = 3) -> float:
    """Milliseconds per call of ``fn`` replayed in a CUDA graph (best of ``replays``)."""
    fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    best = float("inf")
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(replays):
        start.record()
        graph.replay()
        stop.record()
        stop.synchronize()
        best = min(best, start.elapsed_time(stop) / calls)
    del graph
    return best
