"""Bytes a decode step must read, on a model small enough to count by hand."""

import torch

from sparsebench.measure.ceilings import decode_bytes_per_token


def _tiny(tied):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=100, hidden_size=8, intermediate_size=16, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=tied)
    return LlamaForCausalLM(cfg)


def test_untied_embedding_counts_only_gathered_rows_plus_kv():
    model = _tiny(tied=False)
    params = sum(p.numel() for p in model.parameters())
    emb = 100 * 8
    # fp32: 4 bytes; batch 2 gathers 2 rows of 8; KV: 2 (k,v) * 2 layers * 1 head * 4 dims * 10 ctx * 2 batch
    expected = (params - emb + 2 * 8) * 4 + 2 * 2 * 1 * 4 * 10 * 2 * 4
    assert decode_bytes_per_token(model, batch=2, context=10) == expected


def test_tied_embedding_is_read_in_full_once():
    model = _tiny(tied=True)
    params = sum(p.numel() for p in model.parameters())  # shared tensor counted once
    expected = params * 4 + 2 * 2 * 1 * 4 * 5 * 1 * 4
    assert decode_bytes_per_token(model, batch=1, context=5) == expected
    assert torch.equal(model.lm_head.weight, model.model.embed_tokens.weight)
