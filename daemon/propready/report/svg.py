"""Tiny inline-SVG bar charts: enough for the audit report, with no dependency and no network.

A chart library (pygal, matplotlib) would add a large dependency for four bar charts; these few
functions render plain SVG that every browser shows, printable and readable offline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
WIDTH, HEIGHT = 720, 300
LEFT, RIGHT, TOP, BOTTOM = 50, 10, 30, 70


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    step = 10 ** (len(str(int(value))) - 1)
    return float(-(-value // step) * step) if value > step else float(step)


def bar_chart(
    title: str,
    categories: Sequence[str],
    series: Mapping[str, Sequence[float]],
) -> str:
    """Stacked vertical bars: one bar per category, one colour per series, with a legend."""
    names = list(series)
    totals = [sum(series[n][i] for n in names) for i in range(len(categories))]
    top = _nice_max(max(totals, default=0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(len(categories), 1)
    bar_w = max(2.0, slot * 0.7)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {WIDTH} {HEIGHT}"'
        f' width="{WIDTH}" height="{HEIGHT}" aria-label="{escape(title)}">',
        f'<text x="{LEFT}" y="18" font-size="14" font-weight="bold">{escape(title)}</text>',
    ]
    for tick in range(5):  # horizontal grid with value labels
        value = top * tick / 4
        y = TOP + plot_h - plot_h * tick / 4
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
            f'<text x="{LEFT - 4}" y="{y + 4:.1f}" font-size="10" text-anchor="end">'
            f"{value:g}</text>"
        )
    for i, category in enumerate(categories):
        x = LEFT + slot * i + (slot - bar_w) / 2
        base = float(TOP + plot_h)
        for n, name in enumerate(names):
            value = series[name][i]
            if value <= 0:
                continue
            h = plot_h * value / top
            base = base - h
            parts.append(
                f'<rect class="bar" x="{x:.1f}" y="{base:.1f}" width="{bar_w:.1f}"'
                f' height="{h:.1f}" fill="{PALETTE[n % len(PALETTE)]}">'
                f"<title>{escape(category)} · {escape(name)}: {value:g}</title></rect>"
            )
        label_x = x + bar_w / 2
        parts.append(
            f'<text x="{label_x:.1f}" y="{TOP + plot_h + 12}" font-size="10" text-anchor="end"'
            f' transform="rotate(-30 {label_x:.1f} {TOP + plot_h + 12})">{escape(category)}</text>'
        )
    if len(names) > 1:
        for n, name in enumerate(names):
            x = LEFT + 160 * (n % 4)
            y = HEIGHT - 26 + 12 * (n // 4)
            parts.append(
                f'<rect x="{x}" y="{y - 8}" width="9" height="9"'
                f' fill="{PALETTE[n % len(PALETTE)]}"/>'
                f'<text x="{x + 12}" y="{y}" font-size="10">{escape(name)}</text>'
            )
    if not categories:
        parts.append(
            f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" fill="#777">'
            "no data in this period</text>"
        )
    parts.append("</svg>")
    return "".join(parts)
