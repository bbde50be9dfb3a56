"""The machine's real ceilings, measured at the start of a GPU run and stored in the record.

Datasheet figures are leads; the roofline fraction of a decode step is computed against
the copy bandwidth measured here, on this card, in this process.
"""

from __future__ import annotations

from typing import Any


def measure_ceilings(device: str = "cuda", copy_bytes: int = 2 << 30, reps: int = 20) -> dict[str, float]:
    """Device-to-device copy bandwidth (read + write bytes) and bf16 GEMM rate."""
    import torch

    from .stats import percentile
    from .timer import CudaTimer

    timer = CudaTimer(torch)

    def time_ms(fn: Any) -> float:
        for _ in range(3):
            fn()
        samples = []
        for _ in range(reps):
            timer.start()
            fn()
            samples.append(timer.stop_ms())
        return percentile(samples, 50)

    n = copy_bytes // 2
    src = torch.randn(n, dtype=torch.bfloat16, device=device)
    dst = torch.empty_like(src)
    copy_ms = time_ms(lambda: dst.copy_(src))
    src = dst = None  # free 4 GiB before the GEMM
    k = 8192
    a = torch.randn(k, k, dtype=torch.bfloat16, device=device)
    b = torch.randn(k, k, dtype=torch.bfloat16, device=device)
    mm_ms = time_ms(lambda: a @ b)
    a = b = None
    torch.cuda.empty_cache()
    return {
        "copy_bandwidth_gbs": 2 * copy_bytes / (copy_ms * 1e-3) / 1e9,
        "bf16_gemm_tflops": 2 * k**3 / (mm_ms * 1e-3) / 1e12,
    }


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
