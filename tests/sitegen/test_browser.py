"""The built site in a real headless Chromium: what a person sees, and that it stays offline.

Needs Debian's ``chromium`` (``.ci/run`` installs it); Playwright drives it through
``executable_path`` and downloads no browser. Every request is recorded, and any that is
not for the local server is blocked and fails the test.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest

from sparsebench.sitegen import build, make_server

from .conftest import HOSTILE

pytestmark = pytest.mark.slow
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        if os.environ.get("SPARSEBENCH_REQUIRE_BROWSER"):
            pytest.fail(f"{CHROMIUM} is missing (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def site(results_dir, tmp_path):
    out = build(results_dir, tmp_path / "site")
    server = make_server(out, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture
def page(browser, site):
    requests: list[str] = []
    dialogs: list[str] = []
    context = browser.new_context(viewport={"width": 1600, "height": 1200})

    def guard(route):
        requests.append(route.request.url)
        if urlparse(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            route.abort()

    context.route("**/*", guard)
    pg = context.new_page()
    pg.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    yield pg, site
    context.close()
    outside = [u for u in requests if urlparse(u).hostname != "127.0.0.1"]
    assert not outside, f"requests left 127.0.0.1: {outside}"
    assert requests, "no request was recorded"
    assert not dialogs, f"a script ran from data: {dialogs}"


def _column(pg, index: int) -> list[str]:
    return pg.locator("table.sb-board tbody tr").evaluate_all(
        f"rows => rows.map(r => r.cells[{index}].innerText.trim())")


def test_leaderboard_page(page, tmp_path):
    pg, site = page
    pg.goto(site + "families/pruning.html")
    rows = pg.locator("table.sb-board tbody tr")
    assert rows.count() == 6
    board = pg.locator("table.sb-board")
    assert "failed" in board.inner_text() and "skipped" in board.inner_text()
    assert "out of memory while pruning layer 3" in board.inner_text()

    marks = pg.locator("svg.sb-pareto circle.sb-mark")
    assert marks.count() == 8  # 4 ok runs with a baseline, in two charts
    assert marks.first.is_visible()

    headers = [h.strip() for h in pg.locator("table.sb-board thead th").all_inner_texts()]
    col = headers.index("perplexity")
    before = _column(pg, 0)
    pg.locator("table.sb-board thead th", has_text="perplexity").first.click()
    asc = _column(pg, col)
    values = [float(v.split()[0]) for v in asc if v != "–"]
    assert values == sorted(values) and len(values) == 4
    assert asc[-2:] == ["–", "–"]  # failed and skipped rows have no number and go last
    assert _column(pg, 0) != before
    pg.locator("table.sb-board thead th", has_text="perplexity").first.click()
    desc = [float(v.split()[0]) for v in _column(pg, col) if v != "–"]
    assert desc == sorted(values, reverse=True)

    assert HOSTILE in _column(pg, 0)  # shown as text, not run
    assert pg.locator("script", has_text="alert(1)").count() == 0

    shot = tmp_path / "screenshot-leaderboard.png"
    pg.screenshot(path=str(shot), full_page=True)
    keep = REPO / "site" / "build" / "screenshot-leaderboard.png"
    keep.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, keep)
    print(f"screenshot: {keep}")


def test_method_page_and_search(page):
    pg, site = page
    pg.goto(site + "methods/wanda.html")
    cmds = pg.locator("code.sb-cmd").all_inner_texts()
    assert any(c.startswith("sparsebench run --method wanda --model smollm2-135m --pattern 2:4") for c in cmds)
    assert pg.locator("table.sb-schema").inner_text().count("--sparsity") == 1

    pg.goto(site + "index.html")
    pg.locator("label.md-search__icon, .md-search__input").first.click()
    pg.locator("input.md-search__input").press_sequentially("magnitude", delay=30)
    pg.locator(".md-search-result__item").first.wait_for(timeout=10_000)
    assert "magnitude" in pg.locator(".md-search-result").inner_text()
    pg.locator("input.md-search__input").fill("")
    pg.locator("input.md-search__input").press_sequentially("alert", delay=30)
    pg.locator(".md-search-result__item").first.wait_for(timeout=10_000)
    assert HOSTILE in pg.locator(".md-search-result").inner_text()  # as text; no dialog fired


def test_run_page_shows_failure_and_environment(page):
    pg, site = page
    pg.goto(site + "runs/20261105T000000Z-magnitude-eeeeee.html")
    text = pg.locator("article").inner_text()
    assert "failed" in text and "RuntimeError: out of memory" in text
    assert "0123456789abcdef0123456789abcdef01234567" in text and "Test CPU 9000" in text
