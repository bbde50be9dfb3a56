"""Greedy decoding over a transformers static cache, shared by the decode-path tests."""

import torch

from sparsebench.api import kv_cache_arg
from sparsebench.measure.cache_length import share


def greedy_steps(model, prefill, steps, forward=None, shared=False):
    """Prefill ``prefill`` (``[[ids]]``), optionally share the cache's write position, then
    ``steps`` greedy one-token steps through ``forward`` (default ``model.forward``): the
    logits of each step (copies) and the cache."""
    from transformers import StaticCache

    ids = torch.tensor(prefill)
    cache = StaticCache(config=model.config, max_cache_len=ids.shape[1] + steps)
    out = []
    with torch.inference_mode():
        logits = model(input_ids=ids, **{kv_cache_arg(model): cache}, use_cache=True,
                       cache_position=torch.arange(ids.shape[1])).logits
        if shared:
            assert share(cache)
        nxt = logits[:, -1:].argmax(-1)
        for t in range(steps):
            logits = (forward or model.forward)(input_ids=nxt, **{kv_cache_arg(model): cache}, use_cache=True,
                                                cache_position=torch.tensor([ids.shape[1] + t])).logits
            out.append(logits.clone())
            nxt = logits[:, -1:].argmax(-1)
    return out, cache
