"""Wanda and magnitude on a hand-checkable layer, and the block-by-block machinery."""

import pytest
import torch
from torch import nn

from sparsebench.api import ApplyContext
from sparsebench.methods.layerwise import InputStats, capture_block_inputs, process_layerwise
from sparsebench.methods.pruning.config import PruningConfig
from sparsebench.methods.pruning.magnitude import Magnitude
from sparsebench.methods.pruning.wanda import Wanda


def test_wanda_score_is_weight_times_input_norm():
    w = torch.tensor([[1.0, 2.0],
                      [3.0, -4.0]])
    # inputs over 2 tokens: column 0 = (2, 0) -> norm 2 ; column 1 = (0.3, 0.4) -> norm 0.5
    x = torch.tensor([[2.0, 0.3], [0.0, 0.4]])
    stats = InputStats(sq_sum=x.pow(2).sum(0), tokens=2)
    assert torch.allclose(stats.l2, torch.tensor([2.0, 0.5]))
    score = Wanda(PruningConfig()).score(w, stats)
    assert torch.allclose(score, torch.tensor([[2.0, 1.0], [6.0, 2.0]]))


def _tiny_llama(seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


def _batches():
    g = torch.Generator().manual_seed(1)
    return [torch.randint(0, 64, (2, 12), generator=g), torch.randint(0, 64, (2, 12), generator=g)]


def test_wanda_and_magnitude_choose_differently_on_a_hand_checkable_layer():
    """Magnitude keeps the large weights; Wanda keeps those multiplied by large inputs."""
    w = torch.tensor([[1.0, 2.0], [3.0, -4.0]])
    stats = InputStats(sq_sum=torch.tensor([4.0, 0.25]), tokens=2)
    from sparsebench.methods.pruning.masks import mask_from_score

    wanda_mask = mask_from_score(Wanda(PruningConfig()).score(w, stats), 0.5, "unstructured")
    mag_mask = mask_from_score(Magnitude(PruningConfig()).score(w, None), 0.5, "unstructured")
    assert (w * wanda_mask).tolist() == [[1.0, 0.0], [3.0, 0.0]]
    assert (w * mag_mask).tolist() == [[0.0, 2.0], [0.0, -4.0]]


def test_block_stats_come_from_the_pruned_previous_block():
    model = _tiny_llama()
    batches = _batches()
    seen: dict[int, dict[str, InputStats]] = {}

    def prune_block(block):
        seen[block.index] = block.stats
        for lin in block.linears.values():
            lin.weight.data[:, ::2] = 0  # prune block i (deterministic, easy to recompute)

    reference = _tiny_llama()
    process_layerwise(model, ApplyContext(calibration=batches), prune_block, needs_activations=True)

    # recompute by hand: inputs of block 1 are outputs of the *pruned* block 0
    hidden, kws = capture_block_inputs(reference, batches, "cpu")
    block0 = reference.model.layers[0]
    for lin in (m for m in block0.modules() if isinstance(m, nn.Linear)):
        lin.weight.data[:, ::2] = 0
    with torch.inference_mode():
        h1 = [block0(h, **kw) for h, kw in zip(hidden, kws, strict=True)]
        h1 = [h[0] if isinstance(h, tuple) else h for h in h1]
        norm_in = reference.model.layers[1].input_layernorm
        x = torch.cat([norm_in(h).reshape(-1, 16) for h in h1])
    expected = x.pow(2).sum(0)
    got = seen[1]["self_attn.q_proj"].sq_sum
    assert seen[1]["self_attn.q_proj"].tokens == 2 * 2 * 12
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-5)
    # and block 0 saw the embeddings, normalized
    with torch.inference_mode():
        x0 = torch.cat([reference.model.layers[0].input_layernorm(h).reshape(-1, 16) for h in hidden])
    assert torch.allclose(seen[0]["self_attn.k_proj"].sq_sum, x0.pow(2).sum(0), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("pattern,expected", [("unstructured", 0.5), ("2:4", 0.5), ("1:4", 0.75)])
def test_wanda_prunes_every_decoder_linear(pattern, expected):
    from sparsebench.measure.sparsity import weight_sparsity

    model = _tiny_llama()
    cfg = PruningConfig.from_dict({"pattern": pattern}) if pattern != "unstructured" else PruningConfig(sparsity=0.5)
    result = Wanda(cfg).apply_(model, ApplyContext(calibration=_batches()))
    sp, _, _ = weight_sparsity(model)
    assert sp == pytest.approx(expected)
    assert result.metrics["pruned_linear_layers"].value == 2 * 7
    assert model.lm_head.weight.ne(0).all()  # the head is not pruned


def test_nm_pattern_refused_on_incompatible_width_before_any_change():
    model = _tiny_llama()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="multiple of 3"):
        Magnitude(PruningConfig.from_dict({"pattern": "2:3"})).apply_(model, ApplyContext())
    # 16 and 32 are not multiples of 3: nothing was modified
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
