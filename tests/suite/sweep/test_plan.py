"""The plan: one dense baseline per setting, and 'already done' = ok record, same key, same machine."""

from pathlib import Path

from sparsebench.api import RunRecord
from sparsebench.resolve import resolve
from sparsebench.store import ResultsStore, new_run_id
from sparsebench.sweep import expand, load_sweep, parse_sweep
from sparsebench.sweep.plan import build_plan

MACHINE = {"id": "m1", "cuda_available": False}
PRUNING = Path(__file__).resolve().parents[3] / "sweeps" / "pruning.yaml"


def _record(spec, status="ok", machine="m1"):
    return RunRecord(run_id=new_run_id(spec.method.name), spec_key=spec.key(), created_at="2026-11-22T00:00:00+00:00",
                     status=status, spec=spec.model_dump(mode="json"), hardware={"fingerprint": {"id": machine}})


def test_shipped_pruning_sweep_plans_one_baseline_first(tmp_path):
    plan = build_plan(load_sweep(PRUNING), MACHINE, ResultsStore(tmp_path))
    assert [r.spec.method.name for r in plan.runs] == ["dense", "magnitude", "magnitude", "wanda", "wanda"]
    assert len(plan.baselines) == 1 and plan.baselines[0].users == 4
    assert {m.baseline_key for m in plan.methods} == {plan.baselines[0].key}
    assert len(plan.todo()) == 5
    assert "5 distinct run(s): 1 dense baseline(s) (run first) + 4 method run(s)" in plan.render()


def test_baselines_are_shared_per_setting_and_grid_duplicates_merge(tmp_path):
    sweep = parse_sweep({"name": "d", "profiles": ["cpu"], "task_sets": [["perplexity"], ["lastword"]],
                         "methods": [{"name": "wanda", "variants": [{}, {"sparsity": 0.5}]}, "magnitude"]}, "t")
    plan = build_plan(sweep, MACHINE, ResultsStore(tmp_path))
    assert plan.grid_points == 6
    assert len(plan.methods) == 4  # wanda {} and {sparsity: 0.5} are the same run
    assert len(plan.baselines) == 2 and all(b.users == 2 for b in plan.baselines)


def test_done_means_ok_with_the_same_key_on_the_same_machine(tmp_path):
    store = ResultsStore(tmp_path)
    sweep = load_sweep(PRUNING)
    plan = build_plan(sweep, MACHINE, store)
    dense, mag_u, mag_24, wanda_u, wanda_24 = [r.spec for r in plan.runs]
    store.write(_record(dense))
    store.write(_record(mag_u))
    store.write(_record(mag_24, status="failed"))  # failed: run again
    store.write(_record(wanda_u, machine="other"))  # another machine: run again here
    plan = build_plan(sweep, MACHINE, store)
    assert [r.done is not None for r in plan.runs] == [True, True, False, False, False]
    assert len(plan.todo()) == 3
    # once every method run is done the baseline is not run again just for them
    for spec in (mag_24, wanda_u, wanda_24):
        store.write(_record(spec))
    assert build_plan(sweep, MACHINE, store).todo() == []


def test_resolving_a_resolved_spec_keeps_its_key():
    """Workers resolve the driver's resolved spec again: the key must not move."""
    for run in expand(load_sweep(PRUNING)):
        once = resolve(run.spec, MACHINE).spec
        assert resolve(once, MACHINE).spec.key() == once.key()
