"""From a sweep file to a plan: resolved specs, one dense baseline per setting, what is done.

Every grid point is resolved against the registries and the executor's machine before
anything runs (a bad option anywhere stops the sweep with exit 2). Method runs that share a
setting (model, tasks, profile, measurement) share one dense baseline; the plan lists each
distinct baseline once and runs it first, so the method runs reuse its record.

"Already done" means an ``ok`` record with the same spec key made on the same machine (the
fingerprint of the machine the runs execute on, as the runner uses it to reuse baselines).
Failed and skipped records do not count: those runs are tried again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..api import RunRecord, RunSpec
from ..errors import UsageError
from ..resolve import baseline_of, resolve
from ..store import ResultsStore
from .file import SweepFile, describe_config, expand


@dataclass
class PlannedRun:
    spec: RunSpec  # resolved
    label: str
    timeout_s: float | None
    baseline_key: str | None = None  # None for a dense run
    done: RunRecord | None = None
    users: int = 0  # for a baseline: how many method runs of this sweep compare with it
    explicit: bool = False  # a dense run listed in the sweep itself

    @property
    def key(self) -> str:
        return self.spec.key()


@dataclass
class Plan:
    sweep: SweepFile
    machine: dict[str, Any]
    baselines: list[PlannedRun] = field(default_factory=list)
    methods: list[PlannedRun] = field(default_factory=list)
    grid_points: int = 0

    @property
    def runs(self) -> list[PlannedRun]:
        return self.baselines + self.methods

    def todo(self) -> list[PlannedRun]:
        return [r for r in self.runs if r.done is None]

    def render(self) -> str:
        s = self.sweep
        n_tasks = len(s.task_axis())
        configs = sum(len(m.configs()) for m in s.methods)
        lines = [
            f"sweep '{s.name}': {self.grid_points} grid point(s) = {len(s.models)} model(s) x {configs} "
            f"method config(s) x {n_tasks} task set(s) x {len(s.profiles)} profile(s)",
            f"{len(self.runs)} distinct run(s): {len(self.baselines)} dense baseline(s) (run first) + "
            f"{len(self.methods)} method run(s); already done: {len(self.runs) - len(self.todo())} "
            f"(ok record, same spec key, machine {self.machine.get('id')}); to run: {len(self.todo())}",
        ]
        for r in self.runs:
            state = f"done {r.done.run_id}" if r.done else "to run"
            extra = f"  (baseline of {r.users})" if r.baseline_key is None and r.users else ""
            lines.append(f"  {state:44s} {r.label}{extra}")
        return "\n".join(lines)


def label_of(spec: RunSpec) -> str:
    cfg = describe_config(spec.method.config)
    tasks = "+".join(t.name for t in spec.tasks)
    return f"{spec.method.name}{' ' + cfg if cfg else ''} | {spec.model.name} | {tasks} | {spec.profile}"


def build_plan(sweep: SweepFile, machine: dict[str, Any], store: ResultsStore) -> Plan:
    plan = Plan(sweep, machine)
    baselines: dict[str, PlannedRun] = {}
    methods: dict[str, PlannedRun] = {}
    runs = expand(sweep)
    plan.grid_points = len(runs)
    for run in runs:
        try:
            spec = resolve(run.spec, machine).spec
        except UsageError as exc:
            raise UsageError(f"The sweep '{sweep.name}', {run.origin}: {exc}") from None
        if spec.method.name == "dense":
            base = baselines.setdefault(spec.key(), PlannedRun(spec, label_of(spec), run.timeout_s))
            base.explicit = True
            if run.timeout_s is not None:
                base.timeout_s = run.timeout_s  # an explicit dense entry's limit wins
            continue
        if spec.key() in methods:
            continue  # the same run twice in the grid
        base_spec = resolve(baseline_of(spec), machine).spec
        base = baselines.setdefault(base_spec.key(), PlannedRun(base_spec, label_of(base_spec), sweep.timeout_s))
        base.users += 1
        methods[spec.key()] = PlannedRun(spec, label_of(spec), run.timeout_s, baseline_key=base_spec.key())
    done = index_done(store, machine.get("id"))
    for r in [*baselines.values(), *methods.values()]:
        r.done = done.get(r.key)
    # a baseline is needed when listed in the sweep, or when a method run still to do uses it
    needed = {m.baseline_key for m in methods.values() if m.done is None}
    plan.baselines = [b for b in baselines.values() if b.explicit or b.done or b.key in needed]
    plan.methods = list(methods.values())
    return plan


def index_done(store: ResultsStore, machine_id: str | None) -> dict[str, RunRecord]:
    """Newest ok record per spec key made on ``machine_id`` (reads every record once)."""
    out: dict[str, RunRecord] = {}
    for rec in store:
        if rec.status != "ok" or rec.hardware.get("fingerprint", {}).get("id") != machine_id:
            continue
        if rec.spec_key not in out or rec.created_at > out[rec.spec_key].created_at:
            out[rec.spec_key] = rec
    return out
