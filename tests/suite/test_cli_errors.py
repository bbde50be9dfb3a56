"""Every kind of bad input: one clear paragraph, exit code 2, and no record touched."""

import json

import pytest

from sparsebench.cli import main
from sparsebench.store import ResultsStore


@pytest.fixture
def results(tmp_path):
    """A results dir holding one valid record, to check nothing is modified."""
    from sparsebench.api import RunRecord, RunSpec

    store = ResultsStore(tmp_path / "results")
    spec = RunSpec()
    store.write(RunRecord(run_id="keep-me", spec_key=spec.key(), created_at="2026-11-22T00:00:00+00:00",
                          status="ok", spec=spec.model_dump(mode="json")))
    return store


def _snapshot(store):
    return {p.name: p.read_bytes() for p in store.root.rglob("*") if p.is_file()}


def _run(results, capsys, *args):
    before = _snapshot(results)
    code = main(["run", "--no-mlflow", "--no-progress", "--results", str(results.root), *args])
    err = capsys.readouterr().err
    assert _snapshot(results) == before, "bad input must not write or change records"
    return code, err


@pytest.mark.parametrize("args,needle", [
    (["--method", "wandaa"], "Unknown method 'wandaa'. Did you mean 'wanda'?"),
    (["--model", "lama"], "Unknown model 'lama'. Did you mean 'llama'?"),
    (["--task", "perplexty"], "Unknown task 'perplexty'. Did you mean 'perplexity'?"),
    (["--profile", "h10"], "Unknown profile 'h10'. Did you mean 'h100'?"),
    (["--method", "wanda", "--sparsity", "1.2"], "sparsity must be in [0, 1)"),
    (["--method", "wanda", "--sparsity", "-0.1"], "sparsity must be in [0, 1)"),
    (["--method", "magnitude", "--pattern", "4:4"], "0 < N < M"),
    (["--method", "magnitude", "--pattern", "8:4"], "0 < N < M"),
    (["--method", "wanda", "--pattern", "2:4", "--sparsity", "0.99"], "conflicts with pattern 2:4"),
    (["--method", "wanda", "--sparsty", "0.5"], "Unknown option(s) --sparsty"),
    (["--model", "./no/such/model-dir"], "does not exist"),
    (["--perplexity-window", "abc"], "perplexity"),
    (["--calib-samples", "0", "--method", "wanda"], "calibration.samples"),
])
def test_bad_run_arguments(results, capsys, args, needle):
    code, err = _run(results, capsys, *args)
    assert code == 2
    assert needle in err
    assert err.startswith("error: ") and err.count("\n") == 1  # one paragraph


def test_unknown_method_lists_known_names(results, capsys):
    _, err = _run(results, capsys, "--method", "nope")
    assert "Known methods: dense, dsnot, flap, magnitude, sparsegpt, wanda" in err


@pytest.mark.parametrize("content,needle", [
    ("model: [unclosed", "not valid YAML"),
    ("method: {name: wanda}\nsparsity: 0.5\n", "sparsity: unknown key"),
    ("method: {name: wanda, config: {sparsity: 2}}\n", "sparsity must be in [0, 1)"),
    ("measure: {repetitions: 0}\n", "measure.repetitions"),
    ("- just\n- a list\n", "must hold a mapping"),
    ("", "is empty"),
])
def test_bad_spec_files(results, capsys, tmp_path, content, needle):
    spec = tmp_path / "spec.yaml"
    spec.write_text(content)
    code, err = _run(results, capsys, "--spec", str(spec))
    assert code == 2 and needle in err
    assert main(["validate", str(spec)]) == 2


def test_missing_spec_file(results, capsys, tmp_path):
    code, err = _run(results, capsys, "--spec", str(tmp_path / "nope.yaml"))
    assert code == 2 and "does not exist" in err


def test_valid_spec_validates(capsys, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("model: llama\nmethod: {name: wanda, config: {pattern: '2:4'}}\ntasks: [perplexity]\n")
    assert main(["validate", str(spec)]) == 0
    out = capsys.readouterr().out
    resolved = json.loads(out[: out.rindex("}") + 1])
    assert resolved["method"]["config"] == {"sparsity": 0.5, "pattern": "2:4", "comparison": "row", "version": 1}
    assert resolved["model"]["name"] == "smollm2-135m"
    assert "valid; spec key" in out


@pytest.mark.parametrize("content,needle", [
    ("{torn json", "cannot be read"),
    (json.dumps({"schema_version": 99, "run_id": "x"}), "newer than this sparsebench"),
])
def test_corrupt_or_newer_record_stops_the_run(results, capsys, content, needle):
    bad = results.runs / "zz-bad.json"
    bad.write_text(content)
    code, err = _run(results, capsys, "--method", "wanda")
    assert code == 2 and needle in err and "zz-bad.json" in err
    assert bad.read_text() == content


def test_file_given_as_model_dir(results, capsys, tmp_path):
    f = tmp_path / "weights.bin"
    f.write_text("x")
    code, err = _run(results, capsys, "--model", str(f))
    assert code == 2 and "not a transformers model directory" in err


def test_hub_id_not_cached_gives_clear_error(results, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    code, err = _run(results, capsys, "--model", "meta-llama/Llama-3.2-1B", "--no-latency")
    assert code == 2
    assert "'meta-llama/Llama-3.2-1B' is not in the local Hugging Face cache" in err


def test_save_model_dir_not_empty(results, capsys, tmp_path):
    d = tmp_path / "out"
    d.mkdir()
    (d / "x").write_text("keep")
    code, err = _run(results, capsys, "--save-model", str(d))
    assert code == 2 and "not empty" in err


def test_ls_and_show(results, capsys):
    assert main(["ls"]) == 0
    out = capsys.readouterr().out
    for word in ("wanda", "magnitude", "dense", "perplexity", "lastword", "llama", "cpu", "h100"):
        assert word in out
    assert main(["show", "keep-me", "--results", str(results.root)]) == 0
    assert "keep-me" in capsys.readouterr().out
    assert main(["show", "nope", "--results", str(results.root)]) == 2

