"""Wall-clock timers: CUDA events on a GPU, ``perf_counter_ns`` on a CPU."""

from __future__ import annotations

import time
from typing import Any


class CpuTimer:
    """Times a region in milliseconds with ``time.perf_counter_ns``."""

    name = "perf_counter_ns"

    def __init__(self) -> None:
        self._t0 = 0

    def start(self) -> None:
        self._t0 = time.perf_counter_ns()

    def stop_ms(self) -> float:
        return (time.perf_counter_ns() - self._t0) / 1e6


class CudaTimer:
    """Times a region with CUDA events (device time, not host launch time)."""

    name = "cuda_events"

    def __init__(self, torch: Any) -> None:
        self._torch = torch
        self._start = torch.cuda.Event(enable_timing=True)
        self._end = torch.cuda.Event(enable_timing=True)

    def start(self) -> None:
        self._start.record()

    def stop_ms(self) -> float:
        self._end.record()
        self._end.synchronize()
        return float(self._start.elapsed_time(self._end))


def timer_for(device: str) -> CpuTimer | CudaTimer:
    if device.startswith("cuda"):
        import torch

        return CudaTimer(torch)
    return CpuTimer()
