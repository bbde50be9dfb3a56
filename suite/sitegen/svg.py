"""Pareto charts as inline SVG written by the generator: no JS library, works offline.

Labels go through ``html.escape`` because they are data (method names) placed in markup.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

W, H = 560, 340
LEFT, RIGHT, TOP, BOTTOM = 64, 20, 20, 48


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    label: str
    href: str | None = None
    tag: str = ""  # short text drawn beside the mark


def pareto_front(points: list[Point], x_higher_better: bool) -> list[Point]:
    """Points not dominated by another (y = loss, lower is better; x per flag)."""
    def better_or_equal(a: Point, b: Point) -> bool:
        x_ok = a.x >= b.x if x_higher_better else a.x <= b.x
        return x_ok and a.y <= b.y and (a.x != b.x or a.y != b.y)

    front = [p for p in points if not any(better_or_equal(q, p) for q in points)]
    return sorted(front, key=lambda p: p.x)


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    step = 10 ** math.floor(math.log10((hi - lo) / n))
    for mult in (1, 2, 5, 10):
        if (hi - lo) / (step * mult) <= n:
            step *= mult
            break
    start = math.floor(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step) + 2)]


def chart(points: list[Point], x_label: str, y_label: str, title: str,
          x_higher_better: bool = True) -> str:
    """An SVG scatter of ``points`` with the Pareto front drawn as a line."""
    if not points:
        return (f'<p class="sb-empty">No points for “{escape(title)}”: it needs ok runs with an '
                'accuracy metric and a dense baseline record.</p>')
    ys = [p.y for p in points]
    # One outlier (a model pruned into noise) would flatten a linear axis: go log10 then.
    log_y = min(ys) > 0 and max(ys) / min(ys) > 100
    xt = _ticks(min(p.x for p in points), max(p.x for p in points))
    if log_y:
        yt = [float(k) for k in range(math.floor(math.log10(min(ys))), math.ceil(math.log10(max(ys))) + 1)]
        y_label += " (log scale)"
    else:
        yt = _ticks(min(0.0, *ys), max(ys))
    x0, x1, y0, y1 = xt[0], xt[-1], yt[0], yt[-1]

    def sx(x: float) -> float:
        return LEFT + (x - x0) / (x1 - x0) * (W - LEFT - RIGHT)

    def sy(y: float, raw: bool = True) -> float:
        v = math.log10(y) if log_y and raw else y
        return H - BOTTOM - (v - y0) / (y1 - y0) * (H - TOP - BOTTOM)

    out = [f'<svg class="sb-pareto" role="img" viewBox="0 0 {W} {H}" width="{W}" height="{H}" '
           f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>',
           f'<line class="sb-axis" x1="{LEFT}" y1="{H - BOTTOM}" x2="{W - RIGHT}" y2="{H - BOTTOM}"/>',
           f'<line class="sb-axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{H - BOTTOM}"/>']
    for t in xt:
        out.append(f'<text class="sb-tick" x="{sx(t):.1f}" y="{H - BOTTOM + 16}" text-anchor="middle">{t:g}</text>')
    for t in yt:
        y, text = sy(t, raw=False), f"{10 ** t:g}" if log_y else f"{t:g}"
        out.append(f'<line class="sb-grid" x1="{LEFT}" y1="{y:.1f}" x2="{W - RIGHT}" y2="{y:.1f}"/>')
        out.append(f'<text class="sb-tick" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{text}</text>')
    out.append(f'<text class="sb-label" x="{(LEFT + W - RIGHT) / 2}" y="{H - 10}" text-anchor="middle">{escape(x_label)}</text>')
    out.append(f'<text class="sb-label" transform="translate(14 {(TOP + H - BOTTOM) / 2}) rotate(-90)" '
               f'text-anchor="middle">{escape(y_label)}</text>')
    front = pareto_front(points, x_higher_better)
    if len(front) > 1:
        pts = " ".join(f"{sx(p.x):.1f},{sy(p.y):.1f}" for p in front)
        out.append(f'<polyline class="sb-front" points="{pts}"/>')
    for p in points:
        mark = (f'<circle class="sb-mark{" sb-on-front" if p in front else ""}" cx="{sx(p.x):.1f}" '
                f'cy="{sy(p.y):.1f}" r="5"><title>{escape(p.label)}: x={p.x:.3g}, y={p.y:.3g}</title></circle>')
        out.append(f'<a href="{escape(p.href)}">{mark}</a>' if p.href else mark)
        if p.tag:  # right-aligned near the right edge so it is not clipped
            right = sx(p.x) > W - RIGHT - 90
            x, anchor = (sx(p.x) - 7, "end") if right else (sx(p.x) + 7, "start")
            out.append(f'<text class="sb-tag" x="{x:.1f}" y="{sy(p.y) - 6:.1f}" '
                       f'text-anchor="{anchor}">{escape(p.tag)}</text>')
    out.append("</svg>")
    return "".join(out)
