"""The Triton sparse GEMV against its reference, on odd shapes, every dtype, 0%/~50%/100%
sparsity, scalar and per-input thresholds, with and without bias.

On CPU these run under the Triton interpreter (``TRITON_INTERPRET=1``, set by ``nox -s
tests``); on a GPU the same tests run on the device. Shapes stay small: the interpreter
runs every program in Python.
"""

import pytest
import torch

from sparsebench.kernels.dispatch import interpreting, triton_available
from sparsebench.kernels.sparse_gemv import MAX_ROWS, masked_matmul, sparse_gemv, sparse_gemv_ref
from sparsebench.kernels.tolerances import assert_close

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
needs_triton = pytest.mark.skipif(
    not triton_available() or (DEVICE == "cpu" and not interpreting()),
    reason="needs triton and a GPU, or TRITON_INTERPRET=1 on CPU")

# (rows, K inputs, N outputs): none of K, N a multiple of a block size; 300 inputs make
# several K splits (two-stage reduction), 37 a single one (direct store)
SHAPES = [(1, 37, 53), (3, 70, 33), (1, 300, 40), (5, 257, 19)]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def _operands(m, k, n, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g).to(dtype).to(DEVICE)
    w_t = (torch.randn(k, n, generator=g) / k ** 0.5).to(dtype).to(DEVICE)
    bias = torch.randn(n, generator=g).to(dtype).to(DEVICE)
    return x, w_t, bias


def _threshold(x, sparsity, per_channel):
    """A threshold zeroing about ``sparsity`` of x (exactly all of it at 1.0)."""
    a = x.float().abs()
    if per_channel:
        if sparsity >= 1.0:
            return a.amax(0)
        return torch.quantile(a, sparsity, dim=0) if sparsity > 0 else torch.zeros_like(a[0])
    if sparsity >= 1.0:
        return float(a.max())
    return float(torch.quantile(a.flatten(), sparsity)) if sparsity > 0 else 0.0


@needs_triton
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 1.0])
def test_triton_matches_ref_scalar_threshold(shape, dtype, sparsity):
    x, w_t, bias = _operands(*shape, dtype)
    t = _threshold(x, sparsity, per_channel=False)
    got = sparse_gemv(x, w_t, t, impl="triton")
    assert got.dtype == dtype and got.shape == (shape[0], shape[2])
    assert_close(got, sparse_gemv_ref(x, w_t, t))
    if sparsity == 1.0:
        assert not got.float().any()


@needs_triton
@pytest.mark.parametrize("shape", SHAPES[:3], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 1.0])
def test_triton_matches_ref_per_input_threshold_with_bias(shape, dtype, sparsity):
    x, w_t, bias = _operands(*shape, dtype, seed=1)
    t = _threshold(x, sparsity, per_channel=True)
    got = sparse_gemv(x, w_t, t, impl="triton", bias=bias)
    assert_close(got, sparse_gemv_ref(x, w_t, t, bias))


@needs_triton
@pytest.mark.parametrize("m", [1, 3])
def test_weight_rows_of_dropped_inputs_are_never_read(m):
    """Rows of dropped inputs filled with NaN: the kernel must not touch them."""
    x, w_t, _ = _operands(m, 300, 40, torch.float32, seed=2)
    t = _threshold(x, 0.6, per_channel=False)
    dead = (x.abs() <= t).all(0)
    assert dead.any()
    poisoned = w_t.clone()
    poisoned[dead] = float("nan")
    clean = w_t.clone()
    clean[dead] = 0.0
    got = sparse_gemv(x, poisoned, t, impl="triton")
    assert torch.isfinite(got).all()
    assert_close(got, sparse_gemv_ref(x, clean, t))


def test_ref_is_the_definition():
    """y = W[:, keep] @ x[keep] on a hand-checkable case."""
    x = torch.tensor([[0.5, -2.0, 0.1, 3.0]])
    w = torch.arange(12, dtype=torch.float32).reshape(3, 4)  # W [N=3, K=4]
    y = sparse_gemv_ref(x, w.t(), 0.4)
    keep = torch.tensor([0, 1, 3])
    assert torch.allclose(y[0], w[:, keep] @ x[0, keep])
    per_input = torch.tensor([0.6, 0.0, 0.0, 5.0])  # drops inputs 0 (0.5) and 3 (3.0)
    assert torch.allclose(sparse_gemv_ref(x, w.t(), per_input)[0], w[:, [1, 2]] @ x[0, [1, 2]])


def test_many_rows_take_the_masked_gemm_and_match_ref():
    x, w_t, bias = _operands(MAX_ROWS + 5, 37, 53, torch.float32)
    t = _threshold(x, 0.5, per_channel=False)
    assert_close(masked_matmul(x, w_t, t, bias), sparse_gemv_ref(x, w_t, t, bias))
    if DEVICE == "cpu" and triton_available() and interpreting():
        assert_close(sparse_gemv(x, w_t, t, impl="triton", bias=bias), sparse_gemv_ref(x, w_t, t, bias))


@needs_triton
def test_bad_operands_are_refused():
    x, w_t, _ = _operands(1, 37, 53, torch.float32)
    with pytest.raises(ValueError, match="inputs but w_t"):
        sparse_gemv(x[:, :30], w_t, 0.1, impl="triton")
    with pytest.raises(ValueError, match="contiguous rows"):
        sparse_gemv(x, w_t.t().contiguous().t(), 0.1, impl="triton")
    with pytest.raises(ValueError, match="per-input threshold"):
        sparse_gemv(x, w_t, torch.zeros(5), impl="triton")


@pytest.mark.skipif(not triton_available(), reason="needs triton")
def test_tile_config_from_the_environment(monkeypatch):
    from sparsebench.kernels.sparse_gemv.triton import GemvConfig, plan

    monkeypatch.setenv("SPARSEBENCH_GEMV_CONFIG", "bn=128,bk=16,w=8,p=64")
    cfg = GemvConfig.from_env()
    assert (cfg.block_n, cfg.block_k, cfg.num_warps, cfg.programs) == (128, 16, 8, 64)
    monkeypatch.setenv("SPARSEBENCH_GEMV_CONFIG", "bn=128,bq=3")
    with pytest.raises(ValueError, match="expected e.g."):
        GemvConfig.from_env()
    # the split-K plan covers K exactly once: splits x k_per_split >= K > (splits - 1) x k_per_split
    for k, n in [(4096, 4096), (14336, 4096), (4096, 14336), (4096, 1024), (37, 53)]:
        _, _, bk, per, splits = plan(1, n, k, torch.device("cpu"), GemvConfig())
        assert per % bk == 0 and splits * per >= k > (splits - 1) * per
