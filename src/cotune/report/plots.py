"""Inline SVG charts for reports: a line chart (score by step) and a labelled scatter (accuracy against
prompt tokens). Plain strings, no plotting library and no scripts, so an HTML page that inlines them stays
one self-contained file, and the same SVG can be written next to a Markdown report.

Every series is a ``<g class="series" data-series="NAME">`` and every point a ``<circle class="point">``
with a ``<title>`` tooltip, so tests (and browsers' accessibility tools) can find them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

# Okabe-Ito: distinguishable with the common colour-vision deficiencies (yellow left out: unreadable on white).
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#999999")
_FONT = "font-family:system-ui,-apple-system,'Segoe UI',sans-serif"
_MARGIN = {"left": 56, "right": 20, "top": 36, "bottom": 48}


@dataclass
class Series:
    """One line: ``points`` are ``(x, y, yerr)`` with ``yerr`` None when unknown."""

    name: str
    points: list[tuple[float, float, float | None]]
    color: str = PALETTE[0]


@dataclass
class Point:
    """One labelled point of a scatter chart."""

    label: str
    x: float
    y: float
    yerr: float | None = None
    color: str = PALETTE[0]
    note: str = ""  # extra tooltip text


@dataclass
class _Frame:
    """Maps data coordinates to pixels inside the margins."""

    width: int
    height: int
    x_range: tuple[float, float]
    y_range: tuple[float, float]
    extra_bottom: float = 0.0  # room below the x axis labels (a legend)
    parts: list[str] = field(default_factory=list)

    def px(self, x: float) -> float:
        lo, hi = self.x_range
        span = (hi - lo) or 1.0
        return _MARGIN["left"] + (x - lo) / span * (self.width - _MARGIN["left"] - _MARGIN["right"])

    def py(self, y: float) -> float:
        lo, hi = self.y_range
        span = (hi - lo) or 1.0
        bottom = self.height - _MARGIN["bottom"] - self.extra_bottom
        return bottom - (y - lo) / span * (bottom - _MARGIN["top"])


def color_for(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    x_labels: Sequence[str],
    y_label: str = "accuracy (%)",
    width: int = 640,
    height: int = 360,
) -> str:
    """Lines over integer x positions ``0..len(x_labels)-1``; y is a score in [0, 1] shown in percent.

    Series that share points (strategies with a common prefix) are dodged sideways by a few pixels so
    every line stays visible.
    """
    legend_h = 18 * math.ceil(len(series) / 4)
    frame = _Frame(width, height + legend_h, (-0.25, max(len(x_labels) - 1, 1) + 0.25), (0.0, 1.0), legend_h)
    _open(frame, title, "chart-line")
    _y_axis_percent(frame, y_label)
    for i, label in enumerate(x_labels):
        x = frame.px(i)
        frame.parts.append(_text(x, frame.py(0) + 16, label, anchor="middle"))
    frame.parts.append(_text(frame.px((len(x_labels) - 1) / 2), frame.py(0) + 34, "step", anchor="middle"))
    for k, s in enumerate(series):
        dodge = (k - (len(series) - 1) / 2) * 3.0
        pts = [(frame.px(x) + dodge, frame.py(y), y, err) for x, y, err in s.points]
        body = [f'<g class="series" data-series="{escape(s.name)}">']
        if len(pts) > 1:
            coords = " ".join(f"{x:.1f},{y:.1f}" for x, y, _, _ in pts)
            body.append(f'<polyline points="{coords}" fill="none" stroke="{s.color}" stroke-width="2"/>')
        for (x, y, value, err), (step, *_rest) in zip(pts, s.points, strict=True):
            body.append(_error_bar(frame, x, value, err, s.color))
            tip = f"{s.name}, step {int(step)}: {_pct(value)}" + (f" ± {_pct(err)}" if err else "")
            body.append(
                f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{s.color}"><title>{escape(tip)}</title></circle>'
            )
        body.append("</g>")
        frame.parts.append("".join(body))
    _legend(frame, [(s.name, s.color) for s in series], top=frame.py(0) + 56)
    return _close(frame)


def scatter_chart(
    points: Sequence[Point],
    *,
    title: str,
    x_label: str = "prompt tokens per call",
    y_label: str = "accuracy (%)",
    width: int = 640,
    height: int = 360,
) -> str:
    """Labelled points, y a score in [0, 1] shown in percent, x from 0 to a rounded-up maximum."""
    x_max = max((p.x for p in points), default=1.0)
    ticks = _nice_ticks(0.0, x_max if x_max > 0 else 1.0)
    frame = _Frame(width, height, (0.0, ticks[-1]), (0.0, 1.0))
    _open(frame, title, "chart-scatter")
    _y_axis_percent(frame, y_label)
    for t in ticks:
        x = frame.px(t)
        frame.parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{frame.py(0):.1f}" y2="{frame.py(0) + 4:.1f}" stroke="#444"/>'
        )
        frame.parts.append(_text(x, frame.py(0) + 16, f"{t:g}", anchor="middle"))
    frame.parts.append(_text(frame.px(ticks[-1] / 2), frame.py(0) + 34, x_label, anchor="middle"))
    placed: list[tuple[float, float, float, float]] = []
    for p in points:
        x, y = frame.px(p.x), frame.py(p.y)
        tip = f"{p.label}: {_pct(p.y)}" + (f" ± {_pct(p.yerr)}" if p.yerr else "") + f", {p.x:.0f} tokens"
        tip += f" ({p.note})" if p.note else ""
        lx, ly = _place_label(x, y, p.label, placed, frame)
        frame.parts.append(
            f'<g class="series" data-series="{escape(p.label)}">{_error_bar(frame, x, p.y, p.yerr, p.color)}'
            f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{p.color}"><title>{escape(tip)}</title></circle>'
            f"{_text(lx, ly, p.label, css='label')}</g>"
        )
    return _close(frame)


# -- pieces ----------------------------------------------------------------------------------------------
def _open(frame: _Frame, title: str, kind: str) -> None:
    frame.parts.append(
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart {kind}" role="img" aria-label="{escape(title)}" '
        f'width="{frame.width}" height="{frame.height}" viewBox="0 0 {frame.width} {frame.height}" style="{_FONT};font-size:12px">'
        f"<title>{escape(title)}</title>"
        f'<rect width="100%" height="100%" fill="#fff"/>'
        f'<text x="{frame.width / 2:.0f}" y="20" text-anchor="middle" font-size="14" font-weight="600">{escape(title)}</text>'
    )


def _close(frame: _Frame) -> str:
    return "".join(frame.parts) + "</svg>"


def _y_axis_percent(frame: _Frame, label: str) -> None:
    left, right = _MARGIN["left"], frame.width - _MARGIN["right"]
    for pct in range(0, 101, 20):
        y = frame.py(pct / 100)
        frame.parts.append(f'<line x1="{left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e3e3"/>')
        frame.parts.append(_text(left - 6, y + 4, str(pct), anchor="end"))
    frame.parts.append(f'<line x1="{left}" x2="{left}" y1="{frame.py(1):.1f}" y2="{frame.py(0):.1f}" stroke="#444"/>')
    frame.parts.append(f'<line x1="{left}" x2="{right}" y1="{frame.py(0):.1f}" y2="{frame.py(0):.1f}" stroke="#444"/>')
    cy = (frame.py(0) + frame.py(1)) / 2
    frame.parts.append(
        f'<text x="14" y="{cy:.1f}" text-anchor="middle" transform="rotate(-90 14 {cy:.1f})">{escape(label)}</text>'
    )


def _error_bar(frame: _Frame, x: float, y: float, err: float | None, color: str) -> str:
    if not err:
        return ""
    lo, hi = frame.py(max(y - err, 0.0)), frame.py(min(y + err, 1.0))
    return f'<line class="errorbar" x1="{x:.1f}" x2="{x:.1f}" y1="{lo:.1f}" y2="{hi:.1f}" stroke="{color}" stroke-opacity="0.6"/>'


def _legend(frame: _Frame, items: list[tuple[str, str]], top: float) -> None:
    out = ['<g class="legend">']
    col_w = (frame.width - _MARGIN["left"] - _MARGIN["right"]) / 4
    for i, (name, color) in enumerate(items):
        x = _MARGIN["left"] + (i % 4) * col_w
        y = top + 18 * (i // 4)
        out.append(f'<rect x="{x:.1f}" y="{y - 9:.1f}" width="14" height="4" fill="{color}"/>')
        out.append(_text(x + 20, y - 3, name))
    out.append("</g>")
    frame.parts.append("".join(out))


def _place_label(x: float, y: float, label: str, placed: list, frame: _Frame) -> tuple[float, float]:
    """Put a label right of its point, moving it down or up until it overlaps no label placed before."""
    w, h = 7.0 * len(label) + 2, 13.0
    for dy in (4, 17, -9, 30, -22, 43, -35, 56):
        lx, ly = x + 8, y + dy
        if lx + w > frame.width:  # no room on the right: put it on the left
            lx = x - 8 - w
        box = (lx, ly - h + 3, lx + w, ly + 3)
        if all(box[2] <= b[0] or box[0] >= b[2] or box[3] <= b[1] or box[1] >= b[3] for b in placed):
            placed.append(box)
            return lx, ly
    placed.append((x + 8, y - 9, x + 8 + w, y + 7))
    return x + 8, y + 4


def _nice_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    """Round tick values (1, 2, 2.5 or 5 × 10^k apart) covering ``[lo, hi]``."""
    raw = (hi - lo) / target
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    n = math.ceil((hi - lo) / step - 1e-9)
    return [lo + i * step for i in range(n + 1)]


def _text(x: float, y: float, text: str, *, anchor: str = "start", css: str = "") -> str:
    cls = f' class="{css}"' if css else ""
    return f'<text{cls} x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}">{escape(text)}</text>'


def _pct(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.1f}%"
