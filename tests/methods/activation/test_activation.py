"""The activation-sparsity family on hand-checkable inputs and a tiny random Llama."""

import pytest
import torch
from torch import nn

from sparsebench import registry
from sparsebench.api import ApplyContext
from sparsebench.kernels.dispatch import interpreting, triton_available
from sparsebench.methods.activation.calibrate import (
    Site,
    greedy_allocation,
    group_sites,
    quantile_threshold,
    scaled_thresholds,
)
from sparsebench.methods.activation.modules import (
    SparseInputLinear,
    ThresholdedActivation,
    activation_report,
    set_counting,
)

METHODS = ["teal", "cats", "wina", "chess"]


def _tiny_llama(seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=72, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


def _ids(n, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 64, (2, 24), generator=g) for _ in range(n)]


def _apply(name, sparsity, **cfg):
    cls = registry.methods().get(name)
    method = cls(cls.Config(sparsity=sparsity, **cfg))
    model = _tiny_llama()
    result = method.apply_(model, ApplyContext(calibration=_ids(3, 1)))
    return method, model, result


def test_quantile_threshold_drops_the_asked_fraction():
    v = torch.arange(1, 101, dtype=torch.float32)
    t = quantile_threshold(v, 0.3)
    assert (v <= t).float().mean() == pytest.approx(0.3)
    assert quantile_threshold(v, 0.0) == 0.0


def test_wina_thresholds_rank_inputs_by_x_times_column_norm():
    x = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    w = torch.tensor([[1.0, 0.1, 3.0, 0.0],
                      [0.0, 0.1, 4.0, 2.0]])  # column norms 1, 0.141, 5, 2
    t = scaled_thresholds(x.abs(), w.norm(dim=0), 0.5)
    keep = (x.abs() > t).squeeze(0)
    assert keep.tolist() == [False, False, True, True]  # the two smallest |x| * ||W_j||
    assert torch.isinf(scaled_thresholds(x.abs(), torch.tensor([1.0, 0.0, 2.0, 3.0]), 0.0)[1])


def test_greedy_moves_sparsity_to_the_site_where_it_costs_least():
    g = torch.Generator().manual_seed(0)
    cheap = torch.randn(256, 16, generator=g)
    cheap[:, :12] *= 1e-3  # 75% of the inputs are negligible here
    costly = torch.randn(256, 16, generator=g)
    w = torch.randn(8, 16, generator=g)
    sites = [Site(["a"], cheap, [w]), Site(["b"], costly, [w])]
    levels = greedy_allocation(sites, 0.35)
    assert sum(levels) / 2 == pytest.approx(0.35)
    assert levels[0] >= 0.6 > levels[1]


def test_sites_group_linears_that_read_the_same_input():
    x, y = torch.randn(4, 3), torch.randn(4, 3)
    w = torch.randn(2, 3)
    sites = group_sites(["q", "k", "o"], {"q": x, "k": x.clone(), "o": y}, {"q": w, "k": w, "o": w})
    assert [s.names for s in sites] == [["q", "k"], ["o"]]


def test_sparse_input_linear_is_the_linear_on_kept_inputs():
    lin = nn.Linear(6, 3, bias=True)
    x = torch.tensor([[0.2, -1.5, 0.05, 2.0, -0.3, 0.9]])
    mod = SparseInputLinear(lin, 0.25)
    keep = x.abs() > 0.25
    assert torch.allclose(mod(x), lin(x * keep), atol=1e-6)
    per_input = torch.tensor([0.0, 2.0, 0.0, 0.0, 0.0, 5.0])
    mod = SparseInputLinear(nn.Linear(6, 3), per_input)
    assert torch.allclose(mod(x), mod.linear(x * (x.abs() > per_input)), atol=1e-6)
    act = ThresholdedActivation(nn.SiLU(), 0.5, torch.device("cpu"))
    a = nn.functional.silu(x)
    assert torch.equal(act(x), torch.where(a.abs() > 0.5, a, 0.0))


@pytest.mark.parametrize("name", METHODS)
def test_zero_sparsity_leaves_the_model_unchanged(name):
    _, model, _ = _apply(name, 0.0)
    dense = _tiny_llama()
    ids = _ids(1, 7)[0]
    with torch.inference_mode():
        torch.testing.assert_close(model(input_ids=ids).logits, dense(input_ids=ids).logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,cfg", [("teal", {"allocation": "uniform"}), ("teal", {"allocation": "greedy"}),
                                      ("cats", {}), ("wina", {}), ("chess", {}), ("chess", {"attention": "all"})])
def test_calibrated_sparsity_is_near_the_target_and_reported_from_evaluation(name, cfg):
    method, model, result = _apply(name, 0.5, **cfg)
    assert result.metrics["activation_sparsity_target"].value == 0.5
    calib = result.metrics["activation_sparsity_calibration_mean"].value
    assert 0.35 < calib < 0.65
    assert result.kernels["sparse_linear"].startswith("sparse_gemv ref")
    ids = _ids(2, 9)
    with torch.inference_mode():
        for batch in ids:
            model(input_ids=batch)
    rep = method.report(model)
    layers = {k: v for k, v in rep.items() if k.startswith("activation_sparsity.layers.")}
    expected = {"teal": 14, "wina": 14, "cats": 2, "chess": 4 if cfg.get("attention") != "all" else 10}[name]
    assert len(layers) == expected
    assert all(m.n > 0 and 0.0 <= m.value <= 1.0 for m in layers.values())
    mean = sum(m.value for m in layers.values()) / len(layers)
    assert rep["activation_sparsity_mean"].value == pytest.approx(mean)
    assert 0.3 < mean < 0.7
    assert 0 < rep["activation_weight_reads_skipped"].value < 0.7
    # counting stopped after the report: later forwards (latency) are not counted, nor slowed
    seen = {n: m.seen for n, m in model.named_modules() if isinstance(m, SparseInputLinear)}
    with torch.inference_mode():
        model(input_ids=ids[0])
    assert seen == {n: m.seen for n, m in model.named_modules() if isinstance(m, SparseInputLinear)}


def test_report_counts_exactly_the_zeroed_inputs():
    model = nn.Module()
    model.model = nn.Module()
    block = nn.Module()
    block.proj = SparseInputLinear(nn.Linear(4, 2, bias=False), 0.5)
    block.dense = nn.Linear(4, 6, bias=False)
    model.model.layers = nn.ModuleList([block])
    set_counting(model, True)
    block.proj(torch.tensor([[0.1, 0.6, -0.7, 0.2], [1.0, 1.0, 1.0, 0.0]]))
    rep = activation_report(model)
    assert rep["activation_sparsity.layers.0.proj"].value == pytest.approx(3 / 8)
    assert rep["activation_sparsity.layers.0.proj"].n == 8
    # 8 of the 32 decoder weights belong to proj, read at 3/8 sparsity
    assert rep["activation_weight_reads_skipped"].value == pytest.approx(3 / 8 * 8 / 32)
    assert not block.proj.counting


def test_cats_needs_a_gated_mlp():
    from transformers import GPT2Config, GPT2LMHeadModel

    cls = registry.methods().get("cats")
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64))
    with pytest.raises(TypeError, match="model.layers|gated MLP"):
        cls(cls.Config()).apply_(model, ApplyContext(calibration=_ids(1, 1)))


def _fast_here(device: str) -> str:
    """What kernel 'fast' runs: the CUDA kernel on a GPU with NVRTC (unless the environment
    asks for Triton), Triton otherwise (the interpreter on CPU)."""
    from sparsebench.kernels import cuda_rtc
    from sparsebench.kernels.sparse_gemv import fast_impl

    if device == "cuda" and fast_impl() == "cuda" and cuda_rtc.available()[0]:
        return "cuda"
    return "triton"


@pytest.mark.skipif(not (triton_available() and interpreting()) and not torch.cuda.is_available(),
                    reason="needs triton on a GPU, or TRITON_INTERPRET=1 on CPU")
def test_fast_path_generates_what_the_reference_generates():
    """kernel=fast: weights stored transposed, Triton GEMV for decode rows, masked GEMM for the
    prompt; greedy generation and logits match the reference path."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    prompt = _ids(1, 5)[0][:1, :10].to(device)
    outs = {}
    for kernel in ("ref", "fast"):
        cls = registry.methods().get("teal")
        model = _tiny_llama().to(device)
        cls(cls.Config(sparsity=0.5)).apply_(model, ApplyContext(device=device, kernel=kernel,
                                                                 calibration=_ids(2, 1)))
        impls = {m.impl for m in model.modules() if isinstance(m, SparseInputLinear)}
        assert impls == ({"ref"} if kernel == "ref" else {_fast_here(device)})
        with torch.inference_mode():
            out = model.generate(prompt, max_new_tokens=4, do_sample=False, output_logits=True,
                                 return_dict_in_generate=True)
        outs[kernel] = out
    assert torch.equal(outs["ref"].sequences, outs["fast"].sequences)
    torch.testing.assert_close(torch.stack(outs["fast"].logits), torch.stack(outs["ref"].logits),
                               rtol=1e-4, atol=1e-4)
