"""Where does a graphed decode step of a shape model spend its time? (GPU diagnostic)

python benchmarks/decode_probe.py shape:llama-3.1-8b
Prints the top CUDA kernels of one replayed step and compares eager-graph vs
torch.compile+graph step times. Used to choose the decode path; results go in NOTES.md.
"""

from __future__ import annotations

import sys
import time

import torch


def main(name: str) -> None:
    from transformers import StaticCache

    from sparsebench.measure.ceilings import decode_bytes_per_token, measure_ceilings
    from sparsebench.measure.decode_graph import measure_decode_graphed
    from sparsebench.measure.stats import percentile
    from sparsebench.models.shape import ShapeModel

    ceil = measure_ceilings()
    print("ceilings", ceil)
    model, _ = ShapeModel(name).load(torch.bfloat16, "cuda")
    ids = torch.randint(0, model.config.vocab_size, (4096,))
    nbytes = decode_bytes_per_token(model, 1, 512)
    kw = dict(batch=1, context=512, tokens=32, warmup=2, repetitions=5, progress=lambda it, **_: it)
    s, _ = measure_decode_graphed(model, ids, **kw)
    p50 = percentile(s, 50)
    print(f"graph eager: p50 {p50:.3f} ms, roofline {nbytes / (p50 * 1e-3) / (ceil['copy_bandwidth_gbs'] * 1e9):.3f}")

    # kernel breakdown of eager (ungraphed) static-cache steps
    cache = StaticCache(config=model.config, max_cache_len=600)
    x = ids[:512].view(1, 512).cuda()
    with torch.inference_mode():
        model(input_ids=x, past_key_values=cache, use_cache=True, cache_position=torch.arange(512, device="cuda"))
        nxt = torch.zeros(1, 1, dtype=torch.long, device="cuda")
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for t in range(3):
                model(input_ids=nxt, past_key_values=cache, use_cache=True,
                      cache_position=torch.tensor([512 + t], device="cuda"))
            torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=18, max_name_column_width=70))

    t0 = time.time()
    model.forward = torch.compile(model.forward, mode="max-autotune-no-cudagraphs", fullgraph=False)
    s, _ = measure_decode_graphed(model, ids, **kw)
    p50 = percentile(s, 50)
    print(f"compile+graph: p50 {p50:.3f} ms, roofline {nbytes / (p50 * 1e-3) / (ceil['copy_bandwidth_gbs'] * 1e9):.3f}"
          f" (compile+measure {time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "shape:llama-3.1-8b")
