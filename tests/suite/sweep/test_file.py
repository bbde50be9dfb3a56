"""The sweep file: strict validation, grid expansion, and refusal before anything runs."""

import pytest

from sparsebench.cli import main
from sparsebench.errors import UsageError
from sparsebench.sweep import expand, load_sweep, parse_sweep, precheck

from .helpers import write_sweep


def _methods(runs):
    return [(r.spec.method.name, r.spec.method.config) for r in runs]


def test_grid_variants_and_fixed_config_expand_in_order():
    sweep = parse_sweep({
        "name": "g", "models": ["llama", {"name": "llama", "dtype": "float32"}], "profiles": ["cpu"],
        "methods": ["dense",
                    {"name": "wanda", "config": {"comparison": "layer"},
                     "grid": {"sparsity": [0.5, 0.6], "pattern": ["unstructured", "2:4"]}},
                    {"name": "magnitude", "variants": [{"sparsity": 0.7}, {"pattern": "4:8"}], "grid": {"sparsity": [0.5]}}],
    }, "test")
    runs = expand(sweep)
    assert len(runs) == 2 * (1 + 4 + 2)
    first_model = _methods(runs[:7])
    assert first_model[0] == ("dense", {})
    assert first_model[1:5] == [("wanda", {"comparison": "layer", "sparsity": s, "pattern": p})
                                for s in (0.5, 0.6) for p in ("unstructured", "2:4")]
    # grid points win over variants, variants over config
    assert first_model[5:] == [("magnitude", {"sparsity": 0.5}), ("magnitude", {"pattern": "4:8", "sparsity": 0.5})]
    assert runs[7].spec.model.dtype == "float32"
    assert all(r.spec.profile == "cpu" for r in runs)


def test_task_sets_are_an_axis_and_base_fills_the_rest():
    sweep = parse_sweep({"name": "t", "methods": ["dense"], "task_sets": [["perplexity"], ["lastword"]],
                         "timeout_s": 30, "base": {"seed": 3, "measure": {"enabled": False}}}, "test")
    runs = expand(sweep)
    assert [[t.name for t in r.spec.tasks] for r in runs] == [["perplexity"], ["lastword"]]
    assert all(r.spec.seed == 3 and not r.spec.measure.enabled and r.timeout_s == 30 for r in runs)


@pytest.mark.parametrize("data, words", [
    ({"name": "x", "methods": ["dense"], "model": "llama"}, ["model: unknown key", "Allowed top-level keys"]),
    ({"name": "x", "methods": []}, ["methods"]),
    ({"name": "x", "methods": [{"name": "wanda", "grid": {"sparsity": []}}]}, ["grid option(s) sparsity list no values"]),
    ({"name": "x", "methods": [{"name": "wanda", "sweep": {}}]}, ["methods.0.sweep: unknown key"]),
    ({"name": "x", "methods": ["dense"], "base": {"method": "wanda"}}, ["base", "grid axes"]),
    ({"name": "x", "methods": ["dense"], "timeout_s": -1}, ["timeout_s", "greater than 0"]),
    ({"name": "bad name", "methods": ["dense"]}, ["name"]),
    (["not", "a", "mapping"], ["must hold a mapping"]),
])
def test_malformed_sweeps_are_refused_with_the_field_named(data, words):
    with pytest.raises(UsageError) as exc:
        parse_sweep(data, "The sweep file 'x.yaml'")
    for w in words:
        assert w in str(exc.value)


@pytest.mark.parametrize("methods, words", [
    ([{"name": "wanda", "grid": {"sparsity": [0.5, 1.5]}}], ["methods[1] (wanda sparsity=1.5)", "sparsity"]),
    ([{"name": "wandaa"}], ["Did you mean 'wanda'"]),
    ([{"name": "magnitude", "config": {"sparsty": 0.5}}], ["sparsty: unknown option", "Allowed options"]),
])
def test_bad_method_options_are_refused_before_any_run(tmp_path, capsys, methods, words):
    path = write_sweep(tmp_path / "bad.yaml", {"name": "bad", "methods": ["dense", *methods]})
    assert main(["sweep", str(path), "--results", str(tmp_path / "results"), "--no-mlflow"]) == 2
    err = capsys.readouterr().err
    for w in words:
        assert w in err
    assert not (tmp_path / "results").exists()  # nothing ran, nothing was written


def test_both_tasks_and_task_sets_is_an_error():
    sweep = parse_sweep({"name": "x", "methods": ["dense"], "tasks": ["perplexity"], "task_sets": [["lastword"]]}, "t")
    with pytest.raises(UsageError, match="both tasks and task_sets"):
        expand(sweep)


def test_unreadable_files(tmp_path, capsys):
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    assert main(["sweep", str(tmp_path / "broken.yaml"), "--no-mlflow"]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    assert main(["sweep", str(tmp_path / "missing.yaml")]) == 2


def test_shipped_sweeps_are_valid():
    from pathlib import Path

    files = sorted((Path(__file__).resolve().parents[3] / "sweeps").glob("*.yaml"))
    assert {f.name for f in files} >= {"pruning.yaml", "smoke.yaml"}
    for f in files:
        assert precheck(load_sweep(f)) >= 1
