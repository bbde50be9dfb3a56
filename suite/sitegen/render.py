"""Render the Markdown pages of the site from records with Jinja2.

Autoescape is on for every template: method names, configs and errors are data and may hold
markup (a record named ``<script>`` must show as text). Page titles and headings use only
``slug``-ed values because MkDocs' own theme templates do not escape titles.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from ..api import RunRecord
from . import model as M
from .reproduce import reproduce_command
from .svg import Point, chart

ASSETS = ("sort.js", "site.css")


def _num(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.4e}"


def _delta(v: float | None) -> str:
    return "–" if v is None else f"{v:+.3g}"


def _mib(v: float | None) -> str:
    return "–" if v is None else f"{v / 2**20:.1f}"


def _latency_label(key: str) -> str:
    return key.removesuffix(M.LATENCY_SUFFIX)


def make_env(method_info: dict[str, dict[str, Any]], task_defaults: dict[str, dict[str, Any]]) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("sparsebench.sitegen", "templates"),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, keep_trailing_newline=True,
    )

    def repro(rec: RunRecord) -> str:
        info = method_info.get(M.method_name(rec))
        defaults = {f["name"]: f["default"] for f in info["fields"]} if info else None
        return reproduce_command(rec.spec, defaults, task_defaults)

    env.filters.update(
        slug=M.slug, method_name=M.method_name, profile=M.profile_of, config_text=M.config_text, device=M.device_of,
        num=_num, delta=_delta, mib=_mib, latency_label=_latency_label, reproduce=repro,
    )
    env.globals["m"] = env.get_template("_macros.md.j2").module
    return env


def board_charts(board: M.Board) -> tuple[str, str]:
    """Accuracy loss vs speed-up, and vs memory, for one board's ok rows with a baseline."""
    acc, lat = board.column_keys()
    key = "perplexity" if "perplexity" in acc else (acc[0] if acc else None)
    speed_key = next((k for k in lat if k.startswith("decode")), lat[0] if lat else None)
    by_speed: list[Point] = []
    by_mem: list[Point] = []
    for r in board.rows:
        loss = r.loss(key) if key else None
        if r.rec.status != "ok" or loss is None:
            continue
        name = M.method_name(r.rec)
        label = f"{name} ({M.config_text(r.rec)})"
        href = f"../runs/{M.slug(r.run_id)}.html"
        tag = name[:24]
        if speed_key and r.speedup.get(speed_key) is not None:
            by_speed.append(Point(r.speedup[speed_key], loss, label, href, tag))
        if r.memory is not None:
            by_mem.append(Point(r.memory / 2**20, loss, label, href, tag))
    y = f"{key} loss vs dense (%)" if key else "accuracy loss (%)"
    return (
        chart(by_speed, f"speed-up ({_latency_label(speed_key or 'latency')}, dense p50 / method p50)", y,
              f"Accuracy loss vs speed-up, profile {board.profile}", x_higher_better=True),
        chart(by_mem, f"memory MiB ({board.memory_label()})", y,
              f"Accuracy loss vs memory, profile {board.profile}", x_higher_better=False),
    )


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def render_docs(data: M.SiteData, docs: Path, method_info: dict[str, dict[str, Any]],
                task_defaults: dict[str, dict[str, Any]]) -> list[Any]:
    """Write every page under ``docs`` and return the MkDocs ``nav``."""
    env = make_env(method_info, task_defaults)
    by_method = data.by_method()
    names = sorted(set(method_info) | set(by_method))
    methods = [{"name": n, "family": (method_info.get(n) or {}).get("family")
                or (M.family_of(by_method[n][0]) if n in by_method else "?"),
                "description": (method_info.get(n) or {}).get("description", ""),
                "runs": len(by_method.get(n, []))} for n in names]
    profiles = [(p, sorted({M.device_of(r) for r in data.records if M.profile_of(r) == p}),
                 sum(M.profile_of(r) == p for r in data.records)) for p in data.profiles]
    _write(docs / "index.md", env.get_template("home.md.j2").render(data=data, methods=methods, profiles=profiles))
    fam_nav = []
    for fam in data.families:
        boards = data.boards[fam]
        charts = [board_charts(b) for b in boards]
        path = f"families/{M.slug(fam)}.md"
        _write(docs / path, env.get_template("family.md.j2").render(family=fam, boards=boards, charts=charts))
        fam_nav.append({M.slug(fam): path})
    for n in names:
        recs = by_method.get(n, [])
        rows = [data.rows[r.run_id] for r in recs]
        acc = sorted({k for r in rows for k in r.accuracy})
        lat = sorted({k for r in rows for k in r.speedup})
        _write(docs / f"methods/{M.slug(n)}.md", env.get_template("method.md.j2").render(
            name=n, info=method_info.get(n), rows=rows, acc=acc, lat=lat))
    _write(docs / "methods/index.md", env.get_template("methods.md.j2").render(methods=methods))
    for r in data.records:
        _write(docs / f"runs/{M.slug(r.run_id)}.md",
               env.get_template("run.md.j2").render(rec=r, row=data.rows[r.run_id]))
    _write(docs / "runs/index.md", env.get_template("runs.md.j2").render(records=data.records))
    for name in ASSETS:
        src = resources.files("sparsebench.sitegen").joinpath("assets", name)
        with resources.as_file(src) as p:
            (docs / "assets").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, docs / "assets" / name)
    nav: list[Any] = [{"Home": "index.md"}]
    if fam_nav:
        nav.append({"Leaderboards": fam_nav})
    return nav + [{"Methods": "methods/index.md"}, {"Runs": "runs/index.md"}]
