"""Generated Markdown: every page exists, data is escaped, failed/skipped runs are visible."""

import pytest

from sparsebench.sitegen import model as M
from sparsebench.sitegen.build import registry_info
from sparsebench.sitegen.render import render_docs

from .conftest import HOSTILE


@pytest.fixture
def docs(results_dir, tmp_path):
    methods, tasks = registry_info()
    out = tmp_path / "docs"
    nav = render_docs(M.load(results_dir), out, methods, tasks)
    return out, nav


def test_pages_and_nav(docs):
    out, nav = docs
    assert (out / "index.md").is_file() and (out / "families/pruning.md").is_file()
    assert (out / "methods/wanda.md").is_file() and (out / "methods/dense.md").is_file()
    assert (out / "runs/20261105T000000Z-magnitude-eeeeee.md").is_file()
    assert (out / "assets/sort.js").is_file()
    assert nav[1] == {"Leaderboards": [{"pruning": "families/pruning.md"}]}


def test_hostile_name_is_escaped_everywhere(docs):
    out, _ = docs
    for page in out.rglob("*.md"):
        assert HOSTILE not in page.read_text(), page
        assert "<b>bold</b>" not in page.read_text(), page
    family = (out / "families/pruning.md").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in family
    assert (out / f"methods/{M.slug(HOSTILE)}.md").is_file()


def test_failed_and_skipped_runs_are_shown(docs):
    out, _ = docs
    family = (out / "families/pruning.md").read_text()
    assert "sb-failed" in family and "out of memory while pruning layer 3" in family
    assert "sb-skipped" in family and "needs the fast kernel" in family
    run = (out / "runs/20261105T000000Z-magnitude-eeeeee.md").read_text()
    assert "Error:" in run and "RuntimeError: out of memory" in run


def test_method_page_has_schema_and_reproduce_commands(docs):
    out, _ = docs
    page = (out / "methods/wanda.md").read_text()
    assert "<code>--sparsity</code>" in page and "<code>0.5</code>" in page and "arxiv.org/abs/2306.11695" in page
    assert page.count('class="sb-cmd"') == 3
    assert "sparsebench run --method wanda --model smollm2-135m --pattern 2:4" in page


def test_run_page_has_environment(docs):
    out, _ = docs
    page = (out / "runs/20261102T000000Z-wanda-bbbbbb.md").read_text()
    assert "0123456789abcdef0123456789abcdef01234567" in page
    assert '<td class="sb-dirty">True</td>' in page
    assert "<td>torch</td><td>2.13.0</td>" in page and "not installed" in page
    assert "Test CPU 9000" in page


def test_a_speed_up_inside_the_noise_is_shown_with_its_band(results_dir, tmp_path):
    from sparsebench.store import ResultsStore

    store = ResultsStore(results_dir)
    rec = store.get("20261102T000000Z-wanda-bbbbbb").model_copy(deep=True)
    rec.run_id = "20261108T000000Z-wanda-noise1"
    rec.created_at = "2026-11-08T00:00:00+00:00"
    rec.interleaved["prefill_b1_s128_ms"] = {"dense": [300, 320, 340, 360, 380], "method": [310, 325, 335, 345, 360]}
    store.write(rec)
    methods, tasks = registry_info()
    render_docs(M.load(results_dir), tmp_path / "docs", methods, tasks)
    family = (tmp_path / "docs/families/pruning.md").read_text()
    assert '~1.01× <small class="sb-noise">(within noise ±19%)</small>' in family
    assert "1.25×" in family  # the fixture's runs without samples keep the ratio of their p50s
