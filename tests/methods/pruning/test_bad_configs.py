"""Bad pruning configs from the command line: one clear paragraph, exit 2, nothing written."""

import pytest

from sparsebench.cli import main
from sparsebench.store import ResultsStore


@pytest.fixture
def results(tmp_path):
    return ResultsStore(tmp_path / "results")


def _run(results, capsys, *args):
    code = main(["run", "--no-mlflow", "--no-progress", "--no-latency", "--results", str(results.root), *args])
    err = capsys.readouterr().err
    written = list(results.root.rglob("*.json")) if results.root.exists() else []
    assert written == [], "bad input must not write records"
    return code, err


@pytest.mark.parametrize("args,needle", [
    (["--method", "sparsegpt", "--pattern", "2:4", "--sparsity", "0.99"],
     "sparsity 0.99 conflicts with pattern 2:4, which keeps 2 of every 4 weights"),
    (["--method", "dsnot", "--pattern", "4:8", "--sparsity", "0.99"], "conflicts with pattern 4:8"),
    (["--method", "magnitude", "--pattern", "2:4", "--sparsity", "0.99"], "leave sparsity out"),
    (["--method", "sparsegpt", "--pattern", "4:8", "--blocksize", "12"], "multiple of M=8"),
    (["--method", "wanda", "--layer-sparsity", "mlp=0.3"], "JSON object of glob pattern -> sparsity"),
    (["--method", "wanda", "--layer-sparsity", '{"mlp.down_proj": 1.5}'], "must be in [0, 1)"),
    (["--method", "dsnot", "--pattern", "2:4", "--layer-sparsity", '{"mlp.*": 0.3}'],
     "layer_sparsity applies to the unstructured pattern only"),
    (["--method", "dsnot", "--init", "random"], "init"),
    (["--method", "flap", "--ratio", "0"], "ratio must be in (0, 1)"),
    (["--method", "flap", "--prune-heads", "maybe"], "prune_heads"),
])
def test_bad_pruning_options(results, capsys, args, needle):
    code, err = _run(results, capsys, *args)
    assert code == 2
    assert needle in err
    assert err.count("\n") == 1  # one paragraph


def test_flap_refuses_save_model(results, capsys, tmp_path):
    code, err = _run(results, capsys, "--method", "flap", "--save-model", str(tmp_path / "out"))
    assert code == 2
    assert "--save-model cannot be used with method 'flap'" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize("args,needle", [
    (["--method", "wanda", "--pattern", "2:5"], "needs every input width to be a multiple of 5"),
    (["--method", "sparsegpt", "--layer-sparsity", '{"mlp.down_projj": 0.3}'],
     "'mlp.down_projj' match no linear layer"),
    (["--method", "flap", "--layer-ratio", '{"layers.99": 0.3}'], "match no decoder block"),
])
def test_config_that_does_not_fit_the_model(results, capsys, args, needle):
    """Checked on the loaded model before the dense baseline or the method runs."""
    code, err = _run(results, capsys, "--model", "llama", *args)
    assert code == 2
    assert needle in err
    assert "cannot apply to model 'smollm2-135m'" in err
