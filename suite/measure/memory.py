"""Peak memory: CUDA allocator peaks on a GPU, the process peak RSS (VmHWM) on a CPU.

On Linux the RSS high-water mark can be reset by writing ``5`` to
``/proc/self/clear_refs``, which lets us attribute a peak to one phase of the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

_STATUS = Path("/proc/self/status")
_CLEAR = Path("/proc/self/clear_refs")


def _vm_field(name: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def reset_peak(device: str) -> bool:
    """Reset the peak counter; returns whether the reset is supported here."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return True
    try:
        _CLEAR.write_text("5")
        return True
    except OSError:
        return False


def read_peak(device: str) -> dict[str, float]:
    """Peak bytes since the last reset (names say which counter)."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
        return {
            "peak_allocated_bytes": float(torch.cuda.max_memory_allocated()),
            "peak_reserved_bytes": float(torch.cuda.max_memory_reserved()),
        }
    hwm = _vm_field("VmHWM")
    if hwm is None:
        import resource

        hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"peak_rss_bytes": float(hwm)}


def stored_bytes(model: Any) -> int:
    """Bytes the model's parameters and buffers occupy as stored (shared tensors counted once).

    A method that packs weights (quantization, sparse formats) replaces tensors with their
    packed form, so this number reflects what it really holds.
    """
    seen: set[tuple[int, int]] = set()
    total = 0
    for t in list(model.parameters()) + list(model.buffers()):
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        if key in seen:
            continue
        seen.add(key)
        total += t.untyped_storage().nbytes()
    return total
