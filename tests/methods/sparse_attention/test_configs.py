"""Bad configs are refused with the field, the value and what is allowed; configs that do
not fit the model are refused by ``check_model``; both exit 2 from the CLI, writing nothing."""

import pytest
from pydantic import ValidationError

from sparsebench import registry
from sparsebench.cli import main
from sparsebench.methods.sparse_attention.config import (
    MInferenceConfig,
    QuestConfig,
    StreamingConfig,
    TidalDecodeConfig,
)

from .helpers import tiny_llama


@pytest.mark.parametrize("cls,kwargs,needle", [
    (MInferenceConfig, {"density": 0}, "density must be in (0, 1]"),
    (MInferenceConfig, {"density": 1.5}, "got 1.5"),
    (MInferenceConfig, {"density": "lots"}, "density must be a number in (0, 1]"),
    (MInferenceConfig, {"patterns": "a_shape,diagonal"}, "patterns may only hold a_shape, vertical_slash, block_sparse"),
    (MInferenceConfig, {"last_q": 0}, "last_q must be an integer > 0"),
    (StreamingConfig, {"window": 0}, "window must be an integer > 0"),
    (StreamingConfig, {"window": -3}, "got -3"),
    (StreamingConfig, {"sinks": -1}, "sinks must be an integer >= 0"),
    (StreamingConfig, {"window": 2.5}, "window must be an integer > 0"),
    (QuestConfig, {"budget": 0}, "budget must be > 0"),
    (QuestConfig, {"budget": 1.5}, "budget must be in (0, 1] with budget_unit='fraction'"),
    (QuestConfig, {"budget": 12.5, "budget_unit": "tokens"}, "budget must be an integer >= 1"),
    (QuestConfig, {"page_size": 0}, "page_size must be an integer > 0"),
    (TidalDecodeConfig, {"budget": 0.0}, "budget must be > 0"),
    (TidalDecodeConfig, {"selection_layers": "2,2"}, "selection_layers lists a layer twice"),
])
def test_bad_configs_are_refused(cls, kwargs, needle):
    with pytest.raises(ValidationError) as exc:
        cls(**kwargs)
    assert needle in str(exc.value)
    assert isinstance(exc.value, ValueError)


def test_cli_strings_parse_and_configs_round_trip():
    c = TidalDecodeConfig(selection_layers="5,2", budget="512", budget_unit="tokens")
    assert c.selection_layers == (2, 5) and c.budget == 512
    m = MInferenceConfig(patterns="vertical_slash,block_sparse", density="0.1")
    assert m.patterns == ("vertical_slash", "block_sparse")
    for cfg in (c, m, StreamingConfig(window="64", sinks="0"), QuestConfig(budget=1.0)):
        data = cfg.to_dict()
        assert data["version"] == 1
        assert type(cfg).from_dict(data) == cfg


def _method(name, **cfg):
    cls = registry.methods().get(name)
    return cls(cls.Config(**cfg))


@pytest.mark.parametrize("name,cfg,needle", [
    ("streaming", {"window": 129}, "window=129 is longer than the model's context of 128 positions"),
    ("tidaldecode", {"selection_layers": (1, 4)}, "names layers [4] but the model has 4 layers"),
    ("tidaldecode", {"selection_layers": (2, 3)}, "leaves no layer after the first selection layer"),
    ("quest", {"dense_layers": 4}, "dense_layers=4 leaves none of the model's 4 layers sparse"),
])
def test_configs_that_do_not_fit_the_model(name, cfg, needle):
    with pytest.raises(ValueError) as exc:
        _method(name, **cfg).check_model(tiny_llama())
    assert needle in str(exc.value)


def test_window_up_to_the_context_fits():
    _method("streaming", window=128).check_model(tiny_llama())


def test_methods_are_registered_with_flags_named_after_their_fields(capsys):
    assert main(["ls", "methods"]) == 0
    out = capsys.readouterr().out
    for name in ("streaming", "minference", "quest", "tidaldecode"):
        assert name in out
    assert "[sparse_attention]" in out and "budget_unit='fraction'" in out


def _run(tmp_path, capsys, *args):
    results = tmp_path / "results"
    code = main(["run", "--no-mlflow", "--no-progress", "--no-latency", "--results", str(results), *args])
    err = capsys.readouterr().err
    assert not results.exists() or not list(results.rglob("*.json")), "bad input must not write records"
    return code, err


@pytest.mark.parametrize("args,needle", [
    (["--method", "minference", "--density", "0"], "density must be in (0, 1]"),
    (["--method", "streaming", "--window", "0"], "window must be an integer > 0"),
    (["--method", "quest", "--budget", "2"], "budget must be in (0, 1] with budget_unit='fraction'"),
])
def test_cli_bad_config_exits_2_and_writes_nothing(tmp_path, capsys, args, needle):
    code, err = _run(tmp_path, capsys, *args)
    assert code == 2, err
    assert needle in err


@pytest.fixture
def tiny_dir(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<eos>": 0, "<unk>": 1, **{f"w{i}": i + 2 for i in range(62)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    out = tmp_path / "tiny"
    tiny_llama(layers=2).save_pretrained(out)
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", unk_token="<unk>").save_pretrained(out)
    return out


def test_cli_window_longer_than_the_model_exits_2_before_anything_runs(tmp_path, capsys, tiny_dir):
    code, err = _run(tmp_path, capsys, "--model", str(tiny_dir), "--method", "streaming", "--window", "512",
                     "--task", "perplexity")
    assert code == 2, err
    assert "Method 'streaming' cannot apply to model" in err
    assert "window=512 is longer than the model's context of 128 positions" in err
