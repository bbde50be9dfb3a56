"""A long-context task asking for more positions than the model has is bad input: refused
right after the model loads (exit 2), before the dense baseline runs or anything is written."""

import pytest

from sparsebench.cli import main


@pytest.fixture
def tiny_dir(tmp_path, tiny_tok):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=len(tiny_tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256)
    out = tmp_path / "tiny"
    LlamaForCausalLM(cfg).save_pretrained(out)
    tiny_tok.save_pretrained(out)
    return out


@pytest.mark.parametrize("task,flag", [("passkey", "--passkey-lengths"), ("vt", "--vt-lengths"),
                                       ("cwe", "--cwe-lengths")])
def test_context_longer_than_the_model_is_refused_before_anything_runs(tmp_path, tiny_dir, capsys, task, flag):
    results = tmp_path / "results"
    code = main(["run", "--model", str(tiny_dir), "--task", task, flag, "512", "--no-latency",
                 "--no-mlflow", "--no-progress", "--results", str(results)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"Task '{task}' cannot run on model" in err
    assert "512" in err and "256" in err
    assert not results.exists() or not list(results.rglob("*.json"))
