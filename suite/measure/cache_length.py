"""One write position for all layers of a static cache, on the ``+gemv`` decode path
(latency only).

transformers' ``StaticLayer`` keeps a device-side count of filled positions per layer
(``cumulative_length``): every layer's one-token update computes its write position from its
own counter and adds one to it. In the compiled 8B-shaped step on an H200 that is two small
kernels a layer (an ``add_`` and the position feeding the cache write), 62 a step of 417,
each a launch in the chain. A serving engine keeps one position per sequence.

While ``shared_lengths()`` is active, ``share(cache)`` (called by the decode timing right
after its prefill, before any capture) gives every layer of a static cache one counter
tensor: one-token updates write at that position and only the last layer advances it. So
every layer writes where it wrote before and the counter ends each step where every layer's
own counter did; prefill-sized updates, and caches that were not shared, run transformers'
own update. Accuracy never sees any of it: the tasks ran before.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

LABEL = "one write position for all layers of a transformers static cache, advanced once a step"


def _static_layer() -> type | None:
    try:
        from transformers.cache_utils import StaticLayer
    except ImportError:  # a transformers without per-layer cache objects
        return None
    return StaticLayer


def share(cache: Any) -> bool:
    """Give all layers of ``cache`` (a filled static cache) one length counter; False, and
    nothing changed, when its layers are not plain static layers with equal counters."""
    import torch

    static = _static_layer()
    layers = list(getattr(cache, "layers", []))
    if static is None or not layers or any(
            type(layer) is not static or not getattr(layer, "is_initialized", False)
            or not isinstance(getattr(layer, "cumulative_length", None), torch.Tensor) for layer in layers):
        return False
    counters = torch.stack([layer.cumulative_length.reshape(()) for layer in layers])
    if not bool((counters == counters[0]).all()):
        return False
    shared = layers[0].cumulative_length
    for i, layer in enumerate(layers):
        layer.cumulative_length = shared
        layer._shared_length = shared
        layer._advances_shared = i == len(layers) - 1
    return True


def shared_position(layer: Any) -> Any:
    """``[1]`` view of the position a shared layer writes its one new token at (no kernel
    computes it), or None for a layer ``share`` did not touch."""
    shared = getattr(layer, "_shared_length", None)
    return None if shared is None else shared.reshape(1)


def advance(layer: Any) -> None:
    """After a shared layer's one-token write: the last layer moves the position on."""
    if layer._advances_shared:
        layer._shared_length.add_(1)


def _shared_update(original: Any) -> Any:
    def update(self: Any, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> Any:
        position = shared_position(self)
        if position is None or key_states.shape[-2] != 1:
            return original(self, key_states, value_states, *args, **kwargs)
        self.keys.index_copy_(2, position, key_states)
        self.values.index_copy_(2, position, value_states)
        advance(self)  # after the writes, which read the old value
        return self.keys, self.values

    return update


@contextmanager
def shared_lengths() -> Iterator[str]:
    """While the block runs, static caches passed to ``share`` write at one shared position
    (and the decode timing shares each cache it fills). Yields the record's label, or why
    nothing is shared."""
    from . import decode_graph

    static = _static_layer()
    if static is None:
        yield "per-layer (this transformers has no StaticLayer)"
        return
    original = static.update
    static.update = _shared_update(original)
    decode_graph.CACHE_PREPARERS.append(share)
    try:
        yield LABEL
    finally:
        decode_graph.CACHE_PREPARERS.remove(share)
        static.update = original
