"""Turn a user's ``RunSpec`` into a fully explicit one, without loading any model or data.

Resolution validates everything a run needs up front (method and task names and configs,
model source, hardware profile, corpus), so bad input fails in a second with a clear
message and nothing is written. The resolved spec has every default filled in (configs
with their versions, concrete dtype and profile), which makes ``key()`` meaningful.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from . import registry
from .api import Method, MethodSpec, ModelRef, PluginConfig, RunSpec, Task, TaskSpec
from .data import resolve_corpus
from .errors import UsageError
from .models import ModelSource, resolve_model
from .profiles import Profile, select_profile


@dataclass
class Resolved:
    spec: RunSpec
    method: Method
    tasks: list[Task]
    source: ModelSource
    profile: Profile

    @property
    def device(self) -> str:
        return "cuda" if self.profile.device == "cuda" else "cpu"


def describe_fields(cfg_cls: type[PluginConfig]) -> str:
    parts = []
    for name, f in cfg_cls.model_fields.items():
        ann = getattr(f.annotation, "__name__", None) or str(f.annotation).replace("typing.", "")
        parts.append(f"{name} ({ann}, default {f.default!r})")
    return ", ".join(parts) if parts else "(no options)"


def config_error(kind: str, name: str, cfg_cls: type[PluginConfig], exc: ValidationError) -> UsageError:
    probs = []
    for e in exc.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "config"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown option"
        probs.append(f"{loc}: {msg}")
    return UsageError(
        f"Invalid config for {kind} '{name}': {'; '.join(probs)}. "
        f"Allowed options: {describe_fields(cfg_cls)}."
    )


def build_config(kind: str, name: str, cls: Any, data: dict[str, Any]) -> PluginConfig:
    try:
        return cls.Config.from_dict(data)
    except ValidationError as exc:
        raise config_error(kind, name, cls.Config, exc) from None
    except ValueError as exc:  # raised inside a 'before' validator
        raise UsageError(f"Invalid config for {kind} '{name}': {exc}. "
                         f"Allowed options: {describe_fields(cls.Config)}.") from None


def resolve(spec: RunSpec, machine: dict[str, Any]) -> Resolved:
    method_cls = registry.methods().get(spec.method.name)
    method_cfg = build_config("method", spec.method.name, method_cls, spec.method.config)
    task_objs: list[Task] = []
    task_specs: list[TaskSpec] = []
    seen = set()
    if not spec.tasks:
        raise UsageError("A run needs at least one task. Known tasks: " + ", ".join(registry.tasks().names()))
    for t in spec.tasks:
        if t.name in seen:
            raise UsageError(f"Task '{t.name}' is listed twice; list each task once.")
        seen.add(t.name)
        tcls = registry.tasks().get(t.name)
        tcfg = build_config("task", t.name, tcls, t.config)
        task_objs.append(tcls(tcfg))
        task_specs.append(TaskSpec(name=t.name, config=tcfg.to_dict()))
    source = resolve_model(spec.model.name, spec.model.revision)
    source.check()
    profile = select_profile(spec.profile, machine)
    corpus = resolve_corpus(spec.corpus)
    dtype = profile.dtype if spec.model.dtype == "auto" else spec.model.dtype
    calibration = spec.calibration if method_cls.needs_calibration else None
    if method_cls.needs_calibration and calibration is None:
        raise UsageError(f"Method '{method_cls.name}' needs calibration data; give a calibration section.")
    measure = spec.measure
    if measure.fuse_projections is None and measure.enabled and profile.device == "cuda":
        # GPU latency fuses q/k/v and gate/up by default: say so in the key, so a fused
        # record is never compared with (or reused as) an unfused one of the same settings
        measure = measure.model_copy(update={"fuse_projections": True})
    resolved = RunSpec(
        model=ModelRef(name=source.name, dtype=dtype, revision=spec.model.revision),
        method=MethodSpec(name=method_cls.name, family=method_cls.family, config=method_cfg.to_dict()),
        tasks=tuple(task_specs),
        corpus=corpus.id,
        profile=profile.id,
        calibration=calibration,
        measure=measure,
        kernel=spec.kernel,
        seed=spec.seed,
    )
    return Resolved(resolved, method_cls(method_cfg), task_objs, source, profile)


def baseline_of(spec: RunSpec) -> RunSpec:
    """The dense run measured beside ``spec`` (same model, tasks, profile, measurement)."""
    dense_cls = registry.methods().get("dense")
    cfg = dense_cls.Config()
    return spec.model_copy(update={
        "method": MethodSpec(name="dense", family=dense_cls.family, config=cfg.to_dict()),
        "calibration": None,
    })
