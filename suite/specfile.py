"""Load a ``RunSpec`` from YAML (or a dict), with shorthands and clear errors.

Shorthands: ``model: llama`` for ``model: {name: llama}``, ``method: wanda`` likewise,
and ``tasks: [perplexity, lastword]`` for a list of ``{name: ...}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .api import RunSpec
from .errors import UsageError


def normalize(data: dict[str, Any]) -> dict[str, Any]:
    data = dict(data)
    for key in ("model", "method"):
        if isinstance(data.get(key), str):
            data[key] = {"name": data[key]}
    if isinstance(data.get("tasks"), list):
        data["tasks"] = [{"name": t} if isinstance(t, str) else t for t in data["tasks"]]
    return data


def spec_from_dict(data: Any, origin: str = "the spec") -> RunSpec:
    if not isinstance(data, dict):
        raise UsageError(f"{origin} must be a mapping of keys such as model, method, tasks; got {type(data).__name__}.")
    try:
        return RunSpec.model_validate(normalize(data))
    except ValidationError as exc:
        probs = []
        for e in exc.errors():
            loc = ".".join(str(x) for x in e["loc"]) or "(top level)"
            msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
            probs.append(f"{loc}: {msg}")
        raise UsageError(
            f"{origin} is invalid: {'; '.join(probs)}. Allowed top-level keys: "
            f"{', '.join(RunSpec.model_fields)}."
        ) from None


def load_spec_dict(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"The spec file '{path}' does not exist.")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise UsageError(f"The spec file '{path}' is not valid YAML: {exc}") from None
    if data is None:
        raise UsageError(f"The spec file '{path}' is empty.")
    if not isinstance(data, dict):
        raise UsageError(f"The spec file '{path}' must hold a mapping (model, method, tasks, ...).")
    return normalize(data)


def load_spec(path: str | Path) -> RunSpec:
    return spec_from_dict(load_spec_dict(path), origin=f"The spec file '{path}'")
