"""Choosing sparse kernels for pruned layers, and what the harness then measures."""

import pytest
import torch
from torch import nn

from sparsebench.kernels.dispatch import interpreting
from sparsebench.measure.ceilings import decode_bytes_per_token
from sparsebench.measure.sparsity import weight_sparsity
from sparsebench.methods.pruning.fast import DENSE, use_sparse_kernels_


def _tiny():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1)
    return LlamaForCausalLM(cfg)


def test_ref_and_cpu_auto_keep_dense_layers():
    model = _tiny()
    for kernel in ("ref", "auto"):
        kernels, notes = use_sparse_kernels_(model, "2:4", kernel)
        assert kernels == {"linear": DENSE} and notes == []
    assert isinstance(model.model.layers[0].mlp.down_proj, nn.Linear)


def test_fast_on_cpu_is_a_clear_error():
    with pytest.raises(ValueError, match="CUDA"):
        use_sparse_kernels_(_tiny(), "unstructured", "fast")


class Packed(nn.Module):
    """Stands in for a kernel module: buffers only, zeros reported by the module."""

    def __init__(self, lin):
        super().__init__()
        w = lin.weight.detach()
        self.register_buffer("values", w[w != 0].clone())
        self._counts = (int((w == 0).sum()), w.numel())

    def weight_zero_count(self):
        return self._counts


def test_harness_counts_packed_layers_for_sparsity_and_decode_bytes():
    model = _tiny()
    mlp = model.model.layers[0].mlp
    with torch.no_grad():
        mlp.down_proj.weight[:, ::2] = 0
    before = weight_sparsity(model)
    bytes_before = decode_bytes_per_token(model, 1, 4)
    packed = Packed(mlp.down_proj)
    mlp.down_proj = packed
    assert weight_sparsity(model) == before
    dense_bytes = 32 * 64 * 4
    assert decode_bytes_per_token(model, 1, 4) == bytes_before - dense_bytes + packed.values.numel() * 4


def test_layers_a_kernel_cannot_hold_stay_dense_with_a_reason(monkeypatch):
    from sparsebench.methods.pruning import fast

    monkeypatch.setattr(fast, "wants_fast", lambda kernel, model: True)
    model = _tiny()
    kernels, notes = use_sparse_kernels_(model, "2:4", "fast")
    assert kernels == {"linear": f"{DENSE} x14/14"}
    assert "kept dense" in notes[0] and "CUDA" in notes[0]


@pytest.mark.skipif(not interpreting(), reason="runs the Triton SpMM on CPU under TRITON_INTERPRET=1")
def test_swapped_model_matches_the_masked_dense_model(monkeypatch):
    from sparsebench.kernels.spmm import SparseLinear, pack
    from sparsebench.kernels.tolerances import assert_close
    from sparsebench.methods.pruning import fast
    from sparsebench.methods.pruning.masks import unstructured_mask

    monkeypatch.setattr(fast, "wants_fast", lambda kernel, model: True)
    monkeypatch.setattr(SparseLinear, "from_linear", classmethod(
        lambda cls, lin, autotune=True: cls(pack(lin.weight.detach()), None, autotune=False)))
    torch.manual_seed(0)
    model = _tiny().eval()
    with torch.no_grad():
        for lin in [m for m in model.model.layers.modules() if isinstance(m, nn.Linear)]:
            lin.weight.mul_(unstructured_mask(lin.weight.abs(), 0.5))
    ids = torch.randint(0, 100, (1, 20))
    with torch.no_grad():
        want = model(ids[:, :3]).logits, model(ids).logits  # M=3: SpMM kernel; M=20: unpack path
        kernels, _ = use_sparse_kernels_(model, "unstructured", "fast")
        got = model(ids[:, :3]).logits, model(ids).logits
    assert "SparseLinear" in kernels["linear"] and "x14/14" in kernels["linear"]
    assert isinstance(model.model.layers[1].self_attn.q_proj, SparseLinear)
    for g, w in zip(got, want, strict=True):
        assert_close(g, w)
    assert weight_sparsity(model)[0] > 0.45
