"""The default executor: a fresh child process per run on this machine.

With visible GPUs it keeps one run per GPU (the child sees only its GPU through
``CUDA_VISIBLE_DEVICES``); on a CPU-only machine runs go one after another, since each run
uses every core and latency measured beside another run would be wrong. Each child is a
session leader, so a timeout kills it with everything it started.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .executor import Ended, Event, Executor, Job, Produced, Started, signal_reason

LOG_TAIL = 4000


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


class _Child:
    def __init__(self, job: Job, gpu: str | None, logs: Path, events: queue.Queue[Any]):
        self.job = job
        self.gpu = gpu
        self.log_path = logs / f"{job.index:04d}.log"
        env = dict(os.environ)
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        read, write = os.pipe()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sparsebench.sweep.worker", str(write)],
                stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, pass_fds=(write,),
                env=env, start_new_session=True)
        os.close(write)
        self.started = time.monotonic()
        self.deadline = self.started + job.timeout_s if job.timeout_s else None
        self.killed_for: str | None = None
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(job.payload()) + "\n").encode())
        self.proc.stdin.flush()  # stdin stays open: its end-of-file tells the child we are gone
        self.reader = threading.Thread(target=self._read, args=(read, events), daemon=True)
        self.reader.start()

    def _read(self, fd: int, events: queue.Queue[Any]) -> None:
        error = None
        with os.fdopen(fd) as pipe:
            for line in pipe:
                msg = json.loads(line)
                if "record" in msg:
                    events.put(Produced(self.job, msg["record"]))
                elif "error" in msg:
                    error = msg["error"]
        code = self.proc.wait()
        if self.killed_for:
            error = self.killed_for
        elif error is None and code not in (0,):
            error = signal_reason(code)
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
        except ProcessLookupError:
            pass

    def close_stdin(self) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        except OSError:
            pass


class LocalExecutor(Executor):
    name = "local"
    description = "a child process per run: one per visible GPU at a time, or one at a time on CPU"

    def __init__(self, workers: int | None = None, logs: str | Path | None = None, **_: Any):
        self.gpus = visible_gpus()
        self._slots = workers or max(1, len(self.gpus))
        self._logs = Path(logs) if logs else None
        self._running: dict[int, _Child] = {}
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

                self._machine = probe()
        return self._machine

    def _probe(self) -> dict[str, Any]:
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": self.gpus[0]}
        read, write = os.pipe()
        proc = subprocess.Popen([sys.executable, "-m", "sparsebench.sweep.worker", str(write)],
                                stdin=subprocess.PIPE, pass_fds=(write,), env=env)
        os.close(write)
        assert proc.stdin is not None
        proc.stdin.write(b'{"probe": true}\n')
        proc.stdin.flush()
        with os.fdopen(read) as pipe:
            msg = json.loads(pipe.readline() or "{}")
        proc.stdin.close()
        proc.wait()
        if "machine" not in msg:
            raise RuntimeError(f"could not probe the machine in a child process (exit code {proc.returncode})")
        return msg["machine"]

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
                    self._running[job.index] = _Child(job, gpu, self.logs, events)
                    yield Started(job)
                try:
                    event = events.get(timeout=0.2)
                except queue.Empty:
                    event = None
                if event is not None:
                    if isinstance(event, Ended):
                        child = self._running.pop(event.job.index)
                        child.close_stdin()
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
            child.close_stdin()
        self._running.clear()
