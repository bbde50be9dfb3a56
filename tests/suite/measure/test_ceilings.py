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


def test_copy_ceiling_is_the_best_round_and_keeps_every_round():
    from sparsebench.measure.ceilings import measure_ceilings

    out = measure_ceilings(device="cpu", copy_bytes=1 << 20, reps=3, rounds=3, warmup_s=0.0)
    rounds = [out[f"copy_bandwidth_round{i}_gbs"] for i in range(3)]
    assert "copy_bandwidth_round3_gbs" not in out
    assert all(r > 0 for r in rounds)
    assert out["copy_bandwidth_gbs"] == max(rounds)
    assert out["copy_bandwidth_spread"] == (max(rounds) - min(rounds)) / max(rounds)
    assert out["bf16_gemm_tflops"] > 0


def test_yardstick_under_a_nondefault_allocator_is_the_higher_of_both_copies(monkeypatch):
    from sparsebench.measure import ceilings

    monkeypatch.setattr(ceilings, "measure_ceilings", lambda device: {"copy_bandwidth_gbs": 4000.0})
    monkeypatch.setattr(ceilings, "default_allocator_copy_gbs", lambda: 4240.0)
    monkeypatch.setenv(ceilings.ALLOC_CONF_ENV, "expandable_segments:True")
    out = ceilings.run_ceilings("cuda")
    assert out == {"copy_bandwidth_gbs": 4240.0, "copy_bandwidth_this_process_gbs": 4000.0,
                   "copy_bandwidth_default_allocator_gbs": 4240.0}
    monkeypatch.delenv(ceilings.ALLOC_CONF_ENV)
    assert ceilings.run_ceilings("cuda") == {"copy_bandwidth_gbs": 4000.0}


def test_default_allocator_child_without_a_gpu_gives_none_not_a_crash():
    import torch

    from sparsebench.measure.ceilings import default_allocator_copy_gbs

    if torch.cuda.is_available():
        assert default_allocator_copy_gbs() > 0
    else:
        assert default_allocator_copy_gbs(timeout_s=60) is None
