"""The KV-cache family on a tiny random Llama: the compressed cache reproduces the plain
model when it keeps everything, equals attention over the explicitly kept entries when it
evicts, generates through the long-context tasks' loop, reports what it held, and bad
budgets are refused (also from the command line: exit 2, nothing written)."""

import pytest
import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

from sparsebench import registry
from sparsebench.api import ApplyContext, kv_cache_arg
from sparsebench.cli import main
from sparsebench.methods.kv_cache.cache import CompressedCache
from sparsebench.methods.kv_cache.install import STATE
from sparsebench.tasks.longctx import greedy_generate

KEEP_ALL = [("streaming-kv", {"budget": 1000}), ("h2o", {"budget": 1000}), ("snapkv", {"budget": 1.0}),
            ("kivi", {"residual": 1000}), ("mustafar", {"density": 1.0})]
COMPRESSING = [("streaming-kv", {"budget": 0.25}), ("h2o", {"budget": 0.25, "window": 8}),
               ("snapkv", {"budget": 0.25, "window": 8}), ("kivi", {"bits": 2, "group_size": 8, "residual": 8}),
               ("kivi", {"bits": 4, "group_size": 8, "residual": 8}), ("mustafar", {"density": 0.5, "window": 8})]


def _tiny(seed=0, positions=256):
    """Weights drawn wider than the default (std 0.3, not 0.02) so attention is peaked and
    the KV heads disagree about which tokens matter."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=72, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=positions,
                      initializer_range=0.3)
    return LlamaForCausalLM(cfg).eval()


def _method(name, **cfg):
    cls = registry.methods().get(name)
    return cls(cls.Config(**cfg))


def _applied(name, **cfg):
    method, model = _method(name, **cfg), _tiny()
    method.check_model(model)
    method.apply_(model, ApplyContext())
    return method, model


def _ids(n=40, batch=2, seed=1):
    return torch.randint(0, 64, (batch, n), generator=torch.Generator().manual_seed(seed))


def _step(model, ids, cache, **kw):
    """One forward with the cache under the name this transformers version uses."""
    arg = kv_cache_arg(model)
    with torch.inference_mode():
        out = model(input_ids=ids, use_cache=True, **({arg: cache} if cache is not None else {}), **kw)
    return out.logits, getattr(out, arg)


def _greedy_logits(model, ids, steps, cache=None):
    logits, cache = _step(model, ids, cache)
    seen = [logits]
    for _ in range(steps):
        logits, cache = _step(model, logits[:, -1:].argmax(-1), cache)
        seen.append(logits)
    return seen, cache


@pytest.mark.parametrize("name,cfg", KEEP_ALL)
def test_keeping_everything_reproduces_the_plain_model(name, cfg):
    _, model = _applied(name, **cfg)
    ids = _ids()
    ours, cache = _greedy_logits(model, ids, 5)
    want, ref = _greedy_logits(_tiny(), ids, 5, DynamicCache())
    assert isinstance(cache, CompressedCache) and not isinstance(ref, CompressedCache)
    for a, b in zip(ours, want, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert cache.get_seq_length() == 45


@pytest.mark.parametrize("name", ["streaming-kv", "h2o"])
def test_budget_one_keeps_the_prompt_so_decode_starts_evicting_after_its_first_step(name):
    _, model = _applied(name, budget=1.0, **({"window": 8} if name == "h2o" else {}))
    ids = _ids()
    ours, cache = _greedy_logits(model, ids, 1)
    want, _ = _greedy_logits(_tiny(), ids, 1, DynamicCache())
    for a, b in zip(ours, want, strict=True):  # each step attends all held + its own token
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert cache.layer(0).tokens_held() == 40 and cache.get_seq_length() == 41


def _gather(x, idx):
    return x.gather(2, idx.unsqueeze(-1).expand(-1, -1, -1, x.shape[-1]))


class Reference:
    """Decode steps of the plain model over K/V chosen by hand: every position's K/V is
    banked; a step builds a DynamicCache from the banked entries at the given positions."""

    def __init__(self, ids):
        self.model = _tiny()
        _, cache = _step(self.model, ids, DynamicCache())
        self.bank = [(la.keys, la.values) for la in cache.layers]
        self.seen = ids.shape[1]

    def step(self, token, positions):
        cache = DynamicCache()
        for i, (k, v) in enumerate(self.bank):
            cache.update(_gather(k, positions[i]), _gather(v, positions[i]), i)
        logits, cache = _step(self.model, token, cache, position_ids=torch.tensor([[self.seen]]))
        self.bank = [(torch.cat([k, la.keys[..., -1:, :]], 2), torch.cat([v, la.values[..., -1:, :]], 2))
                     for (k, v), la in zip(self.bank, cache.layers, strict=True)]
        self.seen += 1
        return logits


def test_streaming_decode_equals_attention_over_the_hand_picked_tokens():
    _, model = _applied("streaming-kv", budget=8, sinks=2)
    ids = _ids(12)
    logits, cache = _step(model, ids, None)
    ref = Reference(ids)
    for _ in range(4):
        seen = cache.get_seq_length()
        keep = [0, 1] + list(range(seen - 6, seen))  # by hand: 2 sinks + the 6 most recent
        positions = torch.tensor(keep).view(1, 1, -1).expand(2, 2, -1)
        assert all(torch.equal(la.positions, positions) for la in cache.layers)
        token = logits[:, -1:].argmax(-1)
        logits, cache = _step(model, token, cache)
        torch.testing.assert_close(logits, ref.step(token, [positions] * 2), atol=1e-5, rtol=1e-5)
        assert cache.layer(0).tokens_held() == 8


@pytest.mark.parametrize("name,cfg,held", [("h2o", {"budget": 10, "window": 3}, lambda s: 10),
                                           ("snapkv", {"budget": 10, "window": 4, "kernel_size": 3}, lambda s: 10 + s - 36)])
def test_per_head_eviction_decodes_as_attention_over_the_kept_entries(name, cfg, held):
    _, model = _applied(name, **cfg)
    ids = _ids(36)
    logits, cache = _step(model, ids, None)
    ref = Reference(ids)
    per_head = False
    for _ in range(4):
        positions = [la.positions.clone() for la in cache.layers]
        per_head |= any(not torch.equal(p[:, 0], p[:, 1]) for p in positions)
        token = logits[:, -1:].argmax(-1)
        logits, cache = _step(model, token, cache)
        torch.testing.assert_close(logits, ref.step(token, positions), atol=1e-5, rtol=1e-5)
        assert cache.layer(1).tokens_held() == held(cache.get_seq_length())
    assert per_head, "the KV heads should keep different tokens here"


@pytest.mark.parametrize("name,cfg", COMPRESSING)
def test_greedy_generation_with_every_method_holds_the_budget(name, cfg):
    method, model = _applied(name, **cfg)
    ids = _ids(64)
    _, cache = _step(model, ids, None)  # prefill alone
    after_prefill = {"streaming-kv": 16, "h2o": 16, "snapkv": 16}.get(name, 64)
    assert [la.tokens_held() for la in cache.layers] == [after_prefill] * 2
    for _ in range(2):
        out = greedy_generate(model, ids.tolist(), 6, "cpu")
        assert len(out) == 2 and all(len(o) == 6 for o in out)
    rep = method.report(model)
    # greedy_generate feeds 5 of its 6 tokens back: 69 tokens seen
    after_decode = {"streaming-kv": 16, "h2o": 16, "snapkv": 16 + 5}.get(name, 69)
    assert rep["kv_tokens_seen"].value == 69
    assert rep["kv_tokens_held"].value == after_decode
    assert rep["kv_bytes_full"].value == 2 * 2 * 2 * 2 * 8 * 69 * 4  # K+V x layers x batch x heads x dim
    assert 0 < rep["kv_fraction_held"].value < 0.6
    assert rep["kv_fraction_held"].value == pytest.approx(rep["kv_bytes_held"].value / rep["kv_bytes_full"].value)
    assert rep["kv_bytes_held_mean"].n == 3  # the lone prefill and two generations
    assert rep["kv_bytes_held"].unit == "bytes" and rep["kv_bytes_held"].direction == "lower"


def test_use_cache_off_is_the_plain_model_and_counts_nothing():
    method, model = _applied("h2o", budget=16, window=4)
    ids = _ids()
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # padding is fine without a cache: the plain SDPA path with the mask
    with torch.inference_mode():
        got = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        want = _tiny()(input_ids=ids, attention_mask=mask, use_cache=False).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert method.report(model) == {}


def test_padded_batches_are_refused_with_a_compressed_cache():
    _, model = _applied("streaming-kv", budget=16)
    ids = _ids()
    mask = torch.ones_like(ids)
    mask[1, :2] = 0
    with pytest.raises(ValueError, match="need unpadded batches"):
        _step(model, ids, None, attention_mask=mask)
    logits, _ = _step(model, ids, None, attention_mask=torch.ones_like(ids))  # all ones: fine
    assert logits.shape == (2, 40, 64)


def test_a_fractional_budget_too_small_for_the_prompt_fails_at_prefill():
    _, model = _applied("snapkv", budget=0.1, window=8)
    with pytest.raises(ValueError, match=r"budget of 4 tokens \(budget 0.1 of a 40-token prompt\)"):
        _step(model, _ids(), None)


def test_install_is_refused_twice_and_removable():
    method, model = _applied("kivi")
    with pytest.raises(ValueError, match="already installed"):
        _method("h2o").apply_(model, ApplyContext())
    getattr(model, STATE).remove()
    assert model.config._attn_implementation == "sdpa"
    _, cache = _step(model, _ids(), None)
    assert isinstance(cache, DynamicCache)


def test_kivi_refuses_a_group_that_does_not_divide_head_dim():
    with pytest.raises(ValueError, match="must divide head_dim=8"):
        _method("kivi", group_size=3).check_model(_tiny())


@pytest.fixture
def tiny_dir(tmp_path):
    out = tmp_path / "tiny"
    _tiny().save_pretrained(out)
    return out


@pytest.mark.parametrize("args,needle", [
    (["--method", "h2o", "--budget", "0"], "budget 0 is not allowed: an integer budget is a token count >= 1"),
    (["--method", "snapkv", "--budget", "1.5"], "a float budget is a fraction of the prompt length in (0, 1]"),
    (["--method", "h2o", "--budget", "16", "--window", "32"], "a budget of 16 tokens cannot hold window=32"),
    (["--method", "streaming-kv", "--budget", "-2"], "budget -2 is not allowed"),
    (["--method", "kivi", "--bits", "3"], "bits"),
    (["--method", "mustafar", "--density", "0"], "density must be in (0, 1]"),
])
def test_bad_budget_from_the_command_line_exits_2_and_writes_nothing(tmp_path, tiny_dir, capsys, args, needle):
    results = tmp_path / "results"
    code = main(["run", *args, "--model", str(tiny_dir), "--task", "passkey", "--no-latency", "--no-mlflow",
                 "--no-progress", "--results", str(results)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert needle in err and err.count("\n") == 1
    assert not results.exists() or not list(results.rglob("*.json"))
