"""The benchmark report: one self-contained HTML page with plotly bar charts and the summary table."""

from __future__ import annotations

import html
from pathlib import Path

import plotly.io as pio

from .plots import benchmark_bars


def write_report(summary, path: str | Path, title: str = "benchmark") -> Path:
    """ASR per attack x defence for each judge, over-refusal, tokens before the reminder fired, and the table."""
    overall = [g for g in summary.groups if g["category"] == "all"]
    metrics = [k for k in (overall[0] if overall else {}) if k.startswith(("asr_", "over_refusal_"))]
    metrics += ["fire_rate", "tokens_before_reminder", "seconds_per_token"]
    figures = []
    for metric in metrics:
        data: dict[str, dict[str, float]] = {}
        for g in overall:
            if g.get(metric) is not None:
                data.setdefault(f"{g['dataset']} / {g['attack']}", {})[g["defense"]] = g[metric]
        if data:
            figures.append(benchmark_bars(data, metric.replace("_", " ")))
    charts = "\n".join(pio.to_html(fig, full_html=False, include_plotlyjs=i == 0)
                       for i, fig in enumerate(figures))
    cols = list(dict.fromkeys(k for g in summary.groups for k in g))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(g.get(c, '')))}</td>" for c in cols) + "</tr>"
                   for g in summary.groups)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:12px}"
            "td,th{border:1px solid #ccc;padding:3px 6px}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p>{len(summary.rows)} generations.</p>{charts}"
            f"<h2>Summary</h2><table><tr>{head}</tr>{body}</table></body></html>")
    path = Path(path)
    path.write_text(page, encoding="utf-8")
    return path
