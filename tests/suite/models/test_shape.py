"""Shape models: real configs, random weights, latency only; skipped cleanly without CUDA."""

import pytest
import torch

from sparsebench.errors import UsageError
from sparsebench.models import resolve_model
from sparsebench.models.shape import ShapeModel, shape_names


def test_shape_models_listed_and_resolved():
    assert {"shape:llama-3.1-8b", "shape:llama-3.2-1b", "shape:qwen2.5-7b"} <= set(shape_names())
    src = resolve_model("shape:llama-3.1-8b")
    assert isinstance(src, ShapeModel) and src.random_weights
    assert src.describe()["random_weights"] is True


def test_llama_8b_config_has_the_real_parameter_count():
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(ShapeModel("shape:llama-3.1-8b").config(), dtype=torch.bfloat16)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert sum(p.numel() for p in model.parameters()) == 8_030_261_248


def test_unknown_shape():
    with pytest.raises(UsageError, match="Did you mean 'shape:llama-3.1-8b'"):
        resolve_model("shape:llama-3.1-8")


def test_gpu_bench_on_a_cpu_machine_writes_skipped_records(tmp_path):
    from sparsebench import benchgpu
    from sparsebench.store import ResultsStore

    assert benchgpu.main(["--profile", "h100", "--models", "shape:llama-3.2-1b",
                          "--results", str(tmp_path)]) == 0
    records = ResultsStore(tmp_path).all()
    assert {r.spec["method"]["name"] for r in records} == {m for m, _ in benchgpu.METHODS}
    for r in records:
        assert r.status == "skipped"
        assert r.reason == "no CUDA device: profile 'h100' needs one"
        assert r.hardware["profile"] == "h100"
        assert r.spec["measure"]["decode_path"] == "graph"  # auto, with no CUDA device


def test_auto_decode_path_follows_the_gpu(monkeypatch):
    import torch

    from sparsebench import benchgpu

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    assert benchgpu.auto_decode_path() == "compile-tuned+gemv+pdl+graph"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (8, 0))
    assert benchgpu.auto_decode_path() == "compile-tuned+gemv+graph"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert benchgpu.auto_decode_path() == "graph"
