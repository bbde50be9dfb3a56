"""The interface every sweep executor implements (entry-point group ``sparsebench.executors``).

An executor runs jobs, each in its own process (a child process, a Ray task...), and reports
what happens as a stream of events. It never writes records: the sweep driver is the only
writer, so a run killed at any moment can neither tear a record nor write one twice.

- ``Started(job)``: the job's process began (its time limit counts from here);
- ``Produced(job, record)``: the run produced a record (a JSON dict), e.g. a dense baseline
  it had to measure, then the job's own record;
- ``Ended(job, error, wall_s, log_tail)``: the job's process is gone. ``error`` is None when
  the process ended by itself after reporting; otherwise it says why (``timeout after 60 s``,
  ``exit code -9 (SIGKILL; out of memory?)``, an exception that escaped the runner) and the
  driver writes the ``failed`` record.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass
class Job:
    """One run to execute: a resolved spec, the baseline records it may reuse, its limit."""

    index: int
    label: str
    spec: dict[str, Any]
    spec_key: str
    timeout_s: float | None = None
    baselines: list[dict[str, Any]] = field(default_factory=list)

    def payload(self) -> dict[str, Any]:
        """What the worker needs (JSON-serialisable)."""
        return {"spec": self.spec, "spec_key": self.spec_key, "baselines": self.baselines}


@dataclass
class Started:
    job: Job


@dataclass
class Produced:
    job: Job
    record: dict[str, Any]


@dataclass
class Ended:
    job: Job
    error: str | None
    wall_s: float
    log_tail: str = ""


Event = Started | Produced | Ended


class Executor(ABC):
    """Runs jobs in isolated processes; see the module docstring for the events."""

    name: ClassVar[str]
    description: ClassVar[str]
    #: seconds spent starting the executor itself (a forkserver, a Ray instance), once per sweep
    startup_s: float = 0.0

    @abstractmethod
    def machine(self) -> dict[str, Any]:
        """The fingerprint of the machine the runs execute on, as a run sees it (its ``id``
        decides which existing records count as done and which baselines are reused)."""

    @abstractmethod
    def slots(self) -> int:
        """How many runs execute at once."""

    @abstractmethod
    def run(self, jobs: list[Job]) -> Iterator[Event]:
        """Execute ``jobs`` (in order, ``slots()`` at a time) and yield their events."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Stop whatever still runs and free resources (called on errors and interrupts)."""

    def describe(self) -> str:
        return f"{self.name} ({self.slots()} at a time)"


def signal_reason(code: int) -> str:
    """``exit code -9 (SIGKILL ...)`` for a child's return code."""
    import signal

    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = "; killed, out of memory?" if name == "SIGKILL" else ""
        return f"worker died from {name}{hint} (exit code {code})"
    return f"worker exited with code {code} before reporting a record"
