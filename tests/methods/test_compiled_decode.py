"""A model whose linears are methods' fast-kernel modules compiles as one graph.

The GPU decode path compiles the one-token step and captures it in a CUDA graph; a module
whose forward dynamo traces into (plan caches, tuning, capture checks) breaks that graph at
every linear, and on an H200 left wanda's step impossible to capture. Here the Triton paths
run under the interpreter on a tiny Llama, through ``torch.compile(fullgraph=True)``, which
raises on any graph break; the logits must match the eager step's.
"""

import pytest
import torch

from sparsebench.api import kv_cache_arg
from sparsebench.kernels.spmm import SparseLinear, pack
from sparsebench.methods.activation.modules import install
from sparsebench.methods.layerwise import block_linears, decoder_blocks

from ..kernels.markers import needs_triton


def _llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


def _teal_(model):
    for block in decoder_blocks(model):
        install(block, {name: 0.02 for name in block_linears(block)}, impl="triton")


def _teal_fused_(model):
    """TEAL with q/k/v and gate/up fused as the GPU latency path fuses them (one threshold per site)."""
    from sparsebench.measure.fuse import fuse_projections_

    for block in decoder_blocks(model):
        sites = {"self_attn.q_proj": 0.02, "self_attn.k_proj": 0.02, "self_attn.v_proj": 0.02,
                 "self_attn.o_proj": 0.03, "mlp.gate_proj": 0.01, "mlp.up_proj": 0.01, "mlp.down_proj": 0.03}
        install(block, sites, impl="triton")
    assert fuse_projections_(model).summary() == "qkv x2, gate_up x2"


def _sparse_linears_(model):
    for block in decoder_blocks(model):
        for name, lin in block_linears(block).items():
            w = lin.weight.detach().clone()
            w[torch.rand(w.shape, generator=torch.Generator().manual_seed(1)) < 0.5] = 0
            parent, _, child = name.rpartition(".")
            setattr(block.get_submodule(parent) if parent else block, child,
                    SparseLinear(pack(w, tile_n=16, tile_k=32), None))


def _steps(model, forward, ids, steps=2):
    from transformers import StaticCache

    cache = StaticCache(config=model.config, max_cache_len=ids.shape[1] + steps)
    out = []
    with torch.inference_mode():
        logits = model(input_ids=ids, **{kv_cache_arg(model): cache}, use_cache=True,
                       cache_position=torch.arange(ids.shape[1])).logits
        nxt = logits[:, -1:].argmax(-1)
        for t in range(steps):
            logits = forward(input_ids=nxt, **{kv_cache_arg(model): cache}, use_cache=True,
                             cache_position=torch.tensor([ids.shape[1] + t])).logits
            out.append(logits)
            nxt = logits[:, -1:].argmax(-1)
    return out


@needs_triton
@pytest.mark.parametrize("swap", [_teal_, _teal_fused_, _sparse_linears_], ids=["sparse_gemv", "sparse_gemv_fused", "spmm"])
def test_the_decode_step_compiles_without_a_graph_break(swap):
    model = _llama()
    swap(model)
    assert_compiled_steps_match_eager(model, torch.randint(0, 64, (1, 5), generator=torch.Generator().manual_seed(2)))


def assert_compiled_steps_match_eager(model, ids):
    """Decode steps through ``torch.compile(fullgraph=True)`` (raises on a graph break) give
    the eager steps' logits."""
    want = _steps(model, model.forward, ids)
    torch._dynamo.reset()
    try:
        step = torch.compile(model.forward, backend="aot_eager", fullgraph=True, dynamic=False)
        got = _steps(model, step, ids)
    finally:
        torch._dynamo.reset()
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)
