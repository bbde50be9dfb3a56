"""Launch helpers shared by the Triton ops (torch only; no triton import)."""

from __future__ import annotations

import os

import torch

PDL_ENV = "SPARSEBENCH_PDL"

_SM_COUNT: dict[int, int] = {}


def sm_count(device: torch.device, off_gpu: int = 2) -> int:
    """The GPU's multiprocessor count (cached per device); ``off_gpu`` elsewhere (the
    interpreter: grids small enough to be quick that still split)."""
    if device.type != "cuda":
        return off_gpu
    idx = device.index if device.index is not None else torch.cuda.current_device()
    if idx not in _SM_COUNT:
        _SM_COUNT[idx] = torch.cuda.get_device_properties(idx).multi_processor_count
    return _SM_COUNT[idx]


def workspace(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Scratch that every launch fully overwrites before reading (tests poison it)."""
    return torch.empty(shape, dtype=dtype, device=device)


_COUNTERS: dict[tuple[str, int | None], list[torch.Tensor]] = {}


def arrival_counters(device: torch.device, n: int) -> torch.Tensor:
    """Zeroed int32 arrival counters (at least ``n``) for kernels whose last program to finish
    a group of partials sums them; each such kernel resets the counters it used. Buffers are
    kept for the life of the process: a captured CUDA graph may still point at an old one.
    Calls on one stream share them; make a first call before capturing a CUDA graph (as
    warm-ups do), else the zeroing happens only when the graph replays."""
    key = (device.type, device.index)
    bufs = _COUNTERS.setdefault(key, [])
    if not bufs or bufs[-1].numel() < n:
        bufs.append(torch.zeros(max(n, 4096), dtype=torch.int32, device=device))
    return bufs[-1]


def is_pow2(v: int) -> bool:
    return v > 0 and v & (v - 1) == 0


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def next_pow2(v: int) -> int:
    """The smallest power of two >= ``v`` (1 for ``v <= 1``)."""
    return 1 << max(0, int(v) - 1).bit_length()


def hopper_or_newer(device: torch.device) -> bool:
    """A CUDA device of compute capability 9 or more (TMA, Hopper's shared memory)."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 9


def pdl(device: torch.device) -> bool:
    """Whether the decode kernels launch with programmatic dependent launch (Hopper+, CUDA):
    a kernel so launched may start while the kernel before it drains, and waits for its
    results only where it first reads them (``gdc_wait``); what it reads from no earlier
    kernel (a weight) it loads before that. ``SPARSEBENCH_PDL=1`` turns it on, ``0`` or
    unset leaves it off; elsewhere (CPU, the interpreter, older GPUs) it is always off."""
    flag = os.environ.get(PDL_ENV, "").strip()
    if flag not in ("", "0", "1"):
        raise ValueError(f"{PDL_ENV}={flag!r}: expected 1 (on) or 0 (off)")
    return flag == "1" and hopper_or_newer(device)


def spec_fields(spec: str, keys: dict[str, str]) -> dict[str, int]:
    """``"bn=8,bk=512"`` -> ``{field: value}`` through ``keys`` (short key -> field name), for
    configs whose fields are all integers; raises KeyError / ValueError on a bad part."""
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, val = (s.strip() for s in part.split("="))
        out[keys[key]] = int(val)
    return out


def parse_int_label(cls: type, spec: str, keys: dict[str, str], prefix: str):
    """``cls(**spec_fields(spec, keys))`` (fields left out keep their defaults), with one clear
    error for anything unreadable: ``<prefix><spec>: expected e.g. '<default label>' (why)``."""
    try:
        return cls(**spec_fields(spec, keys))
    except (KeyError, ValueError, TypeError) as exc:
        raise ValueError(f"{prefix}{spec!r}: expected e.g. '{cls().label()}' ({exc})") from None
