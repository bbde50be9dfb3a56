"""Golden cases: real records (``fixtures/real``), each case one named edit of them.

See ``make_fixtures.py`` for how each fixture was derived. Every case runs through the
real command line; exit codes: 0 all compared and passed, 1 regression or not compared,
2 unusable input with nothing written.
"""

import json
import shutil
from pathlib import Path

import pytest

from sparsebench.cli import main

FIX = Path(__file__).parent / "fixtures"
BASELINE = FIX / "baseline.json"


def gate(tmp_path, *args):
    report = tmp_path / "report.md"
    code = main(["gate", *args, "--report", str(report)])
    return code, report.read_text() if report.exists() else ""


def rows(report: str) -> dict[str, tuple[str, ...]]:
    """metric -> cells of its table row (the fixtures hold one candidate each)."""
    out = {}
    for line in report.splitlines():
        cells = tuple(c.strip() for c in line.strip("|").split("|"))
        if line.startswith("| ") and len(cells) == 7 and cells[0] != "run":
            out[cells[1]] = cells
    return out


@pytest.mark.parametrize("case,code,metric,verdict", [
    ("noise", 0, "perplexity", "pass"),
    ("within-tolerance", 0, "perplexity", "pass"),
    ("regression", 1, "perplexity", "**REGRESSION**"),
    ("improvement", 0, "perplexity", "improved"),
    ("improvement", 0, "lastword_accuracy", "improved"),
    ("latency-regression", 1, "decode_b1_c16_ms (median)", "**REGRESSION**"),
    ("missing-baseline", 1, "(all)", "**not compared**"),
    ("version-mismatch", 1, "(all)", "**not compared**"),
    ("failed", 1, "(all)", "**not compared**"),
])
def test_golden_case(tmp_path, capsys, case, code, metric, verdict):
    got, report = gate(tmp_path, str(FIX / f"{case}.json"), "--baseline", str(BASELINE))
    assert got == code
    assert rows(report)[metric][5] == verdict
    assert capsys.readouterr().out == report  # stdout and --report carry the same Markdown


def test_noise_passes_every_row_and_the_latency_test_reports_its_p_value(tmp_path):
    _, report = gate(tmp_path, str(FIX / "noise.json"), "--baseline", str(BASELINE))
    table = rows(report)
    assert {r[5] for r in table.values()} == {"pass"}
    assert "p=" in table["prefill_b1_s32_ms (median)"][6]
    assert report.rstrip().endswith("**Gate: PASS**: 1 of 1 candidate record(s) compared.")


def test_not_compared_says_why(tmp_path):
    _, report = gate(tmp_path, str(FIX / "version-mismatch.json"), "--baseline", str(BASELINE))
    assert "method.config.version 1 -> 2" in report
    _, report = gate(tmp_path, str(FIX / "missing-baseline.json"), "--baseline", str(BASELINE))
    assert "no baseline record for method 'magnitude'" in report


def test_allow_unmatched_lists_but_does_not_fail(tmp_path):
    code, report = gate(tmp_path, str(FIX / "missing-baseline.json"), str(FIX / "noise.json"),
                        "--baseline", str(BASELINE), "--allow-unmatched")
    assert code == 0
    assert "not compared: magnitude" in report


def test_latency_from_another_machine_is_listed_not_gated(tmp_path):
    rec = json.loads((FIX / "latency-regression.json").read_text())
    rec["hardware"]["fingerprint"]["id"] = "another-machine"
    cand = tmp_path / "cand.json"
    cand.write_text(json.dumps(rec))
    code, report = gate(tmp_path, str(cand), "--baseline", str(BASELINE))
    assert code == 0
    assert rows(report)["decode_b1_c16_ms (median)"][5] == "not gated"
    assert rows(report)["peak_rss_bytes"][5] == "not gated"


def test_a_looser_threshold_lets_the_slowdown_pass(tmp_path):
    code, _ = gate(tmp_path, str(FIX / "latency-regression.json"), "--baseline", str(BASELINE),
                   "--latency-threshold", "0.6")
    assert code == 0


def test_directory_of_candidates(tmp_path):
    runs = tmp_path / "results" / "runs"
    runs.mkdir(parents=True)
    for case in ("noise", "regression"):
        shutil.copy(FIX / f"{case}.json", runs)
    code, report = gate(tmp_path, str(tmp_path / "results"), "--baseline", str(BASELINE))
    assert code == 1
    assert "1 of 2" not in report and "2 of 2 candidate record(s) compared" in report


@pytest.mark.parametrize("update", [False, True])
def test_corrupt_candidate_exits_2_and_leaves_the_baseline_untouched(tmp_path, capsys, update):
    base = tmp_path / "base.json"
    shutil.copy(BASELINE, base)
    before = base.read_bytes()
    code, report = gate(tmp_path, str(FIX / "corrupt.json"), "--baseline", str(base),
                        *(["--update-baseline"] if update else []))
    assert code == 2
    err = capsys.readouterr().err
    assert "corrupt.json cannot be read" in err and err.count("\n") == 1
    assert base.read_bytes() == before
    assert report == ""
    assert [p.name for p in tmp_path.iterdir()] == ["base.json"]  # no temp file left behind


@pytest.mark.parametrize("content,message", [
    ("{torn", "cannot be read"),
    ('{"records": []}', "not a sparsebench baseline file"),
    ('{"schema": 1, "records": [{"schema_version": 99}]}', "newer than this sparsebench"),
    ('{"schema": 1, "records": [{"schema_version": 2, "run_id": "x"}]}', "does not match the record schema"),
])
def test_corrupt_baseline_exits_2_untouched(tmp_path, capsys, content, message):
    base = tmp_path / "base.json"
    base.write_text(content)
    code, _ = gate(tmp_path, str(FIX / "noise.json"), "--baseline", str(base), "--update-baseline")
    assert code == 2
    assert message in capsys.readouterr().err
    assert base.read_text() == content


def test_missing_inputs_exit_2(tmp_path, capsys):
    assert main(["gate", str(FIX / "noise.json"), "--baseline", str(tmp_path / "none.json")]) == 2
    assert "--update-baseline" in capsys.readouterr().err
    assert main(["gate", str(tmp_path / "nope.json"), "--baseline", str(BASELINE)]) == 2
    assert main(["gate", str(tmp_path), "--baseline", str(BASELINE)]) == 2  # empty directory
    assert main(["gate", str(FIX / "noise.json")]) == 2  # --baseline is required


def test_update_baseline_writes_ok_records_then_gates_clean(tmp_path):
    base = tmp_path / "baselines" / "cpu.json"
    code, report = gate(tmp_path, str(FIX / "noise.json"), str(FIX / "failed.json"),
                        "--baseline", str(base), "--update-baseline")
    assert code == 0
    assert "left out 1 not-ok record(s)" in report
    doc = json.loads(base.read_text())
    assert doc["schema"] == 1 and doc["created_at"]
    assert [r["run_id"] for r in doc["records"]] == [json.loads((FIX / "noise.json").read_text())["run_id"]]
    assert gate(tmp_path, str(FIX / "noise.json"), "--baseline", str(base))[0] == 0
    assert gate(tmp_path, str(FIX / "regression.json"), "--baseline", str(base))[0] == 1


def _on(rec: dict, cpu: str, run_id: str, created_at: str | None = None, **metrics: float) -> dict:
    """``rec`` as if measured on another CPU model (and a few metrics as it measured them)."""
    import copy

    rec = copy.deepcopy(rec)
    rec["hardware"]["fingerprint"].update(cpu=cpu, id=f"{cpu}-machine")
    rec["run_id"] = run_id
    rec["metrics"].update(metrics)
    if created_at:
        rec["created_at"] = created_at
    return rec


def _baseline_file(tmp_path, records):
    path = tmp_path / "base.json"
    doc = json.loads(BASELINE.read_text())
    doc["records"] = records
    path.write_text(json.dumps(doc))
    return path


XEON = "Intel(R) Xeon(R) Processor"


def test_each_candidate_is_compared_with_the_baseline_of_its_own_processor(tmp_path):
    """The same run on a Xeon gave a 1% lower perplexity there (a calibrated mask rounds
    differently): each candidate meets its own processor's record, even when the other
    processor's record is newer."""
    doc = json.loads(BASELINE.read_text())
    amd = next(r for r in doc["records"] if r["spec"]["method"]["name"] == "wanda")
    ppl = amd["metrics"]["perplexity"]
    xeon = _on(amd, XEON, "wanda-on-xeon", created_at="2099-01-01T00:00:00+00:00", perplexity=ppl * 0.99)
    base = _baseline_file(tmp_path, [amd, xeon])
    noise = json.loads((FIX / "noise.json").read_text())  # a real rerun on the EPYC
    for name, rec in (("amd.json", noise), ("xeon.json", _on(noise, XEON, "xeon-rerun", perplexity=ppl * 0.99))):
        (tmp_path / name).write_text(json.dumps(rec))
        code, report = gate(tmp_path, str(tmp_path / name), "--baseline", str(base))
        assert code == 0, report
        assert rows(report)["perplexity"][5] == "pass" and "measured on" not in report


def test_a_baseline_of_another_processor_is_used_and_said(tmp_path):
    noise = json.loads((FIX / "noise.json").read_text())
    cand = tmp_path / "xeon.json"
    cand.write_text(json.dumps(_on(noise, XEON, "xeon-rerun")))
    code, report = gate(tmp_path, str(cand), "--baseline", str(BASELINE))
    assert code == 0
    assert f"baseline measured on AMD EPYC, this run on {XEON}" in report


def test_update_keeps_the_other_processors_records_of_the_same_runs(tmp_path):
    doc = json.loads(BASELINE.read_text())
    base = _baseline_file(tmp_path, doc["records"])  # dense and wanda, on an EPYC
    noise = json.loads((FIX / "noise.json").read_text())
    cand = tmp_path / "xeon.json"
    cand.write_text(json.dumps(_on(noise, XEON, "xeon-rerun")))
    code, report = gate(tmp_path, str(cand), "--baseline", str(base), "--update-baseline")
    assert code == 0
    assert "kept 1 record(s) of the same runs on AMD EPYC" in report
    written = json.loads(base.read_text())["records"]
    # wanda on both processors; dense, which this update's runs do not include, is gone
    assert sorted((r["spec"]["method"]["name"], r["hardware"]["fingerprint"]["cpu"]) for r in written) == [
        ("wanda", "AMD EPYC"), ("wanda", XEON)]
