"""The runner fuses projections for latency only, says so in the record, and keeps CPU keys."""

import pytest
import torch
from torch import nn

from sparsebench.api import MeasureSpec, RunSpec
from sparsebench.methods.dense import Dense
from sparsebench.models.sources import ModelSource
from sparsebench.profiles import select_profile
from sparsebench.resolve import Resolved
from sparsebench.runner import Runner


class _Tiny(ModelSource):
    name = "tiny"
    random_weights = True

    def describe(self):
        return {"kind": "test"}

    def load(self, dtype, device):
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        cfg = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                          num_attention_heads=2, num_key_value_heads=1)
        self.model = LlamaForCausalLM(cfg).eval()
        return self.model, None


class _Watching(Dense):
    """Dense, but records what the model's projections are when ``report`` runs (after the
    tasks, before latency): accuracy must see the model unfused."""

    def report(self, model):
        self.types_at_report = {type(m) for m in model.modules() if isinstance(m, nn.Linear)}
        return {}


def _run(tmp_path, fuse):
    runner = Runner(tmp_path, progress=False, log=lambda _: None)
    measure = MeasureSpec(warmup=0, repetitions=1, prefill_lengths=(8,), decode_context=8, decode_tokens=2,
                          fuse_projections=fuse)
    spec = RunSpec(model={"name": "tiny", "dtype": "float32"}, measure=measure, calibration=None)
    method, source = _Watching(Dense.Config()), _Tiny()
    rec = runner._execute(Resolved(spec, method, [], source, select_profile("cpu", runner.machine)),
                          baseline=None, save=False)
    assert rec.status == "ok", rec.error
    return rec, method, source.model


def test_fused_on_request_and_recorded(tmp_path):
    rec, method, model = _run(tmp_path, fuse=True)
    assert method.types_at_report == {nn.Linear}
    assert rec.kernels["projections"] == "fused(qkv x2, gate_up x2)"
    assert rec.metrics["fused_projection_groups"] == 4
    assert rec.metrics["fused_projections_check_rel_err"] < 1e-6
    assert any("qkv: model.layers.{0-1}.self_attn" in n for n in rec.notes)
    assert rec.spec["measure"]["fuse_projections"] is True
    assert "decode_b1_c8_ms_p50" in rec.metrics
    # undone after the latency phase: a saved model has independent weights
    assert {type(m) for m in model.modules() if isinstance(m, nn.Linear)} == {nn.Linear}


def test_auto_is_off_on_a_cpu(tmp_path):
    rec, _, _ = _run(tmp_path, fuse=None)
    assert rec.kernels["projections"] == "separate"
    assert "fused_projection_groups" not in rec.metrics
    assert "fuse_projections" not in rec.spec["measure"]


def test_auto_leaves_the_spec_key_of_older_specs_unchanged():
    old = {"batch_sizes": [1], "decode_context": 128, "decode_path": "graph", "decode_tokens": 16,
           "enabled": False, "prefill_lengths": [128], "repetitions": 5, "warmup": 2}
    spec = RunSpec.model_validate({"measure": old})
    assert spec.measure.fuse_projections is None
    assert spec.model_dump(mode="json")["measure"] == old
    keys = {RunSpec(measure=MeasureSpec(fuse_projections=v)).key() for v in (None, True, False)}
    assert len(keys) == 3  # an explicit choice is a different measurement


@pytest.mark.parametrize(("flag", "value"), [([], None), (["--fuse-projections", "on"], True),
                                             (["--fuse-projections", "off"], False),
                                             (["--fuse-projections", "auto"], None)])
def test_cli_flag(flag, value):
    from sparsebench.cli import _build_spec, base_parser

    args, extra = base_parser().parse_known_args(["run", "--model", "shape:llama-3.1-8b", *flag])
    assert _build_spec(args, extra).measure.fuse_projections is value


def test_cli_flag_rejects_other_words():
    from sparsebench.cli import base_parser
    from sparsebench.errors import UsageError

    with pytest.raises(UsageError, match="expected on, off or auto"):
        base_parser().parse_known_args(["run", "--fuse-projections", "maybe"])


@pytest.mark.parametrize("value", [True, False])
def test_reproduce_command_round_trips_the_choice(value):
    import shlex

    from sparsebench.cli import _build_spec, base_parser
    from sparsebench.sitegen.reproduce import reproduce_command

    spec = RunSpec(model={"name": "shape:llama-3.1-8b"}, profile="h100",
                   measure=MeasureSpec(fuse_projections=value)).model_dump(mode="json")
    argv = shlex.split(reproduce_command(spec))[2:]
    args, extra = base_parser().parse_known_args(["run", *argv])
    assert _build_spec(args, extra).measure.fuse_projections is value


def test_gpu_profiles_resolve_fusion_into_the_key_cpu_keys_stay():
    """Fused GPU latency must not share a spec key with unfused records of the same settings;
    CPU specs (and the committed CPU baselines) keep their keys."""
    from sparsebench.api import MeasureSpec, ModelRef, RunSpec
    from sparsebench.resolve import resolve

    machine = {"id": None, "cuda_available": False}
    shape = ModelRef(name="shape:llama-3.2-1b")
    auto = resolve(RunSpec(model=shape, profile="h100"), machine).spec
    on = resolve(RunSpec(model=shape, profile="h100", measure=MeasureSpec(fuse_projections=True)), machine).spec
    off = resolve(RunSpec(model=shape, profile="h100", measure=MeasureSpec(fuse_projections=False)), machine).spec
    assert auto.measure.fuse_projections is True and auto.key() == on.key() != off.key()
    assert resolve(auto, machine).spec.key() == auto.key()
    cpu = resolve(RunSpec(profile="cpu"), machine).spec
    assert cpu.measure.fuse_projections is None
    assert "fuse_projections" not in cpu.model_dump(mode="json")["measure"]
    no_latency = resolve(RunSpec(model=shape, profile="h100", measure=MeasureSpec(enabled=False)), machine).spec
    assert no_latency.measure.fuse_projections is None


def test_a_failing_fast_decode_path_falls_back_to_the_plain_graph(tmp_path, monkeypatch):
    """The requested path failing (as wanda's compiled step once did) times the plain graph
    path, not eager, and the record says which ran and why; a failing plain path falls to eager."""
    from sparsebench.measure import decode_graph
    from sparsebench.store.records import RunRecord

    runner = Runner(tmp_path, progress=False, log=lambda _: None)
    rec = RunRecord(run_id="r", spec_key="k", created_at="now", status="ok", spec={}, env={}, hardware={})

    def fast(*args):
        raise RuntimeError("operation failed due to a previous error during capture")

    monkeypatch.setattr(Runner, "_decode_graphed", staticmethod(fast))
    monkeypatch.setattr(decode_graph, "measure_decode_graphed", lambda model, ids, compile, **kw: ([4.0, 5.0], 1e-3))
    path = "compile-tuned+gemv+pdl+graph"
    graphed = lambda: runner._decode_graphed_or_plain(rec, "decode_b1_c8", None, None, path, "tuned-pdl", {})  # noqa: E731
    samples = runner._graphed_or_eager(rec, "decode_b1_c8", "decode_step", f"{path}(static_cache)",
                                       "eager(dynamic_cache)", graphed, lambda: [9.0])
    assert samples == [4.0, 5.0] and rec.kernels["decode_step"] == "graph(static_cache)"
    assert any("decode path compile-tuned+gemv+pdl+graph failed (RuntimeError: operation failed" in n
               and "the plain graph path was timed instead" in n for n in rec.notes)
    plain = lambda: runner._decode_graphed_or_plain(rec, "decode_b1_c8", None, None, "graph", None, {})  # noqa: E731
    assert runner._graphed_or_eager(rec, "decode_b1_c8", "decode_step", "graph(static_cache)",
                                    "eager(dynamic_cache)", plain, lambda: [9.0]) == [9.0]
    assert rec.kernels["decode_step"] == "eager(dynamic_cache)"
