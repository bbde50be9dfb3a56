"""Long-context perplexity: every scored token has its context, the chunked loss equals
perplexity's, refusals, and a tiny end-to-end run through the registered task."""

import pytest

from sparsebench import registry
from sparsebench.errors import UsageError
from sparsebench.resolve import build_config
from sparsebench.tasks.longppl import LongPerplexity, LongPerplexityConfig, long_windows
from sparsebench.tasks.perplexity import PerplexityConfig


def test_windows_score_only_tokens_with_enough_context():
    assert long_windows(20, 8, 4) == [(0, 8, 4), (4, 12, 4), (8, 16, 4), (12, 20, 4)]
    assert long_windows(18, 8, 4)[-1] == (12, 18, 4)  # a short last window scores what is new
    for n, w, s in [(1000, 128, 64), (1000, 128, 100), (999, 256, 32)]:
        spans = long_windows(n, w, s)
        scored = [pos for b, e, first in spans for pos in range(b + first, e)]
        assert scored == list(range(w - s, n))  # each token once, none without its context
        assert all(first >= w - s for _, _, first in spans)
    assert long_windows(16, 8, 8) == [(0, 8, 1), (8, 16, 1)]  # disjoint: as perplexity


@pytest.mark.parametrize("config, message", [
    ({"windows": []}, "at least one context length"),
    ({"windows": "4096,4096"}, "twice"),
    ({"windows": [8192], "max_tokens": 4096}, "at least the longest window"),
    ({"stride_fraction": 0}, "stride_fraction"),
    ({"stride_fraction": 1.5}, "stride_fraction"),
    ({"window": 4096}, "unknown option"),
])
def test_bad_configs_are_refused(config, message):
    with pytest.raises(UsageError, match=message):
        build_config("task", "longppl", LongPerplexity, config)


def test_end_to_end_on_a_tiny_model(make_model, ctx):
    cfg = LongPerplexityConfig(windows=(256, 512), max_tokens=2048, batch_size=2)
    task = registry.tasks().get("longppl")(cfg)
    with pytest.raises(ValueError, match="512 tokens.*at most 256 positions"):
        task.evaluate(make_model(256), ctx)
    m = task.evaluate(make_model(512), ctx)
    assert set(m) == {f"longppl_{k}W{w}" for k in ("", "nll_", "tokens_", "windows_") for w in (256, 512)}
    assert m["longppl_tokens_W512"].value == 2048 - 256 and m["longppl_windows_W512"].value == 7
    assert m["longppl_tokens_W256"].value == 2048 - 128
    assert m["longppl_W256"].direction == "lower" and m["longppl_W256"].stderr > 0
    assert [d for d, _ in ctx.seen] == ["longppl 256", "longppl 512"]


def test_disjoint_windows_give_perplexitys_number(make_model, ctx):
    """stride_fraction=1 is perplexity's protocol; the chunked loss computed from the kept
    logits only must give its number."""
    model = make_model(512)
    ours = LongPerplexity(LongPerplexityConfig(windows=(256,), stride_fraction=1.0, max_tokens=1024)).evaluate(model, ctx)
    ref = registry.tasks().get("perplexity")(PerplexityConfig(window=256, max_tokens=1024)).evaluate(model, ctx)
    assert ours["longppl_W256"].value == pytest.approx(ref["perplexity"].value, rel=1e-6)
    assert ours["longppl_tokens_W256"].value == ref["perplexity_tokens"].value


def test_perplexity_after_the_refactor_is_the_plain_mean_nll(make_model, ctx):
    """perplexity now runs through the shared helpers; over disjoint windows its number is
    still exp(mean token NLL) computed the obvious way."""
    import math

    import torch
    import torch.nn.functional as F

    model = make_model(512)
    got = registry.tasks().get("perplexity")(PerplexityConfig(window=256, max_tokens=1024)).evaluate(model, ctx)
    ids = torch.tensor(ctx.tokenizer(ctx.text[:8192], add_special_tokens=False)["input_ids"][:1024])
    with torch.inference_mode():
        x = ids.view(4, 256)
        logits = model(input_ids=x).logits
        nll = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
    assert got["perplexity_tokens"].value == 4 * 255
    assert got["perplexity"].value == pytest.approx(math.exp(float(nll)), rel=1e-5)
