"""``Method.report``: the runner stores what a method measured while the tasks ran."""

import torch

from sparsebench.api import ApplyContext, Method, MethodConfig, MethodResult, Metric, RunSpec
from sparsebench.models.sources import ModelSource
from sparsebench.profiles import select_profile
from sparsebench.resolve import Resolved
from sparsebench.runner import Runner


class _Tiny(ModelSource):
    name = "tiny"
    random_weights = True  # no tasks: the report still comes after where they would run

    def describe(self):
        return {"kind": "test"}

    def load(self, dtype, device):
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        cfg = LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                          num_attention_heads=2, num_key_value_heads=1)
        return LlamaForCausalLM(cfg).eval(), None


class _Cfg(MethodConfig):
    pass


class _Counts(Method):
    name = "counts"
    family = "activation_sparsity"
    description = "reports how often report() was called"
    Config = _Cfg

    def __init__(self, config):
        super().__init__(config)
        self.calls = 0

    def apply_(self, model, ctx: ApplyContext) -> MethodResult:
        return MethodResult(metrics={"applied": Metric(value=1)})

    def report(self, model):
        self.calls += 1
        return {"seen_during_tasks": Metric(value=0.25, n=7)}


def test_runner_stores_the_method_report(tmp_path):
    runner = Runner(tmp_path, progress=False, log=lambda _: None)
    spec = RunSpec(model={"name": "tiny", "dtype": "float32"}, method={"name": "counts"},
                   measure={"enabled": False}, calibration=None)
    method = _Counts(_Cfg())
    resolved = Resolved(spec, method, [], _Tiny(), select_profile("cpu", runner.machine))
    rec = runner._execute(resolved, baseline=None, save=False)
    assert rec.status == "ok", rec.error
    assert method.calls == 1
    assert rec.metrics["seen_during_tasks"] == 0.25 and rec.metric_info["seen_during_tasks"].n == 7
    assert rec.metrics["applied"] == 1


def test_the_default_report_adds_nothing():
    from sparsebench.methods.dense import Dense

    assert Dense(Dense.Config()).report(object()) == {}
