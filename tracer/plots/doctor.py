"""Figures and tables of the cache doctor: a CacheReport -> plotly Figure / pandas DataFrame / text.

Pure functions, no Streamlit and no model: pages/cache_doctor.py lays them out.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from tracer.doctor import CacheReport, sequence_name
from tracer.i18n import Gettext, untranslated
from tracer.plots.common import shape_text, value_text
from tracer.trace import Step, TensorInfo, Trace

# A difference of exactly 0 has no place on a log axis: it is drawn at this floor instead.
LOG_FLOOR = 1e-12
COLORS = {"cached": "#1f77b4", "uncached": "#ff7f0e", "bad": "#d62728", "limit": "#7f7f7f"}


def verdict(report: CacheReport, _: Gettext = untranslated) -> tuple[str, str]:
    """("success" | "error", a one-line headline) for the top of the page."""
    if report.comparison == "row-vs-alone":
        return _row_verdict(report, _)
    if report.consistent:
        return "success", "Consistent: cached and uncached generation agree at every compared step."
    step, layer = report.first_divergent_step, report.first_divergent_layer
    if report.kind == "error":
        failed = "cached" if report.cached_error and report.cached_error.step == step else "uncached"
        return "error", f"The {failed} run crashes at step {step}."
    if report.kind == "both-failed":
        return "error", f"Both runs crash at step {step}: the model fails with the cache on and off."
    at_layer = "" if layer is None else f", from decoder layer {layer} on"
    first = ""
    if report.rows_compared > 1:
        which = sequence_name(report, (report.row or 0) * report.num_beams + (report.beam or 0))
        first = _(" ({which} first)").format(which=which)
    return "error", f"Cached generation parts from uncached generation at step {step}{at_layer}{first}."


def _row_verdict(report: CacheReport, _: Gettext) -> tuple[str, str]:
    """The headline of a batch row compared with its prompt generated alone."""
    row, step, layer = report.row, report.first_divergent_step, report.first_divergent_layer
    if report.consistent:
        return "success", _(
            "Row {row} of the batch equals its prompt generated alone at every compared step."
        ).format(row=row)
    if report.kind in ("error", "both-failed"):
        return "error", _(
            "Generating row {row} of the batch or its prompt alone crashes at step {step}."
        ).format(row=row, step=step)
    if layer is None:
        return "error", _(
            "Row {row} of the batch parts from its prompt generated alone at step {step}."
        ).format(row=row, step=step)
    return "error", _(
        "Row {row} of the batch parts from its prompt generated alone at step {step}, from decoder layer "
        "{layer} on."
    ).format(row=row, step=step, layer=layer)


def side_words(report: CacheReport, _: Gettext = untranslated) -> tuple[str, str]:
    """Short names of the two runs for column headers: ("cached", "uncached") or ("batch row", "alone")."""
    if report.comparison == "row-vs-alone":
        return _("batch row"), _("alone")
    return "cached", "uncached"


def reorder_table(report: CacheReport, _: Gettext = untranslated) -> pd.DataFrame:
    """Beam search: after each step, the beams kept (the reorder handed to the cache) and whether every
    cache layer moved its keys and values so, for each run that had a cache."""
    rows = []
    for run, tr in zip(side_words(report, _), (report.cached, report.uncached), strict=True):
        for step in tr.steps:
            beams = step.beams
            if beams is None or beams.reorder is None:
                continue
            missed = [i for i, ok in enumerate(beams.reorder_applied) if not ok]
            rows.append(
                {
                    _("run"): run,
                    _("after step"): step.index,
                    _("beams kept (reorder)"): str(beams.reorder),
                    _("moved"): (
                        _("all layers")
                        if not missed
                        else _("layers {layers} did not").format(layers=", ".join(map(str, missed)))
                    ),
                }
            )
    columns = [_("run"), _("after step"), _("beams kept (reorder)"), _("moved")]
    return pd.DataFrame(rows, columns=columns)


def logit_diff_figure(report: CacheReport, _: Gettext = untranslated) -> go.Figure:
    """Max |cached - uncached| logit per step (log scale), the noise limit, the bug's step marked."""
    rows = report.steps
    x = [r.index for r in rows]
    diffs = [_floor(r.logit_diff) for r in rows]
    limits = [r.logit_limit for r in rows]
    colors = [COLORS["bad"] if r.status in ("diverged", "error") else COLORS["cached"] for r in rows]
    hover = [
        f"step {r.index}: {r.status}<br>logit diff {_num(r.logit_diff)} (noise limit {_num(r.logit_limit)})"
        for r in rows
    ]
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=x,
            y=diffs,
            mode="lines+markers",
            name="max |logit diff|",
            marker={"color": colors, "size": 10},
            line={"color": COLORS["cached"]},
            hovertext=hover,
            hoverinfo="text",
        )
    )
    if any(v is not None for v in limits):
        # Markers too: a run that crashed early leaves one compared step, and one point draws no line.
        fig.add_trace(
            go.Scatter(
                x=x,
                y=limits,
                mode="lines+markers",
                name="noise limit (tolerance)",
                line={"color": COLORS["limit"], "dash": "dash"},
                marker={"color": COLORS["limit"], "size": 7, "symbol": "line-ew-open"},
            )
        )
    step = report.first_divergent_step
    if step is not None:
        label = "crash" if report.kind in ("error", "both-failed") else "first divergence"
        fig.add_vline(x=step, line={"color": COLORS["bad"], "dash": "dot"})
        fig.add_annotation(
            x=step, y=1, yref="paper", text=f"{label}: step {step}", showarrow=False, yanchor="bottom"
        )
        after = [r.index for r in rows if r.index > step]
        if after:
            fig.add_vrect(
                x0=step + 0.5, x1=max(after) + 0.5, fillcolor="lightgray", opacity=0.25, line_width=0
            )
    title, y_title = "Logit difference per step, cache on vs off", "max |cached - uncached| (log)"
    if report.comparison == "row-vs-alone":
        title = _("Logit difference per step,<br>row {row} of the batch vs the prompt alone").format(
            row=report.row
        )
        y_title = _("max |batch row - alone| (log)")
    fig.update_layout(
        title=title,
        xaxis={"title": "step", "dtick": 1},
        yaxis={"title": y_title, "type": "log", "exponentformat": "e"},
        height=360,
        margin={"t": 60, "b": 40},
        legend={"orientation": "h", "y": -0.25},
    )
    return fig


def layer_diff_figure(report: CacheReport) -> go.Figure:
    """Heatmap steps x decoder layers: how many times over its noise limit each layer's output differs."""
    num_layers = max((len(r.layer_diffs) for r in report.steps), default=0)
    ratio = np.full((num_layers, len(report.steps)), np.nan)
    for j, r in enumerate(report.steps):
        for k, (d, lim) in enumerate(zip(r.layer_diffs, r.layer_limits, strict=True)):
            ratio[k, j] = math.log10(max(d, LOG_FLOOR) / lim) if lim > 0 else np.nan
    fig = go.Figure(
        go.Heatmap(
            z=ratio,
            x=[r.index for r in report.steps],
            y=[f"layer {k}" for k in range(num_layers)],
            colorscale=[[0, "#2ca02c"], [0.5, "#f7f7f7"], [1, "#d62728"]],
            zmid=0,
            zmin=-6,
            zmax=6,
            colorbar={"title": "log10(diff / limit)"},
            hovertemplate="step %{x}, %{y}<br>log10(diff / noise limit) = %{z:.2f}<extra></extra>",
        )
    )
    fig.update_layout(
        title="Decoder layer outputs at the newest position: red is over the noise limit",
        xaxis={"title": "step", "dtick": 1},
        yaxis={"autorange": "reversed"},
        height=120 + 40 * max(num_layers, 1),
        margin={"t": 50, "b": 40},
    )
    return fig


def steps_table(report: CacheReport, _: Gettext = untranslated) -> pd.DataFrame:
    """The two runs side by side, one row per step: tokens, what was fed, input shapes, the difference."""
    cached, uncached = report.cached, report.uncached
    a, b = side_words(report, _)
    rows = []
    for r in report.steps:
        c = _step(cached, r.index)
        u = _step(uncached, r.index)
        rows.append(
            {
                "step": r.index,
                "status": r.status,
                f"{a} token": _token(cached, r.cached_token, c),
                f"{a} fed": _fed(c),
                f"{a} inputs": _inputs(c),
                "cache after": None if c is None else c.cache_seq_len(),  # None with the cache off
                f"{b} token": _token(uncached, r.uncached_token, u),
                f"{b} fed": _fed(u),
                f"{b} inputs": _inputs(u),
                "logit diff": r.logit_diff,
                "noise limit": r.logit_limit,
            }
        )
    table = pd.DataFrame(rows)
    # Whole positions, blank where the cache was off: a float column showed "10.000000".
    table["cache after"] = table["cache after"].astype("Int64")
    return table


def largest_logit_diff(report: CacheReport) -> str:
    """The largest logit difference as the chart shows it: below its log floor, "< 1e-12"."""
    finite = [x for x in report.max_logit_diff if x == x]  # NaN where a step was not compared
    if not finite:
        return "-"
    largest = max(finite)
    return f"< {LOG_FLOOR:.0e}" if largest < LOG_FLOOR else f"{largest:.2e}"


def fed_at_step_table(report: CacheReport, step: int, _: Gettext = untranslated) -> pd.DataFrame:
    """Every input fed at `step` in both runs, its shape (or value), and why the doctor suspects it."""
    c, u = _step(report.cached, step), _step(report.uncached, step)
    names = list(dict.fromkeys([*(_fed_inputs(c)), *(_fed_inputs(u))]))
    suspicion = {}
    for s in report.suspects:
        suspicion.setdefault(s.name, []).append(s.reason)
    a, b = (f"{side} run" for side in side_words(report, _))
    return pd.DataFrame(
        [
            {
                "input": name,
                a: _value(_fed_inputs(c).get(name)),
                b: _value(_fed_inputs(u).get(name)),
                "suspect": " ".join(suspicion.get(name, [])),
            }
            for name in names
        ],
        columns=["input", a, b, "suspect"],
    )


def suspects_table(report: CacheReport) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "step": s.step,
                "run": s.run,
                "input": s.name,
                "shape": shape_text(s.shape, "-"),
                "what does not fit": s.reason,
            }
            for s in report.suspects
        ],
        columns=["step", "run", "input", "shape", "what does not fit"],
    )


def errors_text(report: CacheReport, _: Gettext = untranslated) -> list[str]:
    """One line per run that failed: which run, the step, where, the exception."""
    lines = []
    for run, error in zip(side_words(report, _), (report.cached_error, report.uncached_error), strict=True):
        if error is not None:
            where = f" in {error.where}" if error.where else ""
            lines.append(f"{run} run, step {error.step}{where}: {error.type}: {error.message}")
    return lines


# ---------------------------------------------------------------------------------------------
# Helpers


def _floor(x: float | None) -> float | None:
    if x is None or not math.isfinite(x):
        return None
    return max(x, LOG_FLOOR)


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.2e}"


def _step(tr: Trace, index: int) -> Step | None:
    return tr.steps[index] if index < len(tr.steps) else None


def _token(tr: Trace, token_id: int | None, step: Step | None) -> str:
    if token_id is not None:
        return tr.token_text(token_id)
    if tr.error is not None and step is not None and tr.error.step == step.index:
        return "(crashed)"
    return "-"


def _fed_inputs(step: Step | None) -> dict:
    """What the model was fed at this step: prepare_inputs, or the forward call's inputs of a loop."""
    if step is None:
        return {}
    if step.prepare_inputs:
        return step.prepare_inputs
    forward = step.event("forward")
    return {} if forward is None else forward.inputs


def _fed(step: Step | None) -> str:
    if step is None:
        return "-"
    ids = step.fed_ids
    shape = shape_text(step.fed_shape, "-")
    if ids is None or len(ids) > 6:
        return shape
    return f"{shape} {ids}"


def _inputs(step: Step | None) -> str:
    """Shapes of the tensors fed beside the token ids, e.g. 'pixel_values [3, 48], position_ids [1, 1]'."""
    skip = {"input_ids", "decoder_input_ids"}
    return ", ".join(
        f"{name} {shape_text(v.shape)}"
        for name, v in _fed_inputs(step).items()
        if isinstance(v, TensorInfo) and name not in skip
    )


def _value(v) -> str:
    """An input of the fed-at-step table: a small tensor with its values, e.g. "[1, 1] [5]"."""
    return value_text(v, missing="-", numbers=8, spaced=True)
