"""The default executor: a fresh child process per run on this machine.

With visible GPUs it keeps one run per GPU (the child sees only its GPU through
``CUDA_VISIBLE_DEVICES``); on a CPU-only machine runs go one after another, since each run
uses every core and latency measured beside another run would be wrong.

Children are forked from a multiprocessing *forkserver* that imported torch, transformers
and the runner once (it never touches CUDA), so a run starts in well under a second instead
of paying those imports again; each child is still a separate process. A child becomes a
session leader (a timeout kills it with everything it started), writes its output to a log
file, sends records over a pipe, and watches a second "lifeline" pipe: when the driver dies,
even by SIGKILL, the lifeline closes and the child exits instead of running on as an orphan.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .executor import Ended, Event, Executor, Job, Produced, Started, signal_reason

LOG_TAIL = 4000
PRELOAD = ["sparsebench.sweep.worker", "sparsebench.runner", "torch", "transformers",
           "transformers.modeling_utils", "transformers.models.auto.modeling_auto",
           "transformers.models.llama.modeling_llama"]


def visible_gpus() -> list[str]:
    """GPU ids a child may be pinned to (honours an existing ``CUDA_VISIBLE_DEVICES``)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # no usable torch CUDA: CPU only
        return []


def _context() -> Any:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def _child(payload: dict[str, Any], out: Any, lifeline: Any, log_path: str, gpu: str | None) -> None:
    """Body of a run's process (forked from the forkserver)."""
    os.setsid()
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu

    def watch() -> None:
        try:
            lifeline.recv()
        except (EOFError, OSError):
            pass
        os._exit(3)  # the driver is gone: nobody would write what this run produces

    threading.Thread(target=watch, daemon=True).start()
    try:  # a thread lock for tqdm: its default multiprocessing lock leaks when a run is killed
        from tqdm import tqdm

        tqdm.set_lock(threading.RLock())
    except ImportError:
        pass
    from .worker import execute, probe

    if payload.get("probe"):
        out.send({"machine": probe()})
    else:
        execute(payload, out.send)
    out.close()


class _Run:
    """One child process and the thread that turns its messages into events."""

    def __init__(self, ctx: Any, job: Job, gpu: str | None, log_path: Path, events: queue.Queue[Any] | None):
        self.job = job
        self.log_path = log_path
        read, write = ctx.Pipe(duplex=False)
        self.life_read, self.life_write = ctx.Pipe(duplex=False)
        payload = {"probe": True} if job.index < 0 else job.payload()
        self.proc = ctx.Process(target=_child, args=(payload, write, self.life_read, str(log_path), gpu),
                                daemon=False, name=f"sparsebench-run-{job.index}")
        self.proc.start()
        write.close()  # only the child holds the writing end: its exit gives us EOF
        self.life_read.close()
        self.started = time.monotonic()
        self.deadline = self.started + job.timeout_s if job.timeout_s else None
        self.killed_for: str | None = None
        self.messages = read
        if events is not None:
            threading.Thread(target=self._relay, args=(events,), daemon=True).start()

    def _relay(self, events: queue.Queue[Any]) -> None:
        error = None
        while True:
            try:
                msg = self.messages.recv()
            except (EOFError, OSError):
                break
            if "record" in msg:
                events.put(Produced(self.job, msg["record"]))
            elif "error" in msg:
                error = msg["error"]
        self.proc.join()
        code = self.proc.exitcode
        if self.killed_for:
            error = self.killed_for
        elif error is None and code != 0:
            error = signal_reason(code if code is not None else -1)
        self.life_write.close()
        events.put(Ended(self.job, error, time.monotonic() - self.started, self._tail()))

    def _tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-LOG_TAIL:]
        except OSError:
            return ""

    def kill(self, reason: str) -> None:
        self.killed_for = reason
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError, TypeError):
            self.proc.kill()  # not yet a session leader


class LocalExecutor(Executor):
    name = "local"
    description = "a child process per run: one per visible GPU at a time, or one at a time on CPU"

    def __init__(self, workers: int | None = None, logs: str | Path | None = None, **_: Any):
        self.gpus = visible_gpus()
        self._slots = workers or max(1, len(self.gpus))
        self._logs = Path(logs) if logs else None
        self._running: dict[int, _Run] = {}
        self._ctx: Any = None
        self._machine: dict[str, Any] | None = None

    def slots(self) -> int:
        return self._slots

    @property
    def logs(self) -> Path:
        """Where each run's output goes (made on first use)."""
        if self._logs is None:
            self._logs = Path(tempfile.mkdtemp(prefix="sparsebench-sweep-logs-"))
        self._logs.mkdir(parents=True, exist_ok=True)
        return self._logs

    def describe(self) -> str:
        where = f"GPUs {','.join(self.gpus)}" if self.gpus else "CPU"
        logs = f"; logs in {self._logs}" if self._logs else ""
        return f"local: {self._slots} child process(es) at a time on {where}{logs}"

    def machine(self) -> dict[str, Any]:
        if self._machine is None:
            if self.gpus:  # a child sees one GPU, which changes the fingerprint: ask one
                self._machine = self._probe()
            else:
                from .worker import probe

                t0 = time.monotonic()
                self._machine = probe()
                self.startup_s += time.monotonic() - t0
        return self._machine

    def _probe(self) -> dict[str, Any]:
        run = self._start(Job(index=-1, label="probe", spec={}, spec_key=""), self.gpus[0], None)
        try:
            msg = run.messages.recv()
        except EOFError:
            msg = {}
        run.proc.join()
        run.life_write.close()
        if "machine" not in msg:
            raise RuntimeError(f"could not probe the machine in a child process; see {run.log_path}")
        return msg["machine"]

    def _context(self) -> Any:
        if self._ctx is None:
            self._ctx = _context()
        return self._ctx

    def _start(self, job: Job, gpu: str | None, events: queue.Queue[Any] | None) -> _Run:
        first = self._ctx is None
        t0 = time.monotonic()
        run = _Run(self._context(), job, gpu, self.logs / ("probe.log" if job.index < 0 else f"{job.index:04d}.log"),
                   events)
        if first:  # the forkserver imported torch and transformers before forking this child
            self.startup_s += time.monotonic() - t0
        return run

    def run(self, jobs: list[Job]) -> Iterator[Event]:
        events: queue.Queue[Any] = queue.Queue()
        pending = list(jobs)
        free = list(self.gpus[: self._slots]) if self.gpus else [None] * self._slots
        gpu_of: dict[int, str | None] = {}
        try:
            while pending or self._running:
                while pending and free:
                    job = pending.pop(0)
                    gpu = free.pop(0)
                    gpu_of[job.index] = gpu
                    self._running[job.index] = self._start(job, gpu, events)
                    yield Started(job)
                try:
                    event = events.get(timeout=0.2)
                except queue.Empty:
                    event = None
                if event is not None:
                    if isinstance(event, Ended):
                        self._running.pop(event.job.index)
                        free.append(gpu_of.pop(event.job.index))
                    yield event
                now = time.monotonic()
                for child in self._running.values():
                    if child.deadline and now > child.deadline and not child.killed_for:
                        child.kill(f"timeout after {child.job.timeout_s:g} s")
        finally:
            self._stop_running()

    def close(self) -> None:
        self._stop_running()

    def _stop_running(self) -> None:
        for child in list(self._running.values()):
            child.kill("sweep stopped")
        self._running.clear()
