"""The reproduce command, parsed back by the real CLI, gives the record's spec."""

import shlex

from sparsebench import registry
from sparsebench.api import RunSpec
from sparsebench.cli import _build_spec, base_parser
from sparsebench.sitegen.build import registry_info
from sparsebench.sitegen.reproduce import reproduce_command

from .conftest import HOSTILE, fixture_records


def _command(rec):
    methods, tasks = registry_info()
    info = methods.get(rec.spec["method"]["name"])
    defaults = {f["name"]: f["default"] for f in info["fields"]} if info else None
    return reproduce_command(rec.spec, defaults, tasks)


def test_command_round_trips_through_the_cli():
    rec = fixture_records()[3]  # wanda 2:4
    cmd = _command(rec)
    assert cmd.startswith("sparsebench run --method wanda --model smollm2-135m --pattern 2:4")
    argv = shlex.split(cmd)[2:]
    args, extra = base_parser().parse_known_args(["run", *argv])
    spec = _build_spec(args, extra).model_dump(mode="json")
    cls = registry.methods().get("wanda")
    assert cls.Config.from_dict(spec["method"]["config"]).to_dict() == rec.spec["method"]["config"]
    stored = RunSpec.model_validate(rec.spec).model_dump(mode="json")  # defaults of newer fields filled in
    for key in ("measure", "calibration", "profile", "seed", "kernel"):
        assert spec[key] == stored[key], key
    assert [t["name"] for t in spec["tasks"]] == [t["name"] for t in rec.spec["tasks"]]
    for built, stored in zip(spec["tasks"], rec.spec["tasks"], strict=True):
        cfg = registry.tasks().get(built["name"]).Config
        assert cfg.from_dict(built["config"]).to_dict() == stored["config"]
    assert spec["model"] == rec.spec["model"]


def test_unknown_method_gets_every_option_quoted():
    cmd = _command(fixture_records()[-1])
    assert shlex.split(cmd)[3] == HOSTILE
    assert "--level '<b>bold</b>'" in cmd


def test_list_options_of_tasks_and_methods_round_trip():
    """List-valued plugin options (long-context lengths, FLAP's per-layer ratios) are one
    JSON value on the command line, which the plugin's config parses back."""
    spec = RunSpec.model_validate({
        "method": {"name": "flap", "config": {"ratio": 0.2, "layer_ratio": [["layers.0", 0.1]]}},
        "tasks": [{"name": "passkey", "config": {"lengths": [1024, 2048], "depths": [0.5]}}],
    }).model_dump(mode="json")
    methods, tasks = registry_info()
    defaults = {f["name"]: f["default"] for f in methods["flap"]["fields"]}
    argv = shlex.split(reproduce_command(spec, defaults, tasks))[2:]
    args, extra = base_parser().parse_known_args(["run", *argv])
    built = _build_spec(args, extra).model_dump(mode="json")
    flap = registry.methods().get("flap").Config.from_dict(built["method"]["config"]).to_dict()
    passkey = registry.tasks().get("passkey").Config.from_dict(built["tasks"][0]["config"]).to_dict()
    assert [list(p) for p in flap["layer_ratio"]] == [["layers.0", 0.1]]
    assert list(passkey["lengths"]) == [1024, 2048]
    assert list(passkey["depths"]) == [0.5]
