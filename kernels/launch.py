"""Launch helpers shared by the Triton ops (torch only; no triton import)."""

from __future__ import annotations

import torch

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


def spec_fields(spec: str, keys: dict[str, str]) -> dict[str, int]:
    """``"bn=8,bk=512"`` -> ``{field: value}`` through ``keys`` (short key -> field name), for
    configs whose fields are all integers; raises KeyError / ValueError on a bad part."""
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, val = (s.strip() for s in part.split("="))
        out[keys[key]] = int(val)
    return out
