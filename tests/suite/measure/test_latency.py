"""Interleaved latency: the dense model and the method's timed in alternating rounds.

Structure only (which samples exist, in what order the rounds ran); never wall-clock
values: a benchmark is not a test.
"""

import torch

from sparsebench.api import MeasureSpec, RunSpec
from sparsebench.measure.latency import interleaved_grid, measure_interleaved
from sparsebench.runner import Runner
from sparsebench.store import ResultsStore


def _no_progress(iterable, **_):
    return iterable


def test_rounds_alternate_in_order_and_warmup_is_dropped():
    calls = []

    def round_of(name, n):
        def one():
            calls.append(name)
            return [float(len(calls))] * n
        return one

    got = measure_interleaved({"a": round_of("a", 1), "b": round_of("b", 2)}, warmup=1, repetitions=3,
                              progress=_no_progress, desc="t")
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]  # AB BA AB BA: neither always goes second
    assert got == {"a": [4.0, 5.0, 8.0], "b": [3.0, 3.0, 6.0, 6.0, 7.0, 7.0]}  # round 0 (warm-up) dropped


def test_the_grid_times_every_point_for_every_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    models = {"dense": LlamaForCausalLM(cfg).eval(), "method": LlamaForCausalLM(cfg).eval()}
    m = MeasureSpec(warmup=1, repetitions=2, batch_sizes=(1, 2), prefill_lengths=(4, 8), decode_context=6,
                    decode_tokens=3)
    got = interleaved_grid(models, torch.arange(64), m, "cpu", _no_progress)
    assert list(got) == ["decode_b1_c6_ms", "prefill_b1_s4_ms", "prefill_b1_s8_ms",
                         "decode_b2_c6_ms", "prefill_b2_s4_ms", "prefill_b2_s8_ms"]
    for key, pair in got.items():
        n = 2 * 3 if key.startswith("decode") else 2
        assert {k: len(v) for k, v in pair.items()} == {"dense": n, "method": n}
        assert all(x > 0 for v in pair.values() for x in v)


def test_a_cpu_method_run_times_dense_beside_it(tmp_path, tiny_model):
    """``Runner.run`` on a real tiny Llama: the method's record holds dense and method samples
    from the same alternating rounds, on the grid of its own samples; the dense record has none."""
    measure = MeasureSpec(warmup=1, repetitions=3, prefill_lengths=(8,), decode_context=8, decode_tokens=2)
    spec = RunSpec(model={"name": tiny_model, "dtype": "float32"}, method={"name": "magnitude"},
                   tasks=[{"name": "perplexity", "config": {"window": 16, "max_tokens": 32}}],
                   profile="cpu", measure=measure, calibration=None)
    dense, pruned = Runner(tmp_path, progress=False, log=lambda _: None).run(spec)
    assert dense.status == pruned.status == "ok", (dense.error, pruned.error)
    assert pruned.metrics["weight_sparsity"] > 0.4 and dense.interleaved == {}
    assert set(pruned.interleaved) == set(pruned.samples) == set(dense.samples) == {
        "decode_b1_c8_ms", "prefill_b1_s8_ms"}
    for key, pair in pruned.interleaved.items():
        assert {k: len(v) for k, v in pair.items()} == {"dense": len(pruned.samples[key]),
                                                        "method": len(pruned.samples[key])}
    assert "latency_interleaved" in pruned.phases
    assert ResultsStore(tmp_path).get(pruned.run_id).interleaved == pruned.interleaved  # stored as written

    # a reused baseline (another process, in general) still gets a dense timed beside the method
    _, again = Runner(tmp_path, progress=False, log=lambda _: None).run(spec)
    assert again.baseline["reused"] and set(again.interleaved) == set(pruned.interleaved)
