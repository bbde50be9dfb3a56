"""SiLU(gate) x up computed by the fused gate/up GEMV on the ``+gemv`` path: the decode step's
logits do not move, the activation kernel is gone from the step, the prefill runs the MLP as
before, and everything is put back on exit. The real GEMV plugin runs under the interpreter."""

import torch
from torch import nn

from sparsebench.measure import fuse, glu_fold
from sparsebench.measure.decode_kernels import gemv_decode
from sparsebench.measure.fuse import fuse_projections_, unfuse_projections_
from sparsebench.registry import linear_kernels

from ...kernels.markers import needs_triton
from .test_decode_kernels import _decode_step, _tiny

CHECK = torch.tensor([[1, 5, 7, 2, 3, 9]])


class _CountingGlu:
    """The real plugin, with its products counted by kind."""

    def __init__(self, plugin):
        self.plugin, self.calls = plugin, []

    def __call__(self, x, weight, bias=None):
        self.calls.append(("linear", tuple(weight.shape)))
        return self.plugin(x, weight, bias)

    def normed(self, x, weight, bias, norm_weight, eps):
        self.calls.append(("normed", tuple(weight.shape)))
        return self.plugin.normed(x, weight, bias, norm_weight, eps)

    def swiglu(self, x, weight, bias=None, norm_weight=None, eps=1e-6):
        self.calls.append(("swiglu" + ("+norm" if norm_weight is not None else ""), tuple(weight.shape)))
        return self.plugin.swiglu(x, weight, bias, norm_weight, eps)

    def describe(self):
        return self.plugin.describe()


def _mlp_types(model):
    return [type(layer.mlp).__name__ for layer in model.model.layers]


def _folded_step(monkeypatch, mlp="GluLlamaMLP", **path):
    """The decode step of the fused tiny Llama on the +gemv path (``path``: gemv_decode's
    options; ``mlp``: the MLP class expected while it runs), against the plain model's:
    (plugin calls of the step, the path's labels, got, want)."""
    gemv = _CountingGlu(linear_kernels().get("dense_gemv"))
    monkeypatch.setattr(linear_kernels(), "get", lambda name: gemv)
    model = _tiny()
    with torch.no_grad():
        want = _decode_step(model)
        fuse_projections_(model)
        with gemv_decode(model, "cpu", check_ids=CHECK, **path) as labels:
            assert _mlp_types(model) == [mlp] * 2
            gemv.calls.clear()  # the check forwards are done
            got = _decode_step(model)  # the 4-token prefill runs the MLP as before
        assert _mlp_types(model) == ["LlamaMLP"] * 2
        unfuse_projections_(model)
    return gemv.calls, labels, got, want


@needs_triton
def test_the_activation_runs_inside_the_gate_up_gemv_and_is_undone(monkeypatch):
    calls, labels, got, want = _folded_step(monkeypatch, fold_glu=True)
    assert labels["decode_mlp"] == "SiLU(gate) x up -> gate_up GEMV x2"
    # the decode step only: per layer the normed q/k/v, o, the norm-folded SwiGLU, down; then the LM head
    assert calls == [("normed", (64, 32)), ("linear", (32, 32)), ("swiglu+norm", (96, 32)),
                     ("linear", (32, 48))] * 2 + [("linear", (32, 32))]
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@needs_triton
def test_without_the_norm_fold_the_plain_fused_lead_is_folded(monkeypatch):
    calls, labels, got, want = _folded_step(monkeypatch, fold_norms=False, fold_glu=True)
    assert labels["decode_mlp"] == "SiLU(gate) x up -> gate_up GEMV x2" and ("swiglu", (96, 32)) in calls
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@needs_triton
def test_the_suite_paths_leave_the_activation_a_kernel_of_its_own(monkeypatch):
    # opt-in only: on an H200 the SwiGLU GEMVs cost more than the activation kernels they remove
    calls, labels, got, want = _folded_step(monkeypatch, mlp="LlamaMLP")
    assert "decode_mlp" not in labels and not [c for c in calls if c[0].startswith("swiglu")]
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_is_silu_checks_what_the_activation_computes():
    from transformers.activations import ACT2FN

    assert glu_fold.is_silu(nn.SiLU()) and glu_fold.is_silu(ACT2FN["silu"])
    assert not glu_fold.is_silu(nn.GELU()) and not glu_fold.is_silu(ACT2FN["gelu"]) and not glu_fold.is_silu(None)


def test_what_is_not_folded_says_why_and_a_failed_check_undoes_it(monkeypatch):
    plugin = linear_kernels().get("dense_gemv")
    unfused = _tiny()
    with glu_fold.folded_glu(unfused, plugin, "cpu", None) as label:
        assert label == "not folded: no fused gate/up group under a SiLU"
    gelu = _tiny()
    for layer in gelu.model.layers:
        layer.mlp.act_fn = nn.GELU()
    fuse_projections_(gelu)
    with glu_fold.folded_glu(gelu, plugin, "cpu", None) as label:
        assert label == "not folded: no fused gate/up group under a SiLU"

    class NoGlu:
        pass

    model = _tiny()
    fuse_projections_(model)
    with glu_fold.folded_glu(model, NoGlu(), "cpu", None) as label:
        assert label == "not folded: the GEMV plugin has no swiglu product"
    outputs = iter([torch.ones(1, 1, 3), torch.zeros(1, 1, 3)])  # the check forward: logits moved
    monkeypatch.setattr(fuse, "check_logits", lambda m, ids: next(outputs))  # what checked_fold calls
    with glu_fold.folded_glu(model, plugin, "cpu", CHECK) as label:
        assert label == "not folded: the check forward moved the logits by 1.0e+00 (relative)"
        assert _mlp_types(model) == ["LlamaMLP"] * 2


@needs_triton
def test_the_folded_decode_step_compiles_without_a_graph_break():
    """The whole +gemv step (GEMV and attention plugins, folded norms, folded SwiGLU, one shared
    cache position) through ``torch.compile(fullgraph=True)``, as the GPU path compiles it."""
    from ...methods.test_compiled_decode import assert_compiled_steps_match_eager

    model = _tiny()
    fuse_projections_(model)
    with gemv_decode(model, "cpu", check_ids=CHECK, fold_glu=True) as labels:
        assert labels["decode_mlp"].startswith("SiLU(gate) x up")
        assert_compiled_steps_match_eager(model, torch.tensor([[1, 5, 7, 2]]))
