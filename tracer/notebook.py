"""Stepwise in Jupyter: compact HTML summaries of the records, and figures that need no network.

A `Trace`, a `Step` and a `CacheReport` that end a cell show the HTML built here (their
`_repr_html_` calls these functions). The figures of `tracer.plots` are plotly figures; call
`offline_figures()` once at the top of a notebook and they render inline with plotly.js embedded
in the notebook, never loaded from a CDN:

    import tracer.notebook
    tracer.notebook.offline_figures()
    from tracer.plots import generation as g
    g.attention_heads_figure(tr, 1, "self", 0)   # the last expression of a cell: drawn inline

The summaries reuse the tables and one-line texts of tracer.plots, so a notebook and the app say
the same thing in the same words.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

import plotly.io as pio
from plotly.io.base_renderers import MimetypeRenderer

if TYPE_CHECKING:
    from tracer.doctor import CacheReport
    from tracer.trace import Step, Trace

RENDERER = "stepwise_offline"
# Rows of a trace's step table shown inline: the first few and the last few; the rest are elided.
HEAD_ROWS, TAIL_ROWS = 8, 4
TOP_TOKENS = 5

_BOX = "font-family:sans-serif;font-size:13px;line-height:1.4"
_MUTED = "color:#666"


# ---------------------------------------------------------------------------------------------
# Figures without a network


class OfflineHtmlRenderer(MimetypeRenderer):
    """A figure as text/html whose plotly.js is embedded, never fetched.

    plotly's own "notebook" renderer embeds plotly.js too, but links MathJax from a CDN in every
    figure, and the default in a Jupyter kernel ("plotly_mimetype") draws nothing where no plotly
    extension is installed (nbconvert's HTML, classic viewers). This one embeds plotly.js in the
    first figure a kernel shows and lets the later figures use it.
    """

    def __init__(self) -> None:
        # plotly shows each figure through a shallow copy of the renderer: the copies share this dict.
        self.shown = {"plotly.js": False}

    def to_mimebundle(self, fig_dict: dict) -> dict:
        page = pio.to_html(
            fig_dict,
            include_plotlyjs=not self.shown["plotly.js"],
            include_mathjax=False,
            full_html=False,
            default_width="100%",
            validate=False,
        )
        self.shown["plotly.js"] = True
        return {"text/html": page}


def offline_figures() -> None:
    """Make plotly figures render inline with no network: call once, at the top of a notebook.

    JupyterLab, Notebook 7 and VS Code draw the plotly mime type with the plotly extension they
    bundle; everything else (an HTML export, an older viewer) gets the text/html of
    `OfflineHtmlRenderer`, whose plotly.js is in the notebook itself.
    """
    pio.renderers[RENDERER] = OfflineHtmlRenderer()  # anew: the next figure embeds plotly.js again
    pio.renderers.default = f"plotly_mimetype+{RENDERER}"


# ---------------------------------------------------------------------------------------------
# Summaries


def trace_html(tr: Trace) -> str:
    """A trace in a few lines: the one-line summary, the tokens as a strip, one row per step."""
    from tracer.plots import generation as g

    table = g.steps_table(tr).to_pandas()
    hidden = len(table) - HEAD_ROWS - TAIL_ROWS
    if hidden > 1:
        elided = f'<p style="{_MUTED}">… {hidden} more steps (tr.steps[i] for any of them) …</p>'
        rows = _table(table.head(HEAD_ROWS)) + elided + _table(table.tail(TAIL_ROWS))
    else:
        rows = _table(table)
    parts = [
        f"<b>Trace</b> {html.escape(g.trace_summary(tr))}",
        g.token_strip_html(tr),
        rows,
    ]
    if not tr.capture.complete:
        parts.append(f'<p style="{_MUTED}">{html.escape(tr.capture.describe())}</p>')
    return _box(parts)


def step_html(step: Step) -> str:
    """One step: its phase, what it was fed, the cache after it, the token and the top candidates."""
    from tracer.plots import generation as g

    shape = "×".join(map(str, step.fed_shape)) if step.fed_shape else "nothing recorded"
    cache = step.cache_seq_len()
    texts = {t.token_id: t.text for t in step.topk}
    if step.chosen_id is None:
        chosen = "no token (the step failed)"
    else:
        text = g.show_token(texts.get(step.chosen_id, f"id {step.chosen_id}"))
        prob = "" if step.chosen_prob is None else f" (p = {step.chosen_prob:.3f})"
        chosen = f"<code>{html.escape(text)}</code>{prob}"
    headline = (
        f"<b>Step {step.index}</b> ({step.phase}): fed input_ids [{shape}], "
        f"cache {'off' if cache is None else f'{cache} positions after it'}, chose {chosen}"
    )
    inputs = ", ".join(
        f"{html.escape(name)} {html.escape(str(value))}" for name, value in step.prepare_inputs.items()
    )
    top = ", ".join(
        f"<code>{html.escape(g.show_token(t.text))}</code> {t.prob:.3f}" for t in step.topk[:TOP_TOKENS]
    )
    parts = [headline, f'<span style="{_MUTED}">prepare_inputs_for_generation returned:</span> {inputs}']
    if top:
        parts.append(f'<span style="{_MUTED}">most likely next tokens:</span> {top}')
    parts.append(
        f'<span style="{_MUTED}">{len(step.events)} recorded calls '
        f"(step.events), attention in step.attention(kind, layer)</span>"
    )
    return _box(parts)


def report_html(report: CacheReport) -> str:
    """The cache doctor's verdict, what was compared, the two runs' tokens per step, why and the fix."""
    from tracer.plots import doctor as d

    level, headline = d.verdict(report)
    color = "#2b8a3e" if level == "success" else "#c92a2a"
    parts = [
        f'<b style="color:{color}">{html.escape(headline)}</b>',
        f'<span style="{_MUTED}">{html.escape(report.compared)}</span>',
        _table(
            d.steps_table(report)[
                ["step", "status", *(f"{side} token" for side in d.side_words(report)), "logit diff"]
            ]
        ),
    ]
    if not report.consistent:  # the summary names the suspects and the usual fix
        parts.append(f'<pre style="white-space:pre-wrap">{html.escape(report.summary)}</pre>')
    return _box(parts)


def _table(frame) -> str:
    return frame.to_html(index=False, na_rep="", float_format=lambda x: f"{x:.4g}", border=0)


def _box(parts: list[str]) -> str:
    return f'<div style="{_BOX}">' + "".join(f'<div style="margin:4px 0">{p}</div>' for p in parts) + "</div>"
