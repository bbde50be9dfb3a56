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


def test_gpu_bench_on_a_cpu_machine_writes_skipped_records(tmp_path, monkeypatch):
    from sparsebench import benchgpu
    from sparsebench.store import ResultsStore

    _no_alloc_conf(monkeypatch)

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


def _no_alloc_conf(monkeypatch):
    """The allocator variable absent now, and absent again after the test (main() sets it)."""
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "placeholder")
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF")


def test_isolated_gpu_bench_runs_dense_then_each_method_in_a_child(tmp_path, capsys, monkeypatch):
    from sparsebench import benchgpu
    from sparsebench.store import ResultsStore

    _no_alloc_conf(monkeypatch)
    assert benchgpu.main(["--isolate", "--profile", "h100", "--models", "shape:llama-3.2-1b",
                          "--methods", "rtn", "--results", str(tmp_path)]) == 0
    records = ResultsStore(tmp_path).all()
    # dense was added in front (the baseline), each run in its own process; a skipped dense is
    # no baseline to reuse, so the rtn child records its own skipped one as well
    assert {r.spec["method"]["name"] for r in records} == {"dense", "rtn"}
    assert all(r.status == "skipped" for r in records)
    # the children ran with the allocator setting the parent chose, and their records say so
    assert {r.env["cuda_alloc_conf"] for r in records} == {"expandable_segments:True"}
    assert "## shape:llama-3.2-1b" in capsys.readouterr().out  # the parent's summary of both


def test_child_options_reproduce_the_parent_run():
    from sparsebench import benchgpu

    p = benchgpu.parser()
    parent = p.parse_args(["--profile", "h100", "--prefill-lengths", "16", "64", "--decode-context", "128",
                           "--decode-tokens", "8", "--repetitions", "3", "--decode-path", "graph",
                           "--kernel", "ref", "--no-fuse-projections", "--no-expandable-segments",
                           "--results", "out"])
    child = p.parse_args(benchgpu.child_argv(parent, "shape:llama-3.2-1b", "wanda", "ids.jsonl"))
    for key, value in vars(parent).items():
        if key not in ("models", "methods", "isolate", "record_ids"):
            assert getattr(child, key) == value, key
    assert (child.models, child.methods, child.isolate, child.record_ids) == (
        ["shape:llama-3.2-1b"], ["wanda"], False, "ids.jsonl")


def test_expandable_segments_by_default_unless_the_user_set_the_allocator(monkeypatch):
    import os

    from sparsebench import benchgpu

    p = benchgpu.parser()
    _no_alloc_conf(monkeypatch)
    benchgpu.allocator_setting(p.parse_args(["--no-expandable-segments"]))
    assert "PYTORCH_CUDA_ALLOC_CONF" not in os.environ
    benchgpu.allocator_setting(p.parse_args([]))
    assert os.environ["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "max_split_size_mb:128")
    benchgpu.allocator_setting(p.parse_args([]))
    assert os.environ["PYTORCH_CUDA_ALLOC_CONF"] == "max_split_size_mb:128"


@pytest.mark.parametrize("option,value,message", [
    ("--methods", "nosuch", "Unknown method 'nosuch'"),
    ("--models", "shape:llama-3.1-8", "Did you mean 'shape:llama-3.1-8b'"),
])
def test_gpu_bench_refuses_unknown_names_before_any_run(tmp_path, capsys, option, value, message):
    """A typo exits 2 before the runs in front of it (dense first, in --isolate) spend anything."""
    from sparsebench import benchgpu

    assert benchgpu.main(["--isolate", option, value, "--results", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
