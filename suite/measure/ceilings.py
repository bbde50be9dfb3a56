"""The machine's real ceilings, measured at the start of a GPU run and stored in the record.

Datasheet figures are leads; the roofline fraction of a decode step is computed against
the copy bandwidth measured here, on this card, in this process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from ..environment import ALLOC_CONF_ENV


def measure_ceilings(device: str = "cuda", copy_bytes: int = 2 << 30, reps: int = 20,
                     rounds: int = 3, warmup_s: float = 0.3) -> dict[str, float]:
    """Device-to-device copy bandwidth (read + write bytes) and bf16 GEMM rate.

    The copy is timed in ``rounds`` rounds, each on a freshly allocated source and
    destination (a single pair moved up to 7% between processes while the decode step
    moved 2%), after ``warmup_s`` seconds of copying so clocks have ramped. The ceiling is
    the best round's median: a yardstick that errs high makes roofline fractions err low,
    never flatter. Every round's figure and their spread are stored beside it.
    """
    import time

    import torch

    from .stats import percentile
    from .timer import timer_for

    timer = timer_for(device)

    def time_ms(fn: Any) -> float:
        for _ in range(3):
            fn()
        samples = []
        for _ in range(reps):
            timer.start()
            fn()
            samples.append(timer.stop_ms())
        return percentile(samples, 50)

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    n = copy_bytes // 2
    round_gbs = []
    for r in range(max(1, rounds)):
        src = torch.randn(n, dtype=torch.bfloat16, device=device)
        dst = torch.empty_like(src)
        if r == 0:  # clocks up before anything is timed
            sync()
            t_end = time.perf_counter() + warmup_s
            while time.perf_counter() < t_end:
                dst.copy_(src)
                sync()
        round_gbs.append(2 * copy_bytes / (time_ms(lambda d=dst, s=src: d.copy_(s)) * 1e-3) / 1e9)
        del src, dst  # this pair is freed before the next is placed
    k = 8192 if device.startswith("cuda") else 256
    a = torch.randn(k, k, dtype=torch.bfloat16, device=device)
    b = torch.randn(k, k, dtype=torch.bfloat16, device=device)
    mm_ms = time_ms(lambda: a @ b)
    a = b = None
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    best = max(round_gbs)
    out = {
        "copy_bandwidth_gbs": best,
        "copy_bandwidth_spread": (best - min(round_gbs)) / best,
        "bf16_gemm_tflops": 2 * k**3 / (mm_ms * 1e-3) / 1e12,
    }
    for i, gbs in enumerate(round_gbs):
        out[f"copy_bandwidth_round{i}_gbs"] = gbs
    return out


def default_allocator_copy_gbs(timeout_s: float = 120.0) -> float | None:
    """The copy bandwidth measured in a child process with the CUDA caching allocator's
    defaults (``PYTORCH_CUDA_ALLOC_CONF`` removed), or None when that child fails.

    On an H200 with ``expandable_segments:True`` the same copy measured 3.95-4.12 TB/s
    against 4.22-4.24 with the defaults (``benchmarks/copy_ceiling.py``, five fresh buffer
    pairs, three times per process), while the decode step was no slower: a yardstick taken
    under that setting alone would flatter every roofline fraction by ~5%.
    """
    env = {k: v for k, v in os.environ.items() if k != ALLOC_CONF_ENV}
    code = ("import json; from sparsebench.measure.ceilings import measure_ceilings; "
            "print(json.dumps(measure_ceilings()))")
    try:
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                             timeout=timeout_s, check=True)
        return float(json.loads(out.stdout.strip().splitlines()[-1])["copy_bandwidth_gbs"])
    except (subprocess.SubprocessError, OSError, ValueError, KeyError, IndexError):
        return None


def run_ceilings(device: str = "cuda") -> dict[str, float]:
    """``measure_ceilings`` for a run's record. Under a non-default allocator setting the copy
    is measured again in a child process with the defaults, and the yardstick
    (``copy_bandwidth_gbs``) is the higher of the two; both figures are kept."""
    out = measure_ceilings(device)
    if os.environ.get(ALLOC_CONF_ENV, "").strip() and device.startswith("cuda"):
        here = out["copy_bandwidth_gbs"]
        default = default_allocator_copy_gbs()
        out["copy_bandwidth_this_process_gbs"] = here
        if default is not None:
            out["copy_bandwidth_default_allocator_gbs"] = default
            out["copy_bandwidth_gbs"] = max(here, default)
    return out


def decode_bytes_per_token(model: Any, batch: int, context: int) -> float:
    """Bytes one decode step must read: every weight once (the input embedding only for
    the rows it gathers, unless it is tied to the LM head; packed layers in their packed
    size) plus the KV cache so far."""
    cfg = model.config
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    # A tensor is identified by where its data starts and its size, not by its storage:
    # fused projections (``fuse.py``) are views into one storage and each is read once.
    seen: set[tuple[int, int]] = set()
    total = 0
    for p in model.parameters():
        key = (p.data_ptr(), p.numel() * p.element_size())
        if key in seen:
            continue
        seen.add(key)
        if p is emb and emb.data_ptr() != head.data_ptr():
            total += batch * p.shape[1] * p.element_size()
        else:
            total += p.numel() * p.element_size()
    from .sparsity import is_packed_linear

    for mod in model.modules():  # packed weights (sparse/quantized kernels) are buffers
        if is_packed_linear(mod):
            for b in mod.buffers(recurse=False):
                key = (b.data_ptr(), b.numel() * b.element_size())
                if key not in seen:
                    seen.add(key)
                    total += b.numel() * b.element_size()
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    kv = 2 * cfg.num_hidden_layers * kv_heads * head_dim * context * batch * emb.element_size()
    return float(total + kv)
