"""Load hardware profiles, pick the one matching this machine, and fingerprint the machine.

A profile is a YAML file: ``id``, ``description``, ``device`` (cpu|cuda), default ``dtype``,
``match`` rules and optional ``peak`` figures. The most specific matching profile wins
(one with ``name_contains`` beats a generic one). Users may pass a YAML path instead of an id.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import UsageError, unknown_name


class Match(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    device: Literal["cpu", "cuda"]
    name_contains: tuple[str, ...] = ()


class Profile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    description: str
    device: Literal["cpu", "cuda"]
    dtype: Literal["float32", "bfloat16", "float16"]
    match: Match
    peak: dict[str, float] = Field(default_factory=dict)

    def matches(self, machine: dict[str, Any]) -> bool:
        if self.match.device == "cpu":
            return True  # every machine has a CPU
        if not machine.get("cuda_available"):
            return False
        name = machine.get("gpu_name") or ""
        return all(s.lower() in name.lower() for s in self.match.name_contains)


def _parse(text: str, origin: str) -> Profile:
    try:
        return Profile.model_validate(yaml.safe_load(text))
    except (yaml.YAMLError, ValidationError) as exc:
        raise UsageError(f"The hardware profile {origin} is invalid: {exc}") from None


def load_profiles() -> dict[str, Profile]:
    out = {}
    for entry in resources.files(__package__).iterdir():
        if entry.name.endswith(".yaml"):
            prof = _parse(entry.read_text(), entry.name)
            out[prof.id] = prof
    return out


def machine_info() -> dict[str, Any]:
    """What this machine is, cheaply (no CUDA context is created when there is no GPU)."""
    import psutil
    import torch

    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_bytes": psutil.virtual_memory().total,
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
    }
    if info["cuda_available"]:
        props = torch.cuda.get_device_properties(0)
        info.update(
            gpu_name=props.name,
            gpu_count=torch.cuda.device_count(),
            gpu_memory_bytes=props.total_memory,
            cuda_version=torch.version.cuda,
            capability=f"{props.major}.{props.minor}",
            driver=_nvidia_driver(),
        )
    return info


def fingerprint(machine: dict[str, Any]) -> dict[str, Any]:
    """The machine facts plus a short hash of the ones that bear on speed."""
    stable = {k: machine.get(k) for k in ("cpu", "cpu_count", "memory_bytes", "gpu_name",
                                          "gpu_count", "driver", "cuda_version")}
    digest = hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()[:12]
    return {**machine, "id": digest}


def select_profile(requested: str, machine: dict[str, Any]) -> Profile:
    """``auto`` picks the most specific profile matching ``machine``; else an id or a YAML path."""
    profiles = load_profiles()
    if requested == "auto":
        fits = [p for p in profiles.values() if p.matches(machine)]
        fits.sort(key=lambda p: (p.match.device == "cuda", len(p.match.name_contains)), reverse=True)
        return fits[0]
    if requested in profiles:
        return profiles[requested]
    path = Path(requested)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise UsageError(f"The hardware profile file '{requested}' does not exist.")
        return _parse(path.read_text(), str(path))
    raise unknown_name("profile", requested, list(profiles) + ["auto"])


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _nvidia_driver() -> str | None:
    try:
        return Path("/proc/driver/nvidia/version").read_text().split("Kernel Module")[1].split()[0]
    except (OSError, IndexError):
        return None
