"""The ``sparsebench run`` command line that reproduces a stored record.

Built from the record's resolved spec, so a reader can copy it from the site. Values equal
to today's defaults are left out to keep it short; the profile is always given because
``auto`` would pick the reader's machine, not the one the record was measured on.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from ..api import CalibrationSpec, MeasureSpec, ModelRef, RunSpec
from ..cli import option_flag as _flag  # one naming rule, so commands always parse back

# every measure field has a flag of its own name, except `enabled` (--no-latency)
_MEASURE_FIELDS = [f for f in MeasureSpec.model_fields if f != "enabled"]


def _values(value: Any) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    if isinstance(value, float):
        return [f"{value:g}"]
    return [str(value)]


def _plugin_flags(prefix: str, config: dict[str, Any], defaults: dict[str, Any] | None) -> list[str]:
    """Flags for a method/task config; every field is given when the plugin is unknown here."""
    out: list[str] = []
    for name, value in config.items():
        if name == "version" or value is None:
            continue
        if defaults is not None and name in defaults and defaults[name] == value:
            continue
        # a plugin option is one CLI value that its config parses: lists and mappings as JSON
        text = json.dumps(value) if isinstance(value, (list, tuple, dict)) else _values(value)[0]
        out += [_flag(prefix + name), text]
    return out


def reproduce_command(
    spec: dict[str, Any],
    method_defaults: dict[str, Any] | None = None,
    task_defaults: dict[str, dict[str, Any]] | None = None,
) -> str:
    """Shell-quoted ``sparsebench run ...`` for ``spec`` (a record's ``spec`` dict)."""
    task_defaults = task_defaults or {}
    method = spec.get("method") or {}
    model = spec.get("model") or {}
    args = ["sparsebench", "run", "--method", str(method.get("name", "dense")),
            "--model", str(model.get("name", ModelRef().name))]
    args += _plugin_flags("", method.get("config") or {}, method_defaults)
    if model.get("dtype") not in (None, "auto"):
        args += ["--dtype", str(model["dtype"])]
    tasks = spec.get("tasks") or []
    names = [t.get("name") for t in tasks]
    if names != [t.name for t in RunSpec().tasks]:
        for n in names:
            args += ["--task", str(n)]
    for t in tasks:
        args += _plugin_flags(f"{t.get('name')}_", t.get("config") or {}, task_defaults.get(t.get("name")))
    if spec.get("profile"):
        args += ["--profile", str(spec["profile"])]
    cal, cal_default = spec.get("calibration"), CalibrationSpec()
    if cal:
        if cal.get("samples") != cal_default.samples:
            args += ["--calib-samples", str(cal["samples"])]
        if cal.get("seq_len") != cal_default.seq_len:
            args += ["--calib-seq-len", str(cal["seq_len"])]
    measure, m_default = spec.get("measure") or {}, MeasureSpec().model_dump(mode="json")
    if measure.get("enabled") is False:
        args.append("--no-latency")
    for key in _MEASURE_FIELDS:
        if key in measure and measure[key] != m_default.get(key):  # a field left out at its default
            args += [_flag(key), *_values(measure[key])]
    for key, default in (("seed", 0), ("kernel", "auto")):
        if spec.get(key, default) != default:
            args += [_flag(key), str(spec[key])]
    return shlex.join(args)
