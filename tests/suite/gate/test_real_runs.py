"""The gate on real runs of the default model: it must catch a broken Wanda and pass the real one.

The broken Wanda is a third-party plugin registered through a real entry point under the
name ``wanda`` (same name, config and version, hence the same spec key) that scores by
|W| alone, i.e. magnitude pruning passed off as Wanda: exactly the kind of silent numerical
regression a refactor can introduce. A second real Wanda run is also the determinism
check: on CPU with a fixed seed its accuracy metrics must be bit-identical.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from sparsebench.store import ResultsStore
from tests.test_end_to_end import SMALL

pytestmark = pytest.mark.slow

ACCURACY = ("perplexity", "perplexity_nll", "lastword_accuracy", "lastword_nll")


def _cli(*args, cwd, env=None):
    return subprocess.run([sys.executable, "-m", "sparsebench.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, **(env or {})})


def _wanda(results, cwd, env=None):
    proc = _cli("run", "--method", "wanda", *SMALL, "--no-latency", "--no-mlflow", "--results", str(results),
                cwd=cwd, env=env)
    assert proc.returncode == 0, proc.stderr
    return {r.spec["method"]["name"]: r for r in ResultsStore(results).all()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("gate-real")
    plugin = root / "plugin"
    plugin.mkdir()
    (plugin / "broken_wanda.py").write_text(textwrap.dedent("""
        from sparsebench.methods.pruning.wanda import Wanda

        class BrokenWanda(Wanda):
            def score(self, weight, stats):
                return weight.abs()  # the activation norm got lost
    """))
    dist = plugin / "broken_wanda-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-wanda\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[sparsebench.methods]\nwanda = broken_wanda:BrokenWanda\n")
    base = _wanda(root / "base", root)
    proc = _cli("gate", str(root / "base"), "--baseline", str(root / "baseline.json"), "--update-baseline", cwd=root)
    assert proc.returncode == 0, proc.stderr
    broken = _wanda(root / "broken", root, env={"PYTHONPATH": str(plugin)})
    again = _wanda(root / "again", root)
    return root, base, broken, again


def test_accuracy_is_bit_reproducible_on_cpu(runs):
    _, base, _, again = runs
    for method in ("dense", "wanda"):
        assert again[method].spec_key == base[method].spec_key
        assert {m: again[method].metrics[m] for m in ACCURACY} == {m: base[method].metrics[m] for m in ACCURACY}


def test_the_broken_wanda_really_ran_under_the_wanda_spec(runs):
    _, base, broken, _ = runs
    assert broken["wanda"].spec_key == base["wanda"].spec_key
    assert broken["wanda"].metrics["weight_sparsity"] == pytest.approx(0.5, abs=0.005)
    assert broken["wanda"].metrics["perplexity"] != base["wanda"].metrics["perplexity"]


def test_gate_fails_the_broken_wanda_on_perplexity(runs):
    root, *_ = runs
    proc = _cli("gate", str(root / "broken"), "--baseline", str(root / "baseline.json"), cwd=root)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    wanda_ppl = [line for line in proc.stdout.splitlines() if line.startswith("| wanda") and "| perplexity |" in line]
    assert len(wanda_ppl) == 1 and "**REGRESSION**" in wanda_ppl[0]
    dense = [line for line in proc.stdout.splitlines() if line.startswith("| dense")]
    assert dense and not any("REGRESSION" in line for line in dense)


def test_gate_passes_the_real_wanda(runs):
    root, *_ = runs
    proc = _cli("gate", str(root / "again"), "--baseline", str(root / "baseline.json"), cwd=root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "**Gate: PASS**: 2 of 2" in proc.stdout
    baseline = json.loads((root / "baseline.json").read_text())
    assert {r["spec"]["method"]["name"] for r in baseline["records"]} == {"dense", "wanda"}
