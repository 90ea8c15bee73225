"""Stacked bar charts as geometry for inline SVG: drawn on the server, so they need no script and no network.

The template turns a `Chart` into <rect>s; everything here is plain arithmetic, easy to test. The SVG has a
viewBox and scales to the page width, so one drawing serves a phone and a desktop.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Literal

from edgeproxy.ui import fmt

Metric = Literal["spend", "requests", "tokens"]
METRICS: tuple[Metric, ...] = ("spend", "requests", "tokens")
# Tableau 10: distinguishable for most forms of colour blindness; the last (grey) is "other".
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f")
OTHER_COLOR = "#bab0ac"
OTHER = "other"
WIDTH, HEIGHT = 960, 300  # wide enough that 11 px labels stay readable when scaled to a desktop page
LEFT, RIGHT, TOP, BOTTOM = 64, 8, 12, 30
MAX_X_LABELS = 8


@dataclass(frozen=True, slots=True)
class Segment:
    x: float
    y: float
    width: float
    height: float
    color: str
    title: str  # shown by the browser on hover, and read by screen readers


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    color: str
    total: float
    shown_total: str


@dataclass(frozen=True, slots=True)
class Tick:
    x: float
    y: float
    label: str


@dataclass(frozen=True)
class Chart:
    title: str
    metric: Metric
    total: float
    segments: list[Segment] = field(default_factory=list)
    legend: list[Series] = field(default_factory=list)
    y_ticks: list[Tick] = field(default_factory=list)
    x_ticks: list[Tick] = field(default_factory=list)
    width: int = WIDTH
    height: int = HEIGHT
    plot_left: int = LEFT
    plot_right: int = WIDTH - RIGHT
    plot_bottom: int = HEIGHT - BOTTOM

    @property
    def empty(self) -> bool:
        return not self.segments


def value_of(row: Mapping[str, Any], metric: Metric) -> float:
    if metric == "spend":
        return float(row["spend"])
    if metric == "requests":
        return float(row["requests"])
    return float(row["prompt_tokens"] + row["completion_tokens"])


def show(value: float, metric: Metric) -> str:
    return fmt.usd(value) if metric == "spend" else fmt.number(value)


def axis_step(peak: float, whole: bool, ticks: int = 4) -> float:
    """A gridline spacing people can read (1, 2, 2.5 or 5 times a power of ten) giving at most `ticks` lines
    above zero; `whole` for counts, which have no quarter requests."""
    if peak <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(peak / ticks))
    while True:
        for factor in (1, 2, 2.5, 5):
            step = factor * power
            if whole and (step < 1 or step != int(step)):
                continue
            if step * ticks >= peak * (1 - 1e-9):
                return step
        power *= 10


def days_between(start: date, end: date) -> list[date]:
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def _rank(totals: dict[str, float], top: int, metric: Metric) -> tuple[dict[str, str], list[Series]]:
    """Colours for the `top` biggest groups, and the legend (with "other" for the rest)."""
    ranked = [name for name, total in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0])) if total > 0]
    colors = {name: PALETTE[i] for i, name in enumerate(ranked[:top])}
    legend = [Series(name, colors[name], totals[name], show(totals[name], metric)) for name in ranked[:top]]
    rest = math.fsum(totals[name] for name in ranked[top:])
    if rest > 0:
        legend.append(Series(OTHER, OTHER_COLOR, rest, show(rest, metric)))
    return colors, legend


def stacked_by_day(
    title: str,
    rows: Iterable[Mapping[str, Any]],
    start: date,
    end: date,
    metric: Metric,
    label: Callable[[Mapping[str, Any]], str],
    top: int = len(PALETTE),
) -> Chart:
    """One bar per day, stacked by group; the `top` biggest groups get colours, the rest are "other"."""
    values: dict[date, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    totals: dict[str, float] = defaultdict(float)
    for row in rows:
        name, amount = label(row), value_of(row, metric)
        values[row["day"]][name] += amount
        totals[name] += amount
    colors, legend = _rank(totals, top, metric)
    chart = Chart(title, metric, math.fsum(totals.values()), legend=legend)
    days = days_between(start, end)
    high = max((math.fsum(values[day].values()) for day in days), default=0.0)
    step = axis_step(high, whole=metric != "spend")
    peak = max(1, math.ceil(high / step - 1e-9)) * step  # the axis top: a whole number of steps
    plot_height = chart.plot_bottom - TOP
    slot = (chart.plot_right - chart.plot_left) / len(days)
    bar = max(slot * 0.8, 1.0)
    for i, day in enumerate(days):
        x, base = chart.plot_left + i * slot + (slot - bar) / 2, float(chart.plot_bottom)
        order = {series.name: n for n, series in enumerate(legend)}
        for name, amount in sorted(values[day].items(), key=lambda kv: order.get(kv[0], len(order))):
            if amount > 0:
                height = amount / peak * plot_height
                base -= height
                title_text = f"{day.isoformat()} {name}: {show(amount, metric)}"
                chart.segments.append(Segment(x, base, bar, height, colors.get(name, OTHER_COLOR), title_text))
    for n in range(round(peak / step) + 1):
        y = chart.plot_bottom - n * step / peak * plot_height
        chart.y_ticks.append(Tick(chart.plot_left, y, show(n * step, metric)))
    every = max(1, math.ceil(len(days) / MAX_X_LABELS))
    for i in range(0, len(days), every):
        x = chart.plot_left + (i + 0.5) * slot
        chart.x_ticks.append(Tick(x, chart.plot_bottom + 18, days[i].strftime("%b %d")))
    return chart


def budget_share(spend: float | None, budget: float | None) -> float | None:
    """How full a budget bar is, 0..1 (None when there is no budget to measure against)."""
    if budget is None or budget <= 0:
        return None if budget is None else 1.0
    return min(max((spend or 0.0) / budget, 0.0), 1.0)
