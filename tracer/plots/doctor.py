"""Figures and tables of the cache doctor: a CacheReport -> plotly Figure / pandas DataFrame / text.

Pure functions, no Streamlit and no model: pages/cache_doctor.py lays them out.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from tracer import doctor, i18n
from tracer.doctor import CacheReport, sequence_name
from tracer.i18n import N_, Gettext, untranslated
from tracer.plots.common import shape_text, value_text
from tracer.trace import Step, TensorInfo, Trace

# A difference of exactly 0 has no place on a log axis: it is drawn at this floor instead.
LOG_FLOOR = 1e-12
COLORS = {"cached": "#1f77b4", "uncached": "#ff7f0e", "bad": "#d62728", "limit": "#7f7f7f"}
# A step's status (StepComparison.status), shown through _ in the table and the hover text.
STATUS_WORDS = (
    N_("same"), N_("diverged"), N_("error"), N_("both-failed"),
    N_("noise-flip"), N_("not compared"), N_("missing"),
)  # fmt: skip


def verdict(report: CacheReport, _: Gettext = untranslated) -> tuple[str, str]:
    """("success" | "error", a one-line headline) for the top of the page."""
    if report.comparison == "row-vs-alone":
        return _row_verdict(report, _)
    if report.consistent:
        return "success", _("Consistent: cached and uncached generation agree at every compared step.")
    step, layer = report.first_divergent_step, report.first_divergent_layer
    if report.kind == "error":
        if report.cached_error and report.cached_error.step == step:
            return "error", _("The cached run crashes at step {step}.").format(step=step)
        return "error", _("The uncached run crashes at step {step}.").format(step=step)
    if report.kind == "both-failed":
        return "error", _(
            "Both runs crash at step {step}: the model fails with the cache on and off."
        ).format(step=step)
    at_layer = "" if layer is None else _(", from decoder layer {layer} on").format(layer=layer)
    first = ""
    if report.rows_compared > 1:
        which = sequence_name(report, (report.row or 0) * report.num_beams + (report.beam or 0), _)
        first = _(" ({which} first)").format(which=which)
    return "error", _(
        "Cached generation parts from uncached generation at step {step}{at_layer}{first}."
    ).format(step=step, at_layer=at_layer, first=first)


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
    return _("cached"), _("uncached")


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


def summary_text(report: CacheReport, _: Gettext = untranslated) -> str:
    """The report's plain-language summary in the language of `_` (report.summary is the English)."""
    return report.summary if _ is untranslated else doctor.summary_in(report, _)


def compared_text(report: CacheReport, _: Gettext = untranslated) -> str:
    """What the report compared, in the language of `_` (report.compared is the English)."""
    templates = (doctor.COMPARED, doctor.COMPARED_ROW)
    return i18n.reword(report.compared, templates, _, doctor.COMPARED_FIELDS)


def suspect_reasons(report: CacheReport, _: Gettext = untranslated) -> list[str]:
    """What does not fit, one sentence per suspect, in the language of `_`."""
    if _ is untranslated:
        return [s.reason for s in report.suspects]
    return [s.reason for s in doctor.suspects_in(report, _)]


def logit_diff_figure(report: CacheReport, _: Gettext = untranslated) -> go.Figure:
    """Max |cached - uncached| logit per step (log scale), the noise limit, the bug's step marked."""
    rows = report.steps
    x = [r.index for r in rows]
    diffs = [_floor(r.logit_diff) for r in rows]
    limits = [r.logit_limit for r in rows]
    colors = [COLORS["bad"] if r.status in ("diverged", "error") else COLORS["cached"] for r in rows]
    hover = [
        _("step {step}: {status}<br>logit diff {diff} (noise limit {limit})").format(
            step=r.index, status=_(r.status), diff=_num(r.logit_diff), limit=_num(r.logit_limit)
        )
        for r in rows
    ]
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=x,
            y=diffs,
            mode="lines+markers",
            name=_("max |logit diff|"),
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
                name=_("noise limit (tolerance)"),
                line={"color": COLORS["limit"], "dash": "dash"},
                marker={"color": COLORS["limit"], "size": 7, "symbol": "line-ew-open"},
            )
        )
    step = report.first_divergent_step
    if step is not None:
        label = (
            _("crash: step {step}")
            if report.kind in ("error", "both-failed")
            else _("first divergence: step {step}")
        )
        fig.add_vline(x=step, line={"color": COLORS["bad"], "dash": "dot"})
        fig.add_annotation(
            x=step, y=1, yref="paper", text=label.format(step=step), showarrow=False, yanchor="bottom"
        )
        after = [r.index for r in rows if r.index > step]
        if after:
            fig.add_vrect(
                x0=step + 0.5, x1=max(after) + 0.5, fillcolor="lightgray", opacity=0.25, line_width=0
            )
    title, y_title = _("Logit difference per step, cache on vs off"), _("max |cached - uncached| (log)")
    if report.comparison == "row-vs-alone":
        title = _("Logit difference per step,<br>row {row} of the batch vs the prompt alone").format(
            row=report.row
        )
        y_title = _("max |batch row - alone| (log)")
    fig.update_layout(
        title=title,
        xaxis={"title": _("step"), "dtick": 1},
        yaxis={"title": y_title, "type": "log", "exponentformat": "e"},
        height=360,
        margin={"t": 60, "b": 40},
        legend={"orientation": "h", "y": -0.25},
    )
    return fig


def layer_diff_figure(report: CacheReport, _: Gettext = untranslated) -> go.Figure:
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
            y=[_("layer {layer}").format(layer=k) for k in range(num_layers)],
            colorscale=[[0, "#2ca02c"], [0.5, "#f7f7f7"], [1, "#d62728"]],
            zmid=0,
            zmin=-6,
            zmax=6,
            colorbar={"title": "log10(diff / limit)"},
            hovertemplate=_("step")
            + " %{x}, %{y}<br>log10(diff / "
            + _("noise limit")
            + ") = %{z:.2f}<extra></extra>",
        )
    )
    fig.update_layout(
        title=_("Decoder layer outputs at the newest position: red is over the noise limit"),
        xaxis={"title": _("step"), "dtick": 1},
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
                N_("step"): r.index,
                N_("status"): _(r.status),
                _("{side} token").format(side=a): _token(cached, r.cached_token, c, _),
                _("{side} fed").format(side=a): _fed(c),
                _("{side} inputs").format(side=a): _inputs(c),
                N_("cache after"): None if c is None else c.cache_seq_len(),  # None with the cache off
                _("{side} token").format(side=b): _token(uncached, r.uncached_token, u, _),
                _("{side} fed").format(side=b): _fed(u),
                _("{side} inputs").format(side=b): _inputs(u),
                N_("logit diff"): r.logit_diff,
                N_("noise limit"): r.logit_limit,
            }
        )
    table = pd.DataFrame(rows)
    # Whole positions, blank where the cache was off: a float column showed "10.000000".
    table["cache after"] = table["cache after"].astype("Int64")
    return table.rename(columns=_)


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
    for s in report.suspects if _ is untranslated else doctor.suspects_in(report, _):
        suspicion.setdefault(s.name, []).append(s.reason)
    a, b = (_("{side} run").format(side=side) for side in side_words(report, _))
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
        columns=[N_("input"), a, b, N_("suspect")],
    ).rename(columns={"input": _("input"), "suspect": _("suspect")})


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
            where = _(" in {where}").format(where=error.where) if error.where else ""
            run_step = _("{side} run, step {step}").format(side=run, step=error.step)
            lines.append(f"{run_step}{where}: {error.type}: {error.message}")
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


def _token(tr: Trace, token_id: int | None, step: Step | None, _: Gettext = untranslated) -> str:
    if token_id is not None:
        return tr.token_text(token_id)
    if tr.error is not None and step is not None and tr.error.step == step.index:
        return _("(crashed)")
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
