"""A tiny random Llama, random token batches, and a masked dense reference."""

import torch


def tiny_llama(layers=4, max_positions=128, seed=0, dtype=torch.float32):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=72, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_positions)
    return LlamaForCausalLM(cfg).to(dtype).eval()


def ids(batch, length, seed):
    return torch.randint(0, 64, (batch, length), generator=torch.Generator().manual_seed(seed))


def reference_attention(q, k, v, allowed, scale):
    """softmax over the explicit mask in float32 (``allowed`` broadcastable to [b, hq, nq, n])."""
    g = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(g, dim=1).float()
    v = v.repeat_interleave(g, dim=1).float()
    s = (q.float() @ k.transpose(-1, -2)) * scale
    s = s.masked_fill(~allowed, float("-inf"))
    return (torch.softmax(s, -1) @ v).to(q.dtype)

