"""Choosing sparse kernels for pruned layers, and what the harness then measures."""

import pytest
import torch
from torch import nn

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
