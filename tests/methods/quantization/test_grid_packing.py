"""The grid and the bit packing on hand-checkable tensors."""

import pytest
import torch

from sparsebench.methods.quantization.config import QuantConfig
from sparsebench.methods.quantization.grid import Grid, dequantize, quantize_rtn
from sparsebench.methods.quantization.packing import pack, unpack


def test_asymmetric_2bit_by_hand():
    w = torch.tensor([[-1.0, 0.0, 0.5, 1.0]])
    q, s, o = quantize_rtn(w, Grid(bits=2, group_size=4, symmetric=False))
    # scale = (1 - -1) / 3, offset = -1; (w + 1) / s = [0, 1.5, 2.25, 3] -> round half to even
    assert s.item() == pytest.approx(2 / 3) and o.item() == -1.0
    assert q.tolist() == [[0, 2, 2, 3]]
    assert dequantize(q, s, o, 4)[0].tolist() == pytest.approx([-1.0, 1 / 3, 1 / 3, 1.0])


def test_symmetric_3bit_by_hand_keeps_zero_exact():
    w = torch.tensor([[0.0, 0.3, -0.9, 0.6]])
    q, s, o = quantize_rtn(w, Grid(bits=3, group_size=0, symmetric=True))
    # absmax 0.9 over 3 positive levels: scale 0.3, codes biased by 4
    assert s.item() == pytest.approx(0.3)
    assert q.tolist() == [[4, 5, 1, 6]]
    assert dequantize(q, s, o, 4)[0].tolist() == pytest.approx([0.0, 0.3, -0.9, 0.6])


def test_groups_get_their_own_parameters():
    w = torch.tensor([[0.0, 1.0, 10.0, 20.0]])
    q, s, o = quantize_rtn(w, Grid(bits=4, group_size=2, symmetric=False))
    assert s[0].tolist() == pytest.approx([1 / 15, 10 / 15]) and o.tolist() == [[0.0, 10.0]]
    assert dequantize(q, s, o, 2)[0].tolist() == pytest.approx(w[0].tolist())


def test_short_last_group_has_its_own_parameters():
    # width 5, groups of 2: [0, 1] [10, 20] [7]
    w = torch.tensor([[0.0, 1.0, 10.0, 20.0, 7.0]])
    grid = Grid(bits=4, group_size=2, symmetric=False)
    q, s, o = quantize_rtn(w, grid)
    assert grid.groups(5) == 3 and o.tolist() == [[0.0, 10.0, 7.0]]
    assert dequantize(q, s, o, 2)[0].tolist() == pytest.approx(w[0].tolist())


def test_group_larger_than_width_is_refused():
    with pytest.raises(ValueError, match="larger than the input width 64"):
        Grid(4, 128, False).groups(64)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_pack_round_trip_and_size(bits):
    q = torch.randint(0, 2**bits, (5, 48), generator=torch.Generator().manual_seed(bits), dtype=torch.uint8)
    packed = pack(q, bits)
    assert packed.dtype == torch.uint8 and packed.shape == (5, 48 * bits // 8)
    assert torch.equal(unpack(packed, bits, 48), q)


def test_4bit_layout_is_low_nibble_first():
    q = torch.tensor([[1, 2, 15, 0]], dtype=torch.uint8)
    assert pack(q, 4).tolist() == [[0x21, 0x0F]]


def test_3bit_needs_width_multiple_of_8():
    with pytest.raises(ValueError, match="multiple of 8"):
        pack(torch.zeros(1, 12, dtype=torch.uint8), 3)


@pytest.mark.parametrize("bad,match", [({"bits": 5}, "bits must be one of 2, 3, 4, 8"),
                                       ({"group_size": 12}, "multiple of 8"),
                                       ({"group_size": -1}, "multiple of 8")])
def test_config_refuses_unsupported(bad, match):
    with pytest.raises(ValueError, match=match):
        QuantConfig(**bad)
