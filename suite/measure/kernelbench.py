"""Timing of single kernels on a GPU, honest about caches and launch overhead.

A decode-sized GEMV reads a weight that may fit in the 50 MB L2 of an H100; timing the
same buffer over and over would then measure L2, not HBM. So every timed call works on
its own copy of the operands (``copies`` of them, together larger than the L2 several
times over), as each layer of a real model has its own weights. The calls are captured
in one CUDA graph so host launch gaps do not count, then the graph is replayed and timed
with CUDA events; one sample = one replay / number of calls in it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .stats import summarize

L2_FLUSH_BYTES = 256 << 20  # a few times the largest L2 of current data-centre GPUs


def copies_for(bytes_per_call: int, minimum: int = 4, maximum: int = 64) -> int:
    """How many operand copies make one replay read well past the L2."""
    need = -(-L2_FLUSH_BYTES // max(bytes_per_call, 1))
    return max(minimum, min(maximum, need))


def time_calls(calls: Sequence[Callable[[], Any]], reps: int = 30, warmup: int = 3,
               graph: bool = True) -> list[float]:
    """Milliseconds per call: each sample replays ``calls`` (distinct operands) once."""
    import torch

    from .timer import CudaTimer

    for _ in range(warmup):
        for c in calls:
            c()
    torch.cuda.synchronize()
    run: Callable[[], None]
    if graph:
        g = torch.cuda.CUDAGraph()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for c in calls:  # warm the side stream (allocator, autotuners) before capture
                c()
        torch.cuda.current_stream().wait_stream(stream)
        with torch.cuda.graph(g):
            for c in calls:
                c()
        run = g.replay
    else:
        def run() -> None:
            for c in calls:
                c()
    run()
    torch.cuda.synchronize()
    timer = CudaTimer(torch)
    samples = []
    for _ in range(reps):
        timer.start()
        run()
        samples.append(timer.stop_ms() / len(calls))
    return samples


def time_calls_on(device: str, calls: Sequence[Callable[[], Any]], reps: int = 30) -> list[float]:
    """``time_calls`` on a GPU; on a CPU (the benchmarks' interpreter dry runs, whose timings
    mean nothing) wall-clock milliseconds per call, each sample one pass over ``calls``."""
    if device == "cuda":
        return time_calls(calls, reps=reps)
    from .timer import CpuTimer

    timer, out = CpuTimer(), []
    for _ in range(reps):
        timer.start()
        for c in calls:
            c()
        out.append(timer.stop_ms() / len(calls))
    return out


def summary(samples: list[float]) -> dict[str, float]:
    return {k: v for k, v in summarize(samples).items() if k in ("p50", "p90", "mean", "sem")}
