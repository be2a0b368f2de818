"""``kgit report``: the static registry site, read from git alone.

    kgit-report/
      index.html                  every model: versions, latest, stages; recent activity
      models/NAME.html            metric charts, versions table (newest first), stage timeline
      models/NAME/VERSION.html    metadata, signature, metrics and hyperparameters against the
                                  previous version and the prod holder, how to get and load it
      assets/style.css, assets/plotly.min.js   (written once; pages link them relatively)

Works from ``file://`` with no network and no server. No TensorFlow, no DVC, no data download.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kgit.core.sizes import human_size
from kgit.reporting import data, site
from kgit.reporting.data import COMPARE_STAGE, Comparison, VersionView, metric_text
from kgit.store.git_ops import Repo

__all__ = ["DEFAULT_OUT", "ReportResult", "build"]

DEFAULT_OUT = "kgit-report"
ACTIVITY = 30  # events on the index page


@dataclass
class ReportResult:
    out: str  # the site's folder
    index: str  # its index.html
    models: list[dict[str, Any]]
    versions: int  # version pages written
    files: int
    seconds: float = 0.0
    pages: list[str] = field(default_factory=list)  # every page, relative to ``out``

    @property
    def index_uri(self) -> str:
        return Path(self.index).as_uri()

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": self.out,
            "index": self.index,
            "url": self.index_uri,
            "models": self.models,
            "versions": self.versions,
            "files": self.files,
            "seconds": round(self.seconds, 3),
        }


def build(repo: Repo, names: list[str] | None = None, out: str | os.PathLike[str] = DEFAULT_OUT) -> ReportResult:
    """Write the site for ``names`` (default: every model) into ``out`` and say what was written."""
    import time

    from markupsafe import Markup

    from kgit.reporting import charts

    started = time.perf_counter()
    target = site.check_out(Path(out))  # refuse a bad --out before any work
    models = data.read_models(repo, names)
    env = site.environment()
    env.globals.update(size=lambda n: human_size(n, missing="-"), metric=metric_text, show=_show, site=_site_info(repo))
    files: dict[str, str | bytes] = {"assets/style.css": (site.TEMPLATES / "style.css").read_text()}
    uses_charts = False
    version_page = env.get_template("version.html.j2")
    for m in models:
        metric_charts = [
            (key, Markup(charts.metric_chart(m, key, f"metric-{i}"))) for i, key in enumerate(m.metric_keys)
        ]
        stage = charts.stage_chart(m, "stages")
        uses_charts = uses_charts or bool(metric_charts) or stage is not None
        pages = {v.version for v in m.valid}
        files[m.page] = env.get_template("model.html.j2").render(
            root="../",
            m=m,
            metric_charts=metric_charts,
            stage_chart=Markup(stage) if stage else None,
            pages=pages,
            charts=bool(metric_charts) or stage is not None,
        )
        valid = m.valid
        holder = m.holder(COMPARE_STAGE)
        for i, v in enumerate(valid):
            previous = valid[i + 1] if i + 1 < len(valid) else None
            comparisons = m.comparisons(v, previous, holder)
            files[v.page] = version_page.render(
                root="../../",
                charts=False,
                v=v,
                older=previous,
                newer=valid[i - 1] if i else None,
                comparisons=comparisons,
                metric_rows=_metric_rows(v, comparisons),
                param_rows=_param_rows(v, comparisons),
                training=_training(v),
                semver=v.release.tag.split("@", 1)[1],
            )
    activity = sorted(((m, e) for m in models for e in m.timeline), key=lambda me: me[1].when, reverse=True)[:ACTIVITY]
    files["index.html"] = env.get_template("index.html.j2").render(
        root="", models=models, activity=activity, charts=False
    )
    if uses_charts:
        files["assets/plotly.min.js"] = charts.plotly_js()
    site.write(target, files)
    return ReportResult(
        out=str(target),
        index=str(target / "index.html"),
        models=[data.to_dict(m) for m in models],
        versions=sum(len(m.valid) for m in models),
        files=len(files) + 1,
        seconds=time.perf_counter() - started,
        pages=sorted(p for p in files if p.endswith(".html")),
    )


def _site_info(repo: Repo) -> dict[str, str]:
    from kgit.core.version import VERSION as __version__

    head = repo.head()
    return {
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "repo": repo.root.name,
        "head": head[:8] if head else "-",
        "kgit": __version__,
    }


def _show(value: Any) -> str:
    if value is None:
        return "-"
    return value if isinstance(value, str) else json.dumps(value)


def _training(v: VersionView) -> str:
    training = v.meta.training if v.meta else {}
    if not training.get("compiled"):
        return "not compiled"
    opt = training.get("optimizer") or {}
    lr = (opt.get("config") or {}).get("learning_rate") if isinstance(opt, dict) else None
    lr_text = f"{lr:.6g}" if isinstance(lr, float) else _show(lr)  # float32 noise: 0.0010000000474974513
    return (
        f"{opt.get('class_name') if isinstance(opt, dict) else opt} (lr {lr_text}), loss {_show(training.get('loss'))}"
    )


def _metric_rows(v: VersionView, comparisons: list[Comparison]) -> list[dict[str, Any]]:
    """Per metric: this version's value, and each comparison's value and change (better or worse
    in the metric's direction, as ``kgit diff`` says)."""
    keys = sorted(set(v.metrics).union(*(c.other.metrics for c in comparisons)))
    rows = []
    for key in keys:
        others = []
        for c in comparisons:
            d = c.metrics.get(key) or {}
            delta = d.get("delta")
            text = None if delta is None else ("same" if d.get("verdict") == "same" else f"{delta:+.4g}")
            others.append(
                {
                    "value": metric_text(c.other.metrics.get(key)),
                    "delta": {"text": text, "verdict": d.get("verdict")} if text else None,
                }
            )
        rows.append({"key": key, "value": metric_text(v.metrics.get(key)), "others": others})
    return rows


def _param_rows(v: VersionView, comparisons: list[Comparison]) -> list[dict[str, Any]]:
    mine = v.meta.hyperparameters if v.meta else {}
    theirs = [c.other.meta.hyperparameters if c.other.meta else {} for c in comparisons]
    keys = list(dict.fromkeys([*mine, *(k for t in theirs for k in t)]))
    return [
        {
            "key": key,
            "value": _show(mine.get(key)),
            "others": [{"value": _show(t.get(key)), "changed": t.get(key) != mine.get(key)} for t in theirs],
        }
        for key in keys
    ]
