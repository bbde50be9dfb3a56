"""Lazy registries of plugins, filled only from Python entry points.

Built-in methods and tasks are declared in our own ``pyproject.toml`` exactly as a
third-party package declares its own; there is no second registration path. A plugin
that fails to import is reported (``broken``) and skipped, never fatal to the registry.
"""

from __future__ import annotations

import warnings
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Generic, TypeVar

from .errors import UsageError, unknown_name

T = TypeVar("T")

METHODS_GROUP = "sparsebench.methods"
TASKS_GROUP = "sparsebench.tasks"
EXECUTORS_GROUP = "sparsebench.executors"
LINEAR_KERNELS_GROUP = "sparsebench.linear_kernels"
ATTENTION_KERNELS_GROUP = "sparsebench.attention_kernels"


class Registry(Generic[T]):
    """Name -> plugin class, loaded from one entry-point group on first use."""

    def __init__(self, group: str, kind: str, base: type | None = None):
        self.group = group
        self.kind = kind
        self.base = base
        self._eps: dict[str, EntryPoint] | None = None
        self._loaded: dict[str, T] = {}
        self.broken: dict[str, str] = {}

    def _entry_points(self) -> dict[str, EntryPoint]:
        if self._eps is None:
            eps: dict[str, EntryPoint] = {}
            for ep in entry_points(group=self.group):
                if ep.name in eps and eps[ep.name].value != ep.value:
                    warnings.warn(
                        f"{self.kind} '{ep.name}' is declared twice ({eps[ep.name].value} and "
                        f"{ep.value}); keeping the first.",
                        stacklevel=2,
                    )
                    continue
                eps[ep.name] = ep
            self._eps = eps
        return self._eps

    def _load(self, name: str) -> T | None:
        if name in self._loaded:
            return self._loaded[name]
        if name in self.broken:
            return None
        ep = self._entry_points()[name]
        try:
            obj = ep.load()
            if self.base is not None and not (isinstance(obj, type) and issubclass(obj, self.base)):
                raise TypeError(f"{ep.value} is not a subclass of {self.base.__name__}")
        except Exception as exc:  # a broken third-party plugin must not take us down
            self.broken[name] = f"{type(exc).__name__}: {exc}"
            warnings.warn(
                f"Skipping broken {self.kind} plugin '{name}' ({ep.value}): {exc}", stacklevel=2
            )
            return None
        self._loaded[name] = obj
        return obj

    def names(self) -> list[str]:
        """Names of the plugins that load (broken ones are left out and listed in ``broken``)."""
        return sorted(n for n in self._entry_points() if self._load(n) is not None)

    def get(self, name: str) -> T:
        eps = self._entry_points()
        if name in eps:
            obj = self._load(name)
            if obj is not None:
                return obj
            raise UsageError(
                f"The {self.kind} '{name}' is installed but failed to load: {self.broken[name]}. "
                f"Working {self.kind}s: {', '.join(self.names())}."
            )
        raise unknown_name(self.kind, name, self.names())

    def items(self) -> list[tuple[str, T]]:
        return [(n, self.get(n)) for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._entry_points() and self._load(name) is not None


def methods() -> Registry[Any]:
    from .api import Method

    return _cached(METHODS_GROUP, "method", Method)


def tasks() -> Registry[Any]:
    from .api import Task

    return _cached(TASKS_GROUP, "task", Task)


def executors() -> Registry[Any]:
    from .sweep.executor import Executor

    return _cached(EXECUTORS_GROUP, "executor", Executor)


def linear_kernels() -> Registry[Any]:
    """One-row linear kernels for the GPU decode path (callables with ``describe()``)."""
    return _cached(LINEAR_KERNELS_GROUP, "linear kernel", None)


def attention_kernels() -> Registry[Any]:
    """Decode attention kernels over a contiguous KV cache (callables with ``describe()``)."""
    return _cached(ATTENTION_KERNELS_GROUP, "attention kernel", None)


_CACHE: dict[str, Registry[Any]] = {}


def _cached(group: str, kind: str, base: type | None) -> Registry[Any]:
    if group not in _CACHE:
        _CACHE[group] = Registry(group, kind, base)
    return _CACHE[group]
