"""The sweep file: a YAML grid of runs, validated strictly and expanded into run specs.

A sweep is the cartesian product of models x method configs x task sets x profiles; every
other ``RunSpec`` field (calibration, measure, kernel, seed, corpus) comes from ``base``::

    name: pruning                    # used in the plan, the summary and MLflow's parent run
    description: dense, magnitude and Wanda at 50% on the default model
    timeout_s: 3600                  # per run (wall time of its process); omit for none
    models: [llama]                  # names, or mappings {name, dtype, revision}
    profiles: [auto]                 # hardware profile ids (default [auto])
    tasks: [perplexity, lastword]    # ONE task set, evaluated by every run (default: both)
    # task_sets: [[perplexity], [lastword]]   # or several sets: a grid axis
    methods:
      - dense
      - name: wanda
        config: {comparison: row}                           # fixed options
        grid: {sparsity: [0.5, 0.6], pattern: [unstructured, "2:4"]}   # cartesian product
      - name: magnitude
        variants: [{sparsity: 0.5}, {pattern: "2:4"}]       # explicit list of configs
        timeout_s: 600                                       # overrides the sweep's
    base:                            # the rest of a RunSpec, shared by every run
      calibration: {samples: 32, seq_len: 512}
      measure: {enabled: false}

A method entry expands to ``config`` merged with each variant (default: one empty variant)
merged with each point of ``grid``. Lists in ``config`` are plain option values (some
options are lists); only ``grid`` is expanded. The file is checked completely (keys here,
then every expanded spec against the method and task registries) before anything runs.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..api import ModelRef, RunSpec, TaskSpec
from ..errors import UsageError
from ..specfile import spec_from_dict


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _named(v: Any) -> Any:
    return {"name": v} if isinstance(v, str) else v


class MethodEntry(_Strict):
    """One method line of the grid; see the module docstring."""

    name: str
    config: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    variants: list[dict[str, Any]] = Field(default_factory=lambda: [{}])
    timeout_s: float | None = Field(None, gt=0)

    @field_validator("grid")
    @classmethod
    def _non_empty(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        empty = [k for k, vals in v.items() if not vals]
        if empty:
            raise ValueError(f"grid option(s) {', '.join(empty)} list no values")
        return v

    @field_validator("variants")
    @classmethod
    def _some_variant(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not v:
            raise ValueError("variants is empty; leave it out for the plain config")
        return v

    def configs(self) -> list[dict[str, Any]]:
        keys = list(self.grid)
        points = [dict(zip(keys, vals, strict=True)) for vals in itertools.product(*self.grid.values())]
        return [{**self.config, **variant, **point} for variant in self.variants for point in points]


class SweepFile(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    timeout_s: float | None = Field(None, gt=0)
    models: list[ModelRef] = Field(default_factory=lambda: [ModelRef()], min_length=1)
    profiles: list[str] = Field(default_factory=lambda: ["auto"], min_length=1)
    tasks: list[TaskSpec] | None = None
    task_sets: list[list[TaskSpec]] | None = Field(None, min_length=1)
    methods: list[MethodEntry] = Field(min_length=1)
    base: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _shorthands(cls, data: Any) -> Any:
        """``- wanda`` for ``- {name: wanda}`` in models, methods, tasks and task_sets."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for key in ("models", "methods", "tasks"):
            if isinstance(data.get(key), list):
                data[key] = [_named(v) for v in data[key]]
        if isinstance(data.get("task_sets"), list):
            data["task_sets"] = [[_named(t) for t in s] if isinstance(s, list) else s for s in data["task_sets"]]
        return data

    @field_validator("base")
    @classmethod
    def _base_keys(cls, v: dict[str, Any]) -> dict[str, Any]:
        axes = {"model", "method", "tasks", "profile"} & set(v)
        if axes:
            raise ValueError(f"{', '.join(sorted(axes))} are grid axes: give them as models, methods, "
                             "tasks / task_sets, profiles at the top level")
        unknown = set(v) - set(RunSpec.model_fields)
        if unknown:
            raise ValueError(f"unknown key(s) {', '.join(sorted(unknown))}; allowed: calibration, "
                             "measure, kernel, seed, corpus")
        return v

    def task_axis(self) -> list[list[TaskSpec]]:
        if self.tasks is not None and self.task_sets is not None:
            raise UsageError(f"The sweep '{self.name}' gives both tasks and task_sets; give one "
                             "(tasks: one set for every run; task_sets: a list of sets, a grid axis).")
        if self.task_sets is not None:
            return self.task_sets
        return [self.tasks] if self.tasks is not None else [None]  # type: ignore[list-item]


@dataclass(frozen=True)
class SweepRun:
    """One expanded grid point: the (unresolved) spec, where it came from, its time limit."""

    spec: RunSpec
    origin: str
    timeout_s: float | None


def _problems(exc: ValidationError) -> str:
    probs = []
    for e in exc.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "(top level)"
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"].removeprefix("Value error, ")
        probs.append(f"{loc}: {msg}")
    return "; ".join(probs)


def parse_sweep(data: Any, origin: str) -> SweepFile:
    if not isinstance(data, dict):
        raise UsageError(f"{origin} must hold a mapping with keys such as name, models, methods, tasks; "
                         f"got {type(data).__name__}.")
    try:
        return SweepFile.model_validate(data)
    except ValidationError as exc:
        raise UsageError(f"{origin} is invalid: {_problems(exc)}. Allowed top-level keys: "
                         f"{', '.join(SweepFile.model_fields)} (see 'sparsebench sweep --help' and the "
                         "README's Sweeps section).") from None


def load_sweep(path: str | Path) -> SweepFile:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"The sweep file '{path}' does not exist.")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise UsageError(f"The sweep file '{path}' is not valid YAML: {exc}") from None
    return parse_sweep(data, f"The sweep file '{path}'")


def expand(sweep: SweepFile) -> list[SweepRun]:
    """Every grid point as a run spec, in file order (models, then methods, tasks, profiles)."""
    runs = []
    for model in sweep.models:
        for mi, entry in enumerate(sweep.methods):
            for config in entry.configs():
                for tasks in sweep.task_axis():
                    for profile in sweep.profiles:
                        data = {**sweep.base, "model": model.model_dump(), "profile": profile,
                                "method": {"name": entry.name, "config": config}}
                        if tasks is not None:
                            data["tasks"] = [t.model_dump() for t in tasks]
                        origin = f"methods[{mi}] ({entry.name} {describe_config(config)})".replace(" )", ")")
                        spec = spec_from_dict(data, origin=f"The sweep '{sweep.name}', {origin},")
                        timeout = entry.timeout_s if entry.timeout_s is not None else sweep.timeout_s
                        runs.append(SweepRun(spec, origin, timeout))
    return runs


def describe_config(config: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in config.items() if k != "version")
