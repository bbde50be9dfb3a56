"""The decode step's RoPE + cache write against its reference: a case worked out by hand,
odd head counts and batches, strided rows (views into a fused projection's output), every
dtype, the PDL path, the registered op eagerly and under torch.compile, and the errors.

Caches start NaN-filled except where a test checks that nothing else was written. On CPU
this runs under the Triton interpreter (``TRITON_INTERPRET=1``, set by ``nox -s tests``).
"""

import pytest
import torch

from sparsebench.kernels.rope_cache import rope_cache, rope_cache_ref, rope_cache_write
from sparsebench.kernels.tolerances import assert_close

from .markers import DEVICE, force_pdl, needs_triton

DTYPES = [torch.bfloat16, torch.float16, torch.float32]


def _operands(B, hq, hkv, L, D, dtype, pos, seed=0, strided=False):
    g = torch.Generator().manual_seed(seed)
    width = (hq + 2 * hkv) * D
    fused = torch.randn(B, width + (3 if strided else 0), generator=g).to(DEVICE, dtype)
    q, k, v = fused[:, :hq * D], fused[:, hq * D:(hq + hkv) * D], fused[:, (hq + hkv) * D:width]
    angle = torch.rand(B, D // 2, generator=g) * 6.3
    emb = torch.cat((angle, angle), dim=-1)
    cos, sin = emb.cos().to(DEVICE, dtype), emb.sin().to(DEVICE, dtype)
    caches = [torch.randn(B, hkv, L, D, generator=g).to(DEVICE, dtype) for _ in range(2)]
    return q, k, v, cos, sin, caches, torch.tensor([pos], device=DEVICE)


def test_hand_checked_case():
    """cos 0, sin 1 turns [a, b, c, d] into [-c, -d, a, b]; v is copied; only slot 1 changes."""
    q = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]])  # two q heads of 4
    k = torch.tensor([[1.0, -1.0, 2.0, -2.0]])
    v = torch.tensor([[9.0, 8.0, 7.0, 6.0]])
    cos, sin = torch.zeros(1, 4), torch.ones(1, 4)
    kc, vc = torch.zeros(1, 1, 3, 4), torch.zeros(1, 1, 3, 4)
    out = rope_cache_ref(q, k, v, cos, sin, kc, vc, torch.tensor([1]))
    assert out.shape == (1, 2, 1, 4)
    assert out[0, :, 0].tolist() == [[-3.0, -4.0, 1.0, 2.0], [-7.0, -8.0, 5.0, 6.0]]
    assert kc[0, 0].tolist() == [[0.0] * 4, [-2.0, 2.0, 1.0, -1.0], [0.0] * 4]
    assert vc[0, 0].tolist() == [[0.0] * 4, [9.0, 8.0, 7.0, 6.0], [0.0] * 4]


def test_reference_matches_transformers_rotary():
    """The reference is Llama's ``apply_rotary_pos_emb`` (in fp32) plus the cache's index_copy_."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    q, k, v, cos, sin, (kc, vc), pos = _operands(2, 4, 2, 5, 8, torch.float32, 3)
    kc0, vc0 = kc.clone(), vc.clone()
    want_q, want_k = apply_rotary_pos_emb(q.view(2, 1, 4, 8).transpose(1, 2), k.view(2, 1, 2, 8).transpose(1, 2),
                                          cos.view(2, 1, 8), sin.view(2, 1, 8))
    got = rope_cache_ref(q, k, v, cos, sin, kc, vc, pos)
    torch.testing.assert_close(got, want_q)
    kc0.index_copy_(2, pos, want_k)
    vc0.index_copy_(2, pos, v.view(2, 1, 2, 8).transpose(1, 2))
    torch.testing.assert_close(kc, kc0)
    torch.testing.assert_close(vc, vc0)


@needs_triton
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,hq,hkv,L,D,pos,strided", [(1, 32, 8, 37, 16, 36, False), (3, 5, 1, 7, 32, 0, True),
                                                       (2, 6, 3, 11, 8, 5, True)])
def test_triton_matches_ref(dtype, B, hq, hkv, L, D, pos, strided):
    q, k, v, cos, sin, (kc, vc), p = _operands(B, hq, hkv, L, D, dtype, pos, strided=strided)
    kc_ref, vc_ref = kc.clone(), vc.clone()
    want = rope_cache_ref(q, k, v, cos, sin, kc_ref, vc_ref, p)
    got = rope_cache_write(q, k, v, cos, sin, kc, vc, p, impl="triton")
    assert got.shape == (B, hq, 1, D) and got.is_contiguous()
    assert_close(got, want)
    assert_close(kc, kc_ref)
    torch.testing.assert_close(vc, vc_ref, rtol=0, atol=0)  # v is copied, bit for bit; no other slot moves


@needs_triton
def test_pdl_path_matches_ref(monkeypatch):
    from sparsebench.kernels.rope_cache import triton as rope_triton

    force_pdl(monkeypatch, rope_triton)
    q, k, v, cos, sin, (kc, vc), p = _operands(2, 4, 2, 9, 16, torch.bfloat16, 4)
    kc_ref, vc_ref = kc.clone(), vc.clone()
    want = rope_cache_ref(q, k, v, cos, sin, kc_ref, vc_ref, p)
    assert_close(rope_cache_write(q, k, v, cos, sin, kc, vc, p, impl="triton"), want)
    assert_close(kc, kc_ref)
    assert torch.equal(vc, vc_ref)


def test_registered_op_writes_the_caches_under_compile():
    """Compiled, the op's cache writes must land in the caller's tensors (not in a copy)."""
    q, k, v, cos, sin, (kc, vc), p = _operands(1, 4, 2, 6, 8, torch.float32, 2)
    kc_ref, vc_ref = kc.clone(), vc.clone()
    want = rope_cache_ref(q, k, v, cos, sin, kc_ref, vc_ref, p)

    def step(q, k, v, cos, sin, kc, vc, p):
        return rope_cache(q, k, v, cos, sin, kc, vc, p) * 2

    got = torch.compile(step, backend="aot_eager", fullgraph=True)(q, k, v, cos, sin, kc, vc, p)
    torch.testing.assert_close(got, want * 2)
    torch.testing.assert_close(kc, kc_ref)
    torch.testing.assert_close(vc, vc_ref)


@pytest.mark.parametrize("change,match", [
    (lambda o: o.update(q=o["q"][:, :-1]), "q must be"),
    (lambda o: o.update(k=o["k"][:, :-8]), "k must be"),
    (lambda o: o.update(cos=o["cos"][:, :4]), "cos must be"),
    (lambda o: o.update(position=torch.tensor([1, 2])), "position must be one integer"),
    (lambda o: o.update(position=torch.tensor([1.0])), "position must be one integer"),
    (lambda o: o.update(v_cache=o["v_cache"][:, :, :3]), "two equal"),
    (lambda o: o.update(k_cache=o["k_cache"].transpose(2, 3).contiguous().transpose(2, 3)), "contiguous"),
    (lambda o: o.update(q=o["q"].double()), "one dtype"),
])
def test_bad_operands_are_refused(change, match):
    q, k, v, cos, sin, (kc, vc), p = _operands(1, 4, 2, 6, 8, torch.float32, 2)
    ops = dict(q=q.cpu(), k=k.cpu(), v=v.cpu(), cos=cos.cpu(), sin=sin.cpu(), k_cache=kc.cpu(), v_cache=vc.cpu(),
               position=p.cpu())
    change(ops)
    with pytest.raises(ValueError, match=match):
        rope_cache_write(**ops)


def test_head_size_must_be_a_power_of_two():
    kc = torch.zeros(1, 1, 4, 6)
    with pytest.raises(ValueError, match="power of two"):
        rope_cache_write(torch.zeros(1, 6), torch.zeros(1, 6), torch.zeros(1, 6), torch.zeros(1, 6),
                         torch.zeros(1, 6), kc, kc.clone(), torch.tensor([0]))
