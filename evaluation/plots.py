"""Plotly figures for the app and reports: per-token P(unsafe), the pipeline diagram, benchmark bars, loss curves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go

from reminder.generation import Generation

COLOURS = {"baseline": "#d62728", "guarded": "#1f77b4", "threshold": "#7f7f7f", "reminder": "#2ca02c"}
LAYOUT = dict(template="plotly_white", margin=dict(l=50, r=20, t=50, b=40), height=360,
              legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="right", x=1))


def _hover(tokens: Sequence[str]) -> list[str]:
    """Token texts made visible in a hover box (whitespace shown, HTML escaped)."""
    return [repr(t)[1:-1].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") for t in tokens]


def token_scores(baseline: Generation, guarded: Generation, threshold: float) -> go.Figure:
    """Per-token P(unsafe) of both runs, the threshold line, and a marker where the reminder fired."""
    fig = go.Figure()
    for name, run in (("guarded", guarded), ("baseline", baseline)):  # baseline dotted on top: both stay visible
        scores = run.harm_scores or []
        fig.add_trace(go.Scatter(
            x=list(range(len(scores))), y=scores, mode="lines+markers", name=name,
            line=dict(color=COLOURS[name], width=4 if name == "guarded" else 2,
                      dash="solid" if name == "guarded" else "dot"),
            marker=dict(size=7 if name == "guarded" else 4), customdata=_hover(run.tokens[:len(scores)]),
            hovertemplate=f"{name} #%{{x}} %{{customdata}}<br>P(unsafe)=%{{y:.3f}}<extra></extra>"))
    checks = guarded.checks
    if checks:
        fig.add_trace(go.Scatter(
            x=[c.at - 1 for c in checks], y=[c.p_unsafe for c in checks], mode="markers", name="check",
            marker=dict(symbol=["star" if c.fired else "circle-open" for c in checks], size=13,
                        color=[COLOURS["reminder"] if c.fired else COLOURS["threshold"] for c in checks]),
            hovertemplate="check after %{text} tokens<br>gate score=%{y:.4f}<extra></extra>",
            text=[str(c.at) for c in checks]))
    fig.add_hline(y=threshold, line=dict(color=COLOURS["threshold"], dash="dash"),
                  annotation_text=f"threshold {threshold:.4f}", annotation_position="top left")
    entered = "reminder entered (rolled back)" if guarded.mode == "rollback" else "reminder fired"
    for at in guarded.injections:
        fig.add_vline(x=at - 0.5, line=dict(color=COLOURS["reminder"], width=2),
                      annotation_text=entered, annotation_position="top right")
    fig.update_layout(title="P(unsafe) per generated token", xaxis_title="generated token",
                      yaxis_title="P(unsafe)", yaxis_range=[-0.02, 1.02], **LAYOUT)
    return fig


PIPELINE = (
    ("image + prompt", "#e8eef7"), ("VLM decodes\n(KV cache)", "#e8eef7"),
    ("every k tokens:\nappend soft prompt", "#e6f4ea"),
    ("detector on hidden\nstate → P(unsafe)", "#e6f4ea"), ("P ≥ τ ?", "#fff4e5"),
)


def pipeline() -> go.Figure:
    """The guarded-generation pipeline as boxes and arrows (for the About tab)."""
    fig = go.Figure()
    width, gap = 1.0, 0.45
    for i, (label, colour) in enumerate(PIPELINE):
        x0 = i * (width + gap)
        fig.add_shape(type="rect", x0=x0, x1=x0 + width, y0=0.6, y1=1.4, fillcolor=colour,
                      line=dict(color="#555"), layer="below")
        fig.add_annotation(x=x0 + width / 2, y=1.0, text=label.replace("\n", "<br>"), showarrow=False,
                           font=dict(size=12))
        if i:
            fig.add_annotation(x=x0, y=1.0, ax=x0 - gap, ay=1.0, xref="x", yref="y", axref="x", ayref="y",
                               showarrow=True, arrowhead=2, arrowwidth=1.5, text="")
    last = (len(PIPELINE) - 1) * (width + gap) + width / 2
    for y, text in ((1.9, "yes: keep the reminder in context → the model steers to a refusal"),
                    (0.1, "no: crop the KV cache → continue as if nothing happened")):
        fig.add_annotation(x=last, y=y, ax=last, ay=1.4 if y > 1 else 0.6, xref="x", yref="y", axref="x",
                           ayref="y", showarrow=True, arrowhead=2, text="", arrowwidth=1.5)
        fig.add_annotation(x=last, y=y, text=text, showarrow=False, xanchor="right", yanchor="middle",
                           font=dict(size=12), bgcolor="white")
    fig.update_xaxes(visible=False, range=[-0.1, len(PIPELINE) * (width + gap)])
    fig.update_yaxes(visible=False, range=[-0.2, 2.2])
    fig.update_layout(template="plotly_white", height=300, margin=dict(l=10, r=10, t=30, b=10),
                      title="Guarded generation with a safety reminder")
    return fig


def benchmark_bars(results: Mapping[str, Mapping[str, float]], metric: str = "attack success rate") -> go.Figure:
    """Grouped bars: ``results[group][series] = value`` (e.g. attack -> {baseline, guarded} -> ASR)."""
    groups = list(results)
    series = list(dict.fromkeys(s for g in groups for s in results[g]))
    fig = go.Figure([go.Bar(name=s, x=groups, y=[results[g].get(s) for g in groups],
                            marker_color=COLOURS.get(s), texttemplate="%{y:.2f}", textposition="outside")
                     for s in series])
    fig.update_layout(barmode="group", title=metric, yaxis_title=metric, **LAYOUT)
    return fig


def loss_curve(steps: Sequence[int], losses: Mapping[str, Sequence[float]]) -> go.Figure:
    """Training losses over steps: one line per named loss term."""
    fig = go.Figure([go.Scatter(x=list(steps)[:len(v)], y=list(v), mode="lines+markers", name=k)
                     for k, v in losses.items()])
    fig.update_layout(title="training loss", xaxis_title="step", yaxis_title="loss", **LAYOUT)
    return fig
