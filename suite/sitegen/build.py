"""Build the site (records -> Markdown -> ``mkdocs build --strict``) and serve it locally.

The Markdown is generated into a throw-away directory beside a copy of the packaged
``mkdocs.yml`` so the build works from an installed wheel, not only from a checkout.
"""

from __future__ import annotations

import functools
import http.server
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..errors import SparsebenchError
from . import model as M
from .render import render_docs


class SiteError(SparsebenchError):
    """mkdocs is missing or the strict build failed (exit code 1)."""

    exit_code = 1


def registry_info() -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Installed methods (for their pages) and task config defaults (for reproduce commands)."""
    from .. import registry

    methods = {name: M.describe_method(cls) for name, cls in registry.methods().items()}
    tasks = {name: {n: f.default for n, f in cls.Config.model_fields.items()}
             for name, cls in registry.tasks().items()}
    return methods, tasks


def write_sources(results: str | Path, src: Path) -> Path:
    """Generate ``src/docs`` and ``src/mkdocs.yml``; return the config path."""
    data = M.load(results)
    methods, tasks = registry_info()
    nav = render_docs(data, src / "docs", methods, tasks)
    base = yaml.safe_load(resources.files("sparsebench.sitegen").joinpath("mkdocs.yml").read_text())
    cfg = {**base, "docs_dir": "docs", "nav": nav}
    path = src / "mkdocs.yml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    return path


def build(results: str | Path = "results", out: str | Path = "site/build",
          keep_sources: str | Path | None = None) -> Path:
    """Build the static site into ``out`` and return it; raises SiteError if mkdocs complains."""
    out = Path(out).resolve()
    with tempfile.TemporaryDirectory(prefix="sparsebench-site-") as tmp:
        src = Path(keep_sources).resolve() if keep_sources else Path(tmp)
        cfg = write_sources(results, src)
        cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet",
               "-f", str(cfg), "--site-dir", str(out)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True)
        except FileNotFoundError as exc:  # pragma: no cover - sys.executable always exists
            raise SiteError(str(exc)) from None
        if proc.returncode != 0:
            hint = " Install the site extra: pip install 'sparsebench[site]'." if "No module named mkdocs" in proc.stderr else ""
            raise SiteError(f"mkdocs build --strict failed ({proc.returncode}):{hint}\n{proc.stderr.strip()}")
    return out


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass


def make_server(root: str | Path, port: int = 8000, quiet: bool = True) -> http.server.ThreadingHTTPServer:
    """An HTTP server for ``root`` bound to 127.0.0.1 only (port 0 picks a free one)."""
    handler = functools.partial(_QuietHandler if quiet else http.server.SimpleHTTPRequestHandler,
                                directory=str(root))
    return http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)


def serve(root: str | Path, port: int = 8000) -> None:
    server = make_server(root, port, quiet=False)
    print(f"serving {root} at http://127.0.0.1:{server.server_address[1]}/ (Ctrl-C stops)")
    try:
        server.serve_forever()
    finally:
        server.server_close()
