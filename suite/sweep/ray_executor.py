"""The Ray executor: one Ray task per run, on a cluster (``ray://host:10001``, ``auto``) or on
a Ray instance it starts on this machine. Needs the ``dist`` extra (``pip install 'sparsebench[dist]'``).

Each task asks for one GPU when the cluster has GPUs (Ray pins it through
``CUDA_VISIBLE_DEVICES``), otherwise ``cpus_per_task`` CPUs, and runs in a fresh worker
process (``max_calls=1``), so a crash or a leak never reaches the next run, and is never
retried (``max_retries=0``: a crashed run gets a failed record, and a retry could send a
record twice). A task is a
streaming generator: it reports that it started, then each record as the runner produces it;
the driver writes them. A task past its time limit is cancelled with ``force=True``, which
kills its worker process.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError
from .executor import Ended, Event, Executor, Job, Produced, Started


def _task(payload: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Body of a run's Ray task (module level so workers import it by name)."""
    from .worker import execute, probe

    if payload.get("probe"):
        yield {"machine": probe()}
        return
    yield {"started": time.time()}
    messages: queue.Queue[Any] = queue.Queue()

    def work() -> None:
        try:
            execute(payload, messages.put)
        finally:
            messages.put(None)

    threading.Thread(target=work, daemon=True).start()
    while (msg := messages.get()) is not None:
        yield msg


@dataclass
class _Active:
    job: Job
    submitted: float
    started: float | None = None
    error: str | None = None
    killed_for: str | None = None


class RayExecutor(Executor):
    name = "ray"
    description = "a Ray task per run (one GPU each when the cluster has GPUs), on a cluster or a local Ray"

    def __init__(self, address: str | None = None, cpus_per_task: float = 1, gpus_per_task: float | None = None,
                 workers: int | None = None, **_: Any):
        try:
            import ray
        except ImportError:
            raise UsageError("The Ray executor needs Ray, which is not installed: "
                             "pip install 'sparsebench[dist]' (or use --executor local).") from None
        self.ray = ray
        self._owns = False
        t0 = time.monotonic()
        if not ray.is_initialized():
            kw: dict[str, Any] = {"log_to_driver": False}
            if address:
                kw["address"] = address
            else:
                kw["include_dashboard"] = False
            try:
                ray.init(**kw)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise UsageError(f"Cannot start or reach Ray at '{address or 'a new local instance'}': {exc}") from None
            self._owns = True
        self.startup_s = time.monotonic() - t0
        res = ray.cluster_resources()
        gpus = res.get("GPU", 0.0)
        self.gpus_per_task = gpus_per_task if gpus_per_task is not None else (1.0 if gpus else 0.0)
        self.cpus_per_task = cpus_per_task
        fit = int(gpus // self.gpus_per_task) if self.gpus_per_task else int(res.get("CPU", 1) // cpus_per_task)
        self._slots = max(1, min(workers, fit) if workers else fit)
        self._remote = ray.remote(num_cpus=self.cpus_per_task, num_gpus=self.gpus_per_task, max_calls=1,
                                  max_retries=0, num_returns="streaming")(_task)
        self._active: dict[Any, _Active] = {}
        self._machine: dict[str, Any] | None = None
        self.address = address or "local"

    def slots(self) -> int:
        return self._slots

    def describe(self) -> str:
        per = f"{self.gpus_per_task:g} GPU" if self.gpus_per_task else f"{self.cpus_per_task:g} CPU"
        return f"ray ({self.address}): {self._slots} task(s) at a time, {per} each"

    def machine(self) -> dict[str, Any]:
        if self._machine is None:  # as a task sees it (one GPU pinned, on a worker node)
            t0 = time.monotonic()
            gen = self._remote.remote({"probe": True})
            self._machine = self.ray.get(next(gen))["machine"]
            self.startup_s += time.monotonic() - t0
        return self._machine

    def run(self, jobs: list[Job]) -> Iterator[Event]:
        ray = self.ray
        pending = list(jobs)
        try:
            while pending or self._active:
                while pending and len(self._active) < self._slots:
                    job = pending.pop(0)
                    self._active[self._remote.remote(job.payload())] = _Active(job, time.monotonic())
                ready, _ = ray.wait(list(self._active), num_returns=1, timeout=0.2)
                for gen in ready:
                    yield from self._step(gen)
                now = time.monotonic()
                for gen, a in self._active.items():
                    limit = a.job.timeout_s
                    if a.started and limit and now - a.started > limit and not a.killed_for:
                        a.killed_for = f"timeout after {limit:g} s"
                        ray.cancel(gen, force=True)
        finally:
            self._cancel_active()

    def _step(self, gen: Any) -> Iterator[Event]:
        a = self._active[gen]
        try:
            msg = self.ray.get(next(gen))
        except StopIteration:
            del self._active[gen]
            yield Ended(a.job, a.killed_for or a.error, time.monotonic() - a.submitted)
            return
        except Exception as exc:  # the task died: cancelled, worker crashed, out of memory...
            del self._active[gen]
            why = a.killed_for or f"Ray task failed: {type(exc).__name__}: {str(exc).strip().splitlines()[-1][:500]}"
            yield Ended(a.job, why, time.monotonic() - a.submitted, log_tail=str(exc)[-4000:])
            return
        if "started" in msg:
            a.started = time.monotonic()
            yield Started(a.job)
        elif "record" in msg:
            yield Produced(a.job, msg["record"])
        elif "error" in msg:
            a.error = msg["error"]

    def _cancel_active(self) -> None:
        for gen in list(self._active):
            try:
                self.ray.cancel(gen, force=True)
            except Exception:
                pass
        self._active.clear()

    def close(self) -> None:
        self._cancel_active()
        if self._owns and self.ray.is_initialized():
            self.ray.shutdown()
            self._owns = False
