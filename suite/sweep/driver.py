"""Run a plan through an executor: the driver is the only writer of records.

Baselines run first (one wave), then the method runs, each handed the ok baseline records
of its setting so it reuses them. Every record a job produces is written atomically as it
arrives (``ResultsStore.write``: temp file + link) and logged to MLflow under the sweep's
parent run. A job whose process ends without its own record (timeout, exception outside the
runner, segfault, out-of-memory kill) gets a ``failed`` record written here with the reason.
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ..api import RunRecord
from ..store import ResultsStore, new_run_id
from .executor import Ended, Executor, Job, Produced, Started
from .plan import Plan, PlannedRun


@dataclass
class Outcome:
    label: str
    status: str  # ok | failed | skipped | not run
    run_id: str | None = None
    error: str | None = None
    wall_s: float | None = None
    overhead_s: float | None = None


@dataclass
class Summary:
    plan: Plan
    executor: str
    outcomes: list[Outcome] = field(default_factory=list)
    written: int = 0
    startup_s: float = 0.0

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def exit_code(self) -> int:
        return 1 if any(o.status in ("failed", "not run") for o in self.outcomes) else 0

    def overhead(self) -> tuple[float, float] | None:
        """Median and mean seconds per run spent outside the run's measured phases."""
        xs = [o.overhead_s for o in self.outcomes if o.overhead_s is not None]
        return (statistics.median(xs), statistics.fmean(xs)) if xs else None

    def render(self) -> str:
        done = len(self.plan.runs) - len(self.plan.todo())
        lines = [f"sweep '{self.plan.sweep.name}' with {self.executor}: {self.count('ok')} ok, "
                 f"{self.count('failed')} failed, {self.count('skipped')} skipped, "
                 f"{self.count('not run')} not run, {done} already done before; "
                 f"{self.written} record(s) written"]
        ov = self.overhead()
        if ov:
            lines.append(f"executor overhead per run (process wall time minus the run's measured "
                         f"phases): median {ov[0]:.2f} s, mean {ov[1]:.2f} s; executor start-up "
                         f"{self.startup_s:.1f} s once")
        bad = [o for o in self.outcomes if o.status in ("failed", "not run")]
        if bad:
            lines.append("failures:")
            lines += [f"  {o.status:8s} {o.label}: {o.error}" + (f" [{o.run_id}]" if o.run_id else "")
                      for o in bad]
        return "\n".join(lines)


class Driver:
    def __init__(self, plan: Plan, executor: Executor, store: ResultsStore, *,
                 sinks: list[Any] | None = None, progress: bool = True,
                 echo: Callable[[str], None] | None = None):
        self.plan = plan
        self.executor = executor
        self.store = store
        self.sinks = sinks or []
        self.show_progress = progress
        self.echo = echo or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.summary = Summary(plan, executor.describe())
        self.parents: dict[int, str] = {}
        self._bar: Any = None
        self._produced: dict[int, list[RunRecord]] = {}

    # ------------------------------------------------------------------ public

    def run(self) -> Summary:
        from tqdm.auto import tqdm

        todo = self.plan.todo()
        self._bar = tqdm(total=len(todo), desc=f"sweep {self.plan.sweep.name}", unit="run",
                         file=sys.stderr, disable=not self.show_progress, dynamic_ncols=True)
        self._start_parents()
        status = "FAILED"
        try:
            base_jobs = [self._job(i, r) for i, r in enumerate(self.plan.baselines) if r.done is None]
            self._wave(base_jobs)
            method_jobs = []
            offset = len(self.plan.baselines)
            wanted = {r.baseline_key for r in self.plan.methods if r.done is None}
            ok: dict[str, list[RunRecord]] = {}
            here = self.plan.machine.get("id")
            for rec in self.store:  # read once: the ok baselines the runner may reuse (this machine's)
                if (rec.status == "ok" and rec.spec_key in wanted
                        and rec.hardware.get("fingerprint", {}).get("id") == here):
                    ok.setdefault(rec.spec_key, []).append(rec)
            for i, r in enumerate(self.plan.methods):
                if r.done is not None:
                    continue
                prior = ok.get(r.baseline_key or "", [])
                if not prior:
                    base = next(b for b in self.plan.baselines if b.key == r.baseline_key)
                    self._outcome(Outcome(r.label, "not run", error=f"its dense baseline ({base.label}) "
                                          "has no ok record on this machine"))
                    continue
                job = self._job(offset + i, r)
                job.baselines = [rec.model_dump(mode="json") for rec in prior]
                method_jobs.append(job)
            self._wave(method_jobs)
            status = "FINISHED" if self.summary.exit_code == 0 else "FAILED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            self.summary.startup_s = self.executor.startup_s
            self.executor.close()
            self._bar.close()
            self._finish_parents(status)
        return self.summary

    # ------------------------------------------------------------------ pieces

    def _job(self, index: int, r: PlannedRun) -> Job:
        return Job(index=index, label=r.label, spec=r.spec.model_dump(mode="json"), spec_key=r.key,
                   timeout_s=r.timeout_s)

    def _wave(self, jobs: list[Job]) -> None:
        if not jobs:
            return
        for event in self.executor.run(jobs):
            if isinstance(event, Started):
                self._bar.set_postfix_str(event.job.label[:60], refresh=True)
            elif isinstance(event, Produced):
                rec = RunRecord.model_validate(event.record)
                self._write(rec)
                self._produced.setdefault(event.job.index, []).append(rec)
            elif isinstance(event, Ended):
                self._ended(event)

    def _ended(self, event: Ended) -> None:
        job = event.job
        produced = self._produced.pop(job.index, [])
        own = next((r for r in produced if r.spec_key == job.spec_key), None)
        if own is None:
            own = self._failure(job, event.error or "worker ended without a record", event.log_tail)
            self._write(own)
            overhead = None
        else:
            overhead = max(0.0, event.wall_s - sum(sum(r.phases.values()) for r in produced))
        error = own.error or own.reason
        self._outcome(Outcome(job.label, own.status, own.run_id, error, event.wall_s, overhead))

    def _outcome(self, o: Outcome) -> None:
        self.summary.outcomes.append(o)
        n = len(self.summary.outcomes)
        wall = f"{o.wall_s:7.1f} s" if o.wall_s is not None else " " * 9
        why = f"  ({o.error})" if o.status != "ok" and o.error else ""
        line = f"[{n:>3}/{self._bar.total}] {o.status:8s} {wall}  {o.label}{why}"
        if self.show_progress:
            self._bar.write(line, file=sys.stderr)
        else:
            self.echo(line)
        self._bar.update(1)

    def _failure(self, job: Job, error: str, log_tail: str) -> RunRecord:
        from ..environment import environment

        rec = RunRecord(
            run_id=new_run_id(job.spec["method"]["name"]), spec_key=job.spec_key,
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), status="failed",
            error=error, spec=job.spec, env=environment(),
            hardware={"profile": job.spec["profile"], "fingerprint": self.plan.machine},
            notes=["written by the sweep driver: the run's process ended without a record"],
        )
        if job.baselines:
            base = max((RunRecord.model_validate(b) for b in job.baselines), key=lambda b: b.created_at)
            rec.baseline = {"run_id": base.run_id, "spec_key": base.spec_key, "reused": True}
        if log_tail:
            rec.notes.append("last lines of the run's output:\n" + log_tail)
        return rec

    def _write(self, rec: RunRecord) -> None:
        self.store.write(rec)
        self.summary.written += 1
        for i, sink in enumerate(self.sinks):
            try:
                sink.log(rec, parent_run_id=self.parents.get(i))
            except Exception as exc:  # the record on disk is the source of truth
                self.echo(f"{type(sink).__name__} could not log {rec.run_id}: {type(exc).__name__}: {exc}")

    def _start_parents(self) -> None:
        info = {"sweep.name": self.plan.sweep.name, "sweep.executor": self.executor.name,
                "sweep.runs": str(len(self.plan.runs)), "sweep.to_run": str(len(self.plan.todo())),
                "sweep.machine": str(self.plan.machine.get("id"))}
        for i, sink in enumerate(self.sinks):
            try:
                self.parents[i] = sink.start_parent(f"sweep {self.plan.sweep.name}", info)
            except Exception as exc:
                self.echo(f"{type(sink).__name__} could not start the sweep's parent run: {exc}")

    def _finish_parents(self, status: str) -> None:
        for i, sink in enumerate(self.sinks):
            if i in self.parents:
                try:
                    sink.finish_parent(self.parents[i], status, {
                        "runs_ok": self.summary.count("ok"), "runs_failed": self.summary.count("failed"),
                        "runs_skipped": self.summary.count("skipped"),
                        "runs_not_run": self.summary.count("not run")})
                except Exception as exc:
                    self.echo(f"{type(sink).__name__} could not close the sweep's parent run: {exc}")
