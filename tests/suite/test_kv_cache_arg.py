"""kv_cache_arg: the KV-cache keyword of this transformers version, read from the forward's signature."""

from __future__ import annotations

import functools
import warnings

import pytest
import torch

from sparsebench.api import kv_cache_arg


class NewName:
    def forward(self, input_ids, cache=None, use_cache=None):
        return input_ids


class OldName:
    def forward(self, input_ids, past_key_values=None, use_cache=None):
        return input_ids


class NoCache:
    def forward(self, input_ids):
        return input_ids


@pytest.mark.parametrize(("cls", "name"), [(NewName, "cache"), (OldName, "past_key_values"), (NoCache, None)])
def test_the_name_comes_from_the_signature(cls, name):
    assert kv_cache_arg(cls()) == name


def test_a_wrapped_instance_forward_falls_back_to_the_class():
    model = OldName()
    inner = model.forward
    model.forward = lambda *args, **kwargs: inner(*args, **kwargs)  # what a hooking method may install
    assert kv_cache_arg(model) == "past_key_values"
    model = NewName()
    model.forward = functools.wraps(model.forward)(lambda *a, **k: None)  # wraps keeps the signature
    assert kv_cache_arg(model) == "cache"


def test_a_real_model_decodes_through_the_name_without_a_deprecation_warning():
    from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = LlamaForCausalLM(cfg).eval()
    arg = kv_cache_arg(model)
    assert arg in ("cache", "past_key_values")
    ids = torch.randint(0, 64, (1, 9), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # the old name warns from transformers 5.25
        full = model(input_ids=ids).logits[:, -1]
        cache = DynamicCache()
        model(input_ids=ids[:, :-1], use_cache=True, **{arg: cache})
        step = model(input_ids=ids[:, -1:], use_cache=True, **{arg: cache}).logits[:, -1]
    torch.testing.assert_close(step, full, rtol=1e-4, atol=1e-4)
