"""The Triton int4 matmul against its reference (CPU: under TRITON_INTERPRET=1)."""

import pytest
import torch

from sparsebench.kernels import int4_matmul as op
from sparsebench.kernels.dispatch import interpreting, triton_available
from sparsebench.kernels.int4_matmul import ref
from sparsebench.kernels.tolerances import assert_close

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
needs_triton = pytest.mark.skipif(
    not triton_available() or (DEVICE == "cpu" and not interpreting()),
    reason="needs triton and a GPU or TRITON_INTERPRET=1",
)


def _random_layer(n, k, group, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 16, (n, k), generator=g, dtype=torch.uint8)
    packed = (q[:, 0::2] | (q[:, 1::2] << 4)).contiguous()
    groups = -(-k // group)
    scales = (torch.rand(n, groups, generator=g) * 0.02 + 0.001).to(dtype)
    offsets = (-8 * scales.float() + torch.randn(n, groups, generator=g) * 0.01).to(dtype)
    return q, packed, scales, offsets


def test_ref_on_a_hand_checkable_layer():
    # one row, K=4, group 2: codes [1, 2 | 15, 0], scales [0.5 | 2], offsets [-1 | 1]
    packed = torch.tensor([[1 | (2 << 4), 15 | (0 << 4)]], dtype=torch.uint8)
    scales = torch.tensor([[0.5, 2.0]])
    offsets = torch.tensor([[-1.0, 1.0]])
    w = ref.dequantize_int4(packed, scales, offsets, 2)
    assert w.tolist() == [[-0.5, 0.0, 31.0, 1.0]]
    x = torch.tensor([[1.0, 2.0, 0.0, 3.0]])
    assert ref.int4_matmul(x, packed, scales, offsets, 2).tolist() == [[-0.5 + 0 + 0 + 3.0]]
    # groups of 3 over K=4: the last group is the single column 3
    assert ref.dequantize_int4(packed, scales, offsets, 3).tolist() == [[-0.5, 0.0, 6.5, 1.0]]


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("m,n,k,group", [(1, 37, 64, 32), (3, 20, 96, 32), (17, 33, 128, 64), (5, 16, 64, 64),
                                         (2, 19, 80, 32), (1, 8, 96, 64),  # a short last group
                                         (64, 12, 64, 32), (70, 9, 96, 64)])  # dequantize + matmul path
def test_triton_matches_ref(m, n, k, group, dtype):
    _, packed, scales, offsets = _random_layer(n, k, group, dtype)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(1)).to(dtype)
    args = [t.to(DEVICE) for t in (x, packed, scales, offsets)]
    got = op.int4_matmul(*args, group, impl="triton")
    want = ref.int4_matmul(*args, group)
    assert got.dtype == dtype and got.shape == (m, n)
    assert_close(got, want)


@needs_triton
def test_triton_keeps_leading_dims_and_refuses_bad_groups():
    _, packed, scales, offsets = _random_layer(16, 64, 32, torch.float32)
    x = torch.randn(2, 3, 64)
    args = [t.to(DEVICE) for t in (x, packed, scales, offsets)]
    assert_close(op.int4_matmul(*args, 32, impl="triton"), ref.int4_matmul(*args, 32))
    bad = [t.to(DEVICE) for t in (torch.randn(1, 48), packed[:, :24], scales[:, :3], offsets[:, :3])]
    with pytest.raises(ValueError, match="multiple of 32"):
        op.int4_matmul(*bad, 16, impl="triton")


def test_impl_choice_is_validated():
    with pytest.raises(ValueError, match="impl must be one of"):
        op.int4_matmul(torch.randn(1, 4), torch.zeros(1, 2, dtype=torch.uint8), torch.ones(1, 1),
                       torch.zeros(1, 1), 4, impl="cuda")
