"""The report's charts, drawn by plotly: each is a ``<div>`` with the figure's data, and plotly's
JavaScript (``plotly.min.js``, shipped inside the pip package) is written once into the site, so the
pages need no network. The only plotly importer."""

from __future__ import annotations

from typing import Any

from kgit.core import metrics
from kgit.reporting.data import ModelView, metric_text

GREY = "#b0b0b0"
BLUE = "#1f6feb"
STAGE = "#d4a72c"
CONFIG = {"displaylogo": False, "responsive": True, "modeBarButtonsToRemove": ["toImage", "sendDataToCloud"]}


def plotly_js() -> str:
    """plotly.js itself (minified), from the installed plotly package: no download."""
    from plotly.offline import get_plotlyjs

    return str(get_plotlyjs())


def _html(fig: dict[str, Any], div_id: str) -> str:
    """The figure as a ``<div>`` and the script that draws it. The figure is built as plain data, so
    plotly does not validate it point by point (seconds at 1,500 versions); plotly's JSON encoder
    escapes ``<`` in the data, so no text in it can end the script."""
    import plotly.io as pio

    return str(pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=div_id, config=CONFIG, validate=False))


def metric_chart(model: ModelView, key: str, div_id: str) -> str:
    """``key`` across the versions (oldest first); the versions holding a stage are starred;
    hovering a point shows its version, source commit and value."""
    points = [v for v in reversed(model.versions) if v.problem is None and key in v.metrics]
    better = {"min": "lower is better", "max": "higher is better"}.get(metrics.direction(key, model.directions), "")

    def hover(vs: list[Any]) -> list[list[str]]:
        return [
            [
                (v.source_commit or "-")[:8],
                metric_text(v.metrics[key]),
                ", ".join(v.release.stages),
                " (deprecated)" if v.release.deprecated else "",
                key,
            ]
            for v in vs
        ]

    template = "<b>%{x}</b>%{customdata[3]}<br>commit %{customdata[0]}<br>%{customdata[4]} = %{customdata[1]}<extra>%{customdata[2]}</extra>"
    traces: list[dict[str, Any]] = [
        {
            "type": "scatter",
            "x": [v.version for v in points],
            "y": [v.metrics[key] for v in points],
            "customdata": hover(points),
            "mode": "lines+markers",
            "name": "versions",
            "hovertemplate": template,
            "line": {"color": BLUE, "width": 1.5},
            "marker": {"size": 7, "color": [GREY if v.release.deprecated else BLUE for v in points]},
        }
    ]
    holders = [v for v in points if v.release.stages]
    if holders:
        traces.append(
            {
                "type": "scatter",
                "x": [v.version for v in holders],
                "y": [v.metrics[key] for v in holders],
                "customdata": hover(holders),
                "mode": "markers+text",
                "name": "stage holders",
                "text": [", ".join(v.release.stages) for v in holders],
                "textposition": "top center",
                "cliponaxis": False,
                "hovertemplate": template,
                "marker": {"size": 16, "symbol": "star", "color": STAGE, "line": {"color": "#333", "width": 1}},
            }
        )
    layout = {
        "title": {"text": f"{key} <span style='font-size:12px;color:#666'>({better})</span>" if better else key},
        "height": 320,
        "margin": {"l": 50, "r": 20, "t": 50, "b": 40},
        "showlegend": bool(holders),
        "legend": {"orientation": "h", "y": -0.2},
        "template": _template(),
        "xaxis": {"type": "category"},
        "yaxis": {},
    }
    return _html({"data": traces, "layout": layout}, div_id)


def stage_chart(model: ModelView, div_id: str) -> str | None:
    """Which version held each stage over time: a step line per stage, each change labelled."""
    changes = [e for e in reversed(model.timeline) if e.stage and e.event in ("promoted", "rolled back", "demoted")]
    if not changes:
        return None
    traces = []
    for stage in sorted({e.stage for e in changes if e.stage}):
        events = [e for e in changes if e.stage == stage]
        traces.append(
            {
                "type": "scatter",
                "x": [e.when for e in events],
                "y": [stage] * len(events),
                "name": stage,
                "mode": "lines+markers+text",
                "line": {"shape": "hv", "width": 6},
                "text": [e.version if e.event != "demoted" else "demoted" for e in events],
                "textposition": "top center",
                "cliponaxis": False,
                "customdata": [[e.event, e.version or "-", e.who, e.commit[:8]] for e in events],
                "hovertemplate": "%{customdata[0]} %{customdata[1]}<br>by %{customdata[2]}<br>"
                "commit %{customdata[3]}<br>%{x}<extra>%{y}</extra>",
                "marker": {"size": 11, "symbol": ["x" if e.event == "demoted" else "circle" for e in events]},
            }
        )
    layout = {
        "height": 120 + 50 * len(traces),
        "margin": {"l": 80, "r": 20, "t": 30, "b": 40},
        "showlegend": False,
        "template": _template(),
        "yaxis": {"type": "category"},
        "title": {"text": "stages over time"},
    }
    return _html({"data": traces, "layout": layout}, div_id)


def _template() -> Any:
    """plotly's own light theme, as data."""
    import plotly.io as pio

    return pio.templates["plotly_white"].to_plotly_json()
