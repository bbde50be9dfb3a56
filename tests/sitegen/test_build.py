"""``sparsebench site build`` runs mkdocs --strict and produces an offline site."""

import re

from sparsebench.cli import main


def test_cli_build_strict(results_dir, tmp_path, capsys):
    out = tmp_path / "site"
    assert main(["site", "build", "--results", str(results_dir), "--out", str(out)]) == 0
    assert "built the site" in capsys.readouterr().out
    html = (out / "families/pruning.html").read_text()
    assert "sb-pareto" in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert (out / "search/search_index.js").is_file() or (out / "search/search_index.json").is_file()
    for page in out.rglob("*.html"):
        text = page.read_text()
        assert "fonts.googleapis" not in text, page
        # no external scripts or stylesheets
        assert not re.search(r'<(script|link)[^>]+(src|href)="(https?:)?//', text), page
