"""The training views as pure functions: a TrainingTrace or TrainerStepTrace -> plotly Figure or DataFrame.

The "Training step" page only lays out what these build:

- the shift: `shift_table`, `shift_figure` (labels and what the decoder is fed, aligned)
- the loss: `loss_figure` (per-token bars, ignored positions grey), `loss_table`, `loss_summary`
- the teacher-forced pass: `events_table`, `attention_figure`, `bias_summary`
- the Trainer loop: `trainer_flow_figure`, `trainer_table`, `grad_norm_figure`, `update_figure`
- teacher forcing beside generation: `teacher_vs_generation`, `teacher_vs_generation_figure`

Positions are the decoder's: position t is fed `tt.decoder_ids[t]` and scored against
`tt.scored_labels[t]` (BART: labels[t]; Llama: the next token).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from tracer.i18n import N_, Gettext, untranslated
from tracer.plots.common import KIND_TITLES as GENERATION_KIND_TITLES
from tracer.plots.common import (
    OTHER_COLOR,
    TEXT_COLOR,
    attention_heatmap,
    message_figure,
    plot_text,
    projector_text,
    shape_of,
    tick_labels,
    token_label,
)
from tracer.plots.common import attention_kinds as attention_kinds  # the page calls plots.attention_kinds
from tracer.trace import Trace
from tracer.training import IGNORE_INDEX, TrainerStepTrace, TrainingTrace

FED_COLOR = "#d0e2ff"  # what the decoder is fed
LABEL_COLOR = "#ffe3b3"  # what a position is scored against
START_COLOR = "#b2f2bb"  # BART's decoder_start_token_id
IGNORED_COLOR = "#ced4da"  # -100: left out of the loss
LOSS_COLOR = "#e8590c"
KIND_TITLES = {**GENERATION_KIND_TITLES, "self": N_("decoder self-attention (causal)")}


def _token(tt: TrainingTrace, token_id: int) -> str:
    """A label's token, or "-100" where the label is left out of the loss."""
    return "-100" if token_id == IGNORE_INDEX else token_label(tt, token_id)


def _plot_token(tt: TrainingTrace, token_id: int) -> str:
    return plot_text(_token(tt, token_id))


# ---------------------------------------------------------------------------------------------
# The shift


def shift_table(tt: TrainingTrace, *, _: Gettext = untranslated) -> pd.DataFrame:
    """One column per decoder position; rows show what is fed and what is scored, aligned."""
    columns = [str(t) for t in range(tt.num_positions)]
    if tt.encoder_decoder:
        rows = {
            "labels": [_token(tt, i) for i in tt.labels],
            "labels (ids)": [str(i) for i in tt.labels],
            "decoder_input_ids = shift_tokens_right(labels)": [_token(tt, i) for i in tt.decoder_ids],
            "decoder_input_ids (ids)": [str(i) for i in tt.decoder_ids],
        }
    else:
        rows = {
            N_("input_ids (fed)"): [_token(tt, i) for i in tt.input_ids],
            N_("labels (as passed)"): [_token(tt, i) for i in tt.labels],
            N_("scored against (labels shifted left in the loss)"): [_token(tt, i) for i in tt.scored_labels],
        }
    rows[N_("predicted (argmax)")] = [_token(tt, i) for i in tt.predicted_ids]
    return pd.DataFrame.from_dict(rows, orient="index", columns=columns).rename(index=_)


def shift_figure(tt: TrainingTrace, *, _: Gettext = untranslated) -> go.Figure:
    """Two rows of tokens, arrows showing where each label goes.

    BART: labels on top, decoder_input_ids below; label t is fed at position t + 1, the start
    token at 0. Llama: input_ids on top, the scored label below; the token fed at t + 1 is what
    position t is scored against.
    """
    n = tt.num_positions
    if tt.encoder_decoder:
        top_ids, bottom_ids = tt.labels, tt.decoder_ids
        top_name, bottom_name = "labels", "decoder_input_ids"
        arrows = [(t, t + 1) for t in range(n - 1)]  # (top position, bottom position)
    else:
        top_ids, bottom_ids = tt.input_ids, tt.scored_labels
        top_name, bottom_name = _("input_ids (fed)"), _("scored against")
        arrows = [(t + 1, t) for t in range(n - 1)]

    def colors(ids: list[int], row: str) -> list[str]:
        out = []
        for t, i in enumerate(ids):
            if i == IGNORE_INDEX:
                out.append(IGNORED_COLOR)
            elif tt.encoder_decoder and row == "bottom" and t == 0:
                out.append(START_COLOR)
            else:
                out.append(LABEL_COLOR if (row == "top") == tt.encoder_decoder else FED_COLOR)
        return out

    fig = go.Figure()
    for y, ids, row, name in ((1.0, top_ids, "top", top_name), (0.0, bottom_ids, "bottom", bottom_name)):
        fig.add_trace(
            go.Scatter(
                x=list(range(n)),
                y=[y] * n,
                mode="markers+text",
                marker=dict(
                    size=50, symbol="square", color=colors(ids, row), line=dict(color="#495057", width=1)
                ),
                text=[_plot_token(tt, i) for i in ids],
                textfont=dict(size=14, color=TEXT_COLOR),
                customdata=[[t, i] for t, i in enumerate(ids)],
                hovertemplate=f"{name}[%{{customdata[0]}}] = %{{customdata[1]}}<extra></extra>",
                name=name,
                showlegend=False,
            )
        )
    for top, bottom in arrows:
        if not tt.encoder_decoder and bottom_ids[bottom] == IGNORE_INDEX:
            continue  # a Llama position that is not scored: no label comes to it
        fig.add_annotation(
            x=bottom,
            y=0.18,
            ax=top,
            ay=0.82,
            xref="x",
            yref="y",
            axref="x",
            ayref="y",
            showarrow=True,
            arrowhead=2,
            arrowwidth=1.2,
            arrowcolor="#868e96",
        )
    fig.update_layout(
        height=250,
        margin=dict(l=10, r=10, t=30, b=30),
        **projector_text(14),
        xaxis=dict(title=_("position"), tickmode="linear", dtick=1, range=[-0.7, n - 0.3], zeroline=False),
        yaxis=dict(
            tickmode="array",
            tickvals=[0, 1],
            ticktext=[bottom_name, top_name],
            range=[-0.5, 1.5],
            zeroline=False,
        ),
        plot_bgcolor="white",
    )
    return fig


# ---------------------------------------------------------------------------------------------
# The loss


def loss_table(tt: TrainingTrace, *, _: Gettext = untranslated) -> pd.DataFrame:
    """One row per decoder position: fed, scored against, predicted, p(label), cross-entropy."""
    rows = []
    for t in range(tt.num_positions):
        ignored = bool(tt.ignored[t])
        rows.append(
            {
                N_("position"): t,
                N_("fed"): _token(tt, tt.decoder_ids[t]),
                N_("scored against"): _token(tt, tt.scored_labels[t]),
                N_("predicted"): _token(tt, tt.predicted_ids[t]),
                "p(label)": None if ignored else round(float(tt.label_probs[t]), 4),
                N_("cross-entropy"): None if ignored else round(float(tt.per_token_loss[t]), 4),
                N_("ignored (-100)"): ignored,
            }
        )
    return pd.DataFrame(rows).rename(columns=_)


def loss_figure(tt: TrainingTrace, *, _: Gettext = untranslated) -> go.Figure:
    """Per-token cross-entropy as bars; ignored positions as short grey bars; the mean as a line."""
    n = tt.num_positions
    ticks = [
        f"{t}: {_plot_token(tt, tt.decoder_ids[t])} → {_plot_token(tt, tt.scored_labels[t])}"
        for t in range(n)
    ]
    scored = ~tt.ignored
    top = float(tt.per_token_loss[scored].max()) if scored.any() else 1.0
    stub = 0.04 * max(top, 1e-6)  # ignored positions still show, as a stub, so the eye sees the gap
    heights = [stub if tt.ignored[t] else float(tt.per_token_loss[t]) for t in range(n)]
    colors = [IGNORED_COLOR if tt.ignored[t] else LOSS_COLOR for t in range(n)]
    hover = [
        _("ignored (-100): not in the loss")
        if tt.ignored[t]
        else _("cross-entropy {loss:.4f}<br>p(label) {p:.4f}").format(
            loss=tt.per_token_loss[t], p=tt.label_probs[t]
        )
        for t in range(n)
    ]
    fig = go.Figure(
        go.Bar(
            x=list(range(n)),
            y=heights,
            marker_color=colors,
            text=[_("ignored") if tt.ignored[t] else f"{tt.per_token_loss[t]:.2f}" for t in range(n)],
            textposition="outside",
            hovertext=hover,
            hoverinfo="text",
        )
    )
    fig.add_hline(
        y=tt.loss,
        line_dash="dash",
        line_color="#495057",
        annotation_text=_("loss = mean over {count} positions = {loss:.4f}").format(
            count=int(scored.sum()), loss=tt.loss
        ),
        annotation_position="top left",
    )
    fig.update_layout(
        height=340,
        margin=dict(l=10, r=10, t=40, b=10),
        xaxis=dict(
            tickmode="array", tickvals=list(range(n)), ticktext=ticks, title=_("position: fed → label")
        ),
        yaxis=dict(title=_("cross-entropy (nats)"), range=[0, top * 1.25 + 1e-6]),
        showlegend=False,
        plot_bgcolor="white",
    )
    return fig


def loss_summary(tt: TrainingTrace, *, _: Gettext = untranslated) -> str:
    scored = int((~tt.ignored).sum())
    shift = (
        _("Logits at position t are scored against labels[t].")
        if tt.encoder_decoder
        else _("The loss shifts the labels left: logits at position t are scored against the token at t + 1.")
    )
    return _(
        "loss = {loss:.6f}, the mean of {scored} per-token cross-entropies "
        "(mean recomputed here: {mean:.6f}); {ignored} positions are -100 and left out."
    ).format(loss=tt.loss, scored=scored, mean=tt.mean_token_loss, ignored=tt.num_positions - scored) + (
        " " + shift
    )


# ---------------------------------------------------------------------------------------------
# The teacher-forced pass


def events_table(tt: TrainingTrace, *, _: Gettext = untranslated) -> pd.DataFrame:
    """The teacher-forced pass, one row per hook point in call order, with shapes."""
    rows = []
    for event in tt.events:
        rows.append(
            {
                N_("hook point"): event.name,
                N_("module"): event.module,
                N_("inputs"): ", ".join(f"{k} {shape_of(v)}" for k, v in event.inputs.items()),
                N_("outputs"): ", ".join(f"{k} {shape_of(v)}" for k, v in event.outputs.items()),
                N_("note"): event.note,
            }
        )
    return pd.DataFrame(rows).rename(columns=_)


def num_heads(tt: TrainingTrace, kind: str = "self") -> int:
    try:
        return int(tt.attention(kind, 0).shape[0])
    except KeyError:
        return 0


def attention_figure(
    tt: TrainingTrace, kind: str, layer: int, head: int | None = None, *, _: Gettext = untranslated
) -> go.Figure:
    """One head's (or, with head=None, the heads' mean) teacher-forced attention, tokens on the axes."""
    try:
        weights = tt.attention(kind, layer)  # [heads, q_len, k_len]
    except KeyError as exc:
        return message_figure(str(exc.args[0]) if exc.args else str(exc))
    matrix = weights.mean(axis=0) if head is None else weights[head]  # [q_len, k_len]
    decoder = [f"{t}:{_token(tt, i)}" for t, i in enumerate(tt.decoder_ids)]
    source = [f"{t}:{_token(tt, i)}" for t, i in enumerate(tt.input_ids)]
    queries = source if kind == "encoder" else decoder
    keys = decoder if kind == "self" else source
    fig = go.Figure(attention_heatmap(matrix, queries, keys))
    which = _("mean over heads") if head is None else _("head {head}").format(head=head)
    fig.update_layout(
        title=_("{kind}, layer {layer}, {heads}: [{rows} × {columns}]").format(
            kind=_(KIND_TITLES[kind]), layer=layer, heads=which, rows=matrix.shape[0], columns=matrix.shape[1]
        ),
        height=max(300, 28 * matrix.shape[0] + 140),
        margin=dict(l=10, r=10, t=50, b=10),
        # Every position labelled: a training example is short enough for one label per row.
        xaxis=dict(title=_("key"), side="bottom", **tick_labels(keys)),
        yaxis=dict(title=_("query (position)"), autorange="reversed", **tick_labels(queries)),
    )
    return fig


def bias_summary(tt: TrainingTrace, *, _: Gettext = untranslated) -> str:
    """How the logits were made: lm_head's output, plus BART's final_logits_bias."""
    _batch, positions, vocab = tt.logits_shape
    if tt.final_logits_bias is None:
        return _("logits = lm_head(hidden states): [1, {positions}, {vocab}], no bias added.").format(
            positions=positions, vocab=vocab
        )
    lm_head = tt.lm_head_output
    nonzero = int(np.count_nonzero(tt.final_logits_bias))
    largest = ""
    if lm_head is not None:
        largest = _(", largest |bias| {bias:.4f}").format(bias=float(np.abs(tt.final_logits_bias).max()))
    return _(
        "logits [1, {positions}, {vocab}] = lm_head output [1, {positions}, {vocab}] + final_logits_bias "
        "[1, {vocab}] (a buffer, broadcast over positions; {nonzero} of {vocab} entries non-zero{largest})."
    ).format(positions=positions, vocab=vocab, nonzero=nonzero, largest=largest)


# ---------------------------------------------------------------------------------------------
# The Trainer loop


def _fmt(value) -> str:
    if isinstance(value, float):
        if value == 0 or math.isnan(value) or 1e-3 <= abs(value) < 1e4:
            return f"{value:.4g}"
        return f"{value:.3e}"
    return str(value)


def trainer_event_text(event, _: Gettext = untranslated) -> str:
    """A one-line account of a Trainer event's values (the words in the language of `_`)."""
    v = event.values
    if event.name == "batch":
        return ", ".join(f"{k} {v[k]['shape']}" for k in v)
    if event.name == "forward":
        return f"logits {v['logits_shape']}, model.training={v['training']}"
    if event.name == "loss":
        words = _("loss {loss} over {count} scored tokens")
        return words.format(loss=_fmt(v["loss"]), count=v["scored_tokens"])
    if event.name == "backward":
        return _("gradients in {count} parts, total norm {norm}").format(
            count=len(v["grad_norm"]), norm=_fmt(v["total_norm"])
        )
    if event.name == "clip_grad_norm":
        verb = _("clipped") if v["clipped"] else _("not clipped")
        norms = f"{_fmt(v['norm_before'])} → {_fmt(v['norm_after'])}"
        return _("norm {norms} ({clipped}, max_grad_norm {limit})").format(
            norms=norms, clipped=verb, limit=v["max_grad_norm"]
        )
    if event.name == "optimizer.step":
        total = math.sqrt(sum(x * x for x in v["update_norm"].values()))
        return _("{optimizer} at lr {lr}: parameters moved by {total} in total").format(
            optimizer=v["optimizer"], lr=_fmt(v["lr"]), total=_fmt(total)
        )
    if event.name == "scheduler.step":
        return f"{v['scheduler']}: lr {_fmt(v['lr_before'])} → {_fmt(v['lr_after'])}"
    if event.name == "zero_grad":
        return _("parameters with a gradient: {before} → {after}").format(
            before=v["params_with_grad_before"], after=v["params_with_grad_after"]
        )
    if event.name == "log":
        return ", ".join(f"{k} {_fmt(x)}" for k, x in v.items())
    return ", ".join(f"{k} {_fmt(x)}" for k, x in v.items() if not isinstance(x, dict))


def trainer_table(ts: TrainerStepTrace, *, _: Gettext = untranslated) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"#": i, N_("event"): e.name, N_("seen at"): e.seen_at, N_("values"): trainer_event_text(e, _)}
            for i, e in enumerate(ts.events)
        ]
    ).rename(columns=_)


def trainer_flow_figure(ts: TrainerStepTrace, *, _: Gettext = untranslated) -> go.Figure:
    """The Trainer step as a chain of boxes, in call order, each with its values."""
    n, events = len(ts.events), ts.events
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[0] * n,
            y=list(range(n)),
            mode="markers",
            marker=dict(size=16, color=OTHER_COLOR, line=dict(color="#495057", width=1)),
            hovertext=[_("{event}<br>seen at {where}").format(event=e.name, where=e.seen_at) for e in events],
            hoverinfo="text",
            showlegend=False,
        )
    )
    for i, event in enumerate(ts.events):
        fig.add_annotation(
            x=0, y=i, text=f"<b>{event.name}</b>", xanchor="right", xshift=-16, showarrow=False
        )
        fig.add_annotation(
            x=0,
            y=i,
            text=trainer_event_text(event, _),
            xanchor="left",
            xshift=16,
            showarrow=False,
            align="left",
        )
        if i + 1 < n:
            fig.add_annotation(
                x=0, y=i + 0.75, ax=0, ay=i + 0.25, xref="x", yref="y", axref="x", ayref="y", arrowhead=2
            )
    fig.update_layout(
        height=60 * n + 40,
        margin=dict(l=10, r=10, t=20, b=10),
        **projector_text(14),
        xaxis=dict(visible=False, range=[-1, 3]),
        yaxis=dict(visible=False, autorange="reversed"),
        plot_bgcolor="white",
    )
    return fig


def grad_norm_figure(ts: TrainerStepTrace, *, _: Gettext = untranslated) -> go.Figure:
    """Gradient norm per part of the model after backward, and after clipping (scaled alike)."""
    backward = ts.event("backward").values["grad_norm"]
    clip = ts.event("clip_grad_norm").values
    scale = clip["norm_after"] / clip["norm_before"] if clip["norm_before"] > 0 else 1.0
    parts = list(backward)
    fig = go.Figure(
        [
            go.Bar(
                name=_("after backward"), x=parts, y=[backward[p] for p in parts], marker_color=LOSS_COLOR
            ),
            go.Bar(
                name=_("after clipping (× {scale:.3g})").format(scale=scale),
                x=parts,
                y=[backward[p] * scale for p in parts],
                marker_color=OTHER_COLOR,
            ),
        ]
    )
    fig.update_layout(
        barmode="group",
        height=340,
        margin=dict(l=10, r=10, t=30, b=10),
        yaxis_title=_("gradient norm"),
        legend=dict(orientation="h", y=1.12),
    )
    return fig


def update_figure(ts: TrainerStepTrace) -> go.Figure:
    """How far optimizer.step moved each part's parameters, relative to their size."""
    step = ts.event("optimizer.step").values
    parts = list(step["relative_update"])
    fig = go.Figure(
        go.Bar(
            x=parts,
            y=[step["relative_update"][p] for p in parts],
            marker_color=OTHER_COLOR,
            hovertext=[
                f"|Δθ| {step['update_norm'][p]:.3e}<br>|Δθ| / |θ| {step['relative_update'][p]:.3e}"
                for p in parts
            ],
            hoverinfo="text",
        )
    )
    fig.update_layout(
        height=320,
        margin=dict(l=10, r=10, t=30, b=10),
        yaxis_title="|Δθ| / |θ|",
        title=f"optimizer.step ({step['optimizer']}, lr {_fmt(step['lr'])})",
    )
    return fig


# ---------------------------------------------------------------------------------------------
# Teacher forcing beside generation


def _generation_offset(tt: TrainingTrace) -> int:
    """The teacher-forced position that generation's step 0 computes."""
    if tt.encoder_decoder:
        return 0
    # A Llama's first generated token is predicted at the prompt's last position.
    return (tt.answer_start if tt.answer_start is not None else len(tt.input_ids)) - 1


def teacher_vs_generation(tt: TrainingTrace, gen: Trace, *, _: Gettext = untranslated) -> pd.DataFrame:
    """Position by position: teacher forcing (one pass, the true previous token fed) beside
    generation (one step per position, the model's own previous token fed)."""
    offset = _generation_offset(tt)
    rows = []
    # The positions that have a target: generation's step i computes position offset + i.
    for t in [t for t in range(offset, tt.num_positions) if not tt.ignored[t]]:
        step_index = t - offset
        step = gen.steps[step_index] if step_index < len(gen.steps) else None
        fed_gen = None
        if step is not None:
            decoder = gen.sequence_ids
            fed_gen = decoder[len(gen.start_ids) + step_index - 1]
        generated = step.chosen_id if step is not None else None
        rows.append(
            {
                N_("position"): t,
                N_("target"): _token(tt, tt.scored_labels[t]),
                N_("teacher forcing: fed"): _token(tt, tt.decoder_ids[t]),
                N_("teacher forcing: predicted"): _token(tt, tt.predicted_ids[t]),
                N_("computed in"): _("the one pass"),
                N_("generation: step"): step_index if step is not None else None,
                N_("generation: fed"): "" if fed_gen is None else token_label(gen, fed_gen),
                N_("generation: chose"): "" if generated is None else token_label(gen, generated),
                N_("same prediction"): None if generated is None else generated == tt.predicted_ids[t],
            }
        )
    return pd.DataFrame(rows).rename(columns=_)


def teacher_vs_generation_figure(tt: TrainingTrace, gen: Trace, *, _: Gettext = untranslated) -> go.Figure:
    """When each position is computed: all in one pass (teacher forcing) vs one per step (generation)."""
    table = teacher_vs_generation(tt, gen)  # English columns; what the figure shows goes through _
    if table.empty:
        return message_figure(_("No target positions to compare."))
    one_pass = _("teacher forcing: 1 pass")

    def step_row(s) -> str:
        return _("generation: step {step}").format(step=int(s))

    texts = ["teacher forcing: fed", "teacher forcing: predicted", "generation: fed", "generation: chose"]
    table[texts] = table[texts].map(plot_text)
    positions = table["position"].tolist()
    steps = [s for s in table["generation: step"].tolist() if s is not None and not pd.isna(s)]
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=positions,
            y=[one_pass] * len(positions),
            mode="markers+text",
            marker=dict(size=34, symbol="square", color=LABEL_COLOR, line=dict(color="#495057", width=1)),
            text=table["teacher forcing: predicted"].tolist(),
            name=_("teacher forcing"),
            hovertext=[
                _("fed {fed}, predicted {predicted}").format(fed=f, predicted=p)
                for f, p in zip(
                    table["teacher forcing: fed"], table["teacher forcing: predicted"], strict=True
                )
            ],
            hoverinfo="text",
        )
    )
    rows = table[table["generation: step"].notna()]
    fig.add_trace(
        go.Scatter(
            x=rows["position"].tolist(),
            y=[step_row(s) for s in rows["generation: step"]],
            mode="markers+text",
            marker=dict(size=34, symbol="square", color=FED_COLOR, line=dict(color="#495057", width=1)),
            text=rows["generation: chose"].tolist(),
            name=_("generation"),
            hovertext=[
                _("fed {fed}, chose {chose}").format(fed=f, chose=c)
                for f, c in zip(rows["generation: fed"], rows["generation: chose"], strict=True)
            ],
            hoverinfo="text",
        )
    )
    order = [one_pass] + [step_row(s) for s in steps]
    fig.update_layout(
        height=60 * len(order) + 80,
        margin=dict(l=10, r=10, t=30, b=10),
        **projector_text(14),
        xaxis=dict(title=_("position"), tickmode="array", tickvals=positions),
        yaxis=dict(categoryorder="array", categoryarray=order[::-1]),
        showlegend=False,
        plot_bgcolor="white",
    )
    return fig


__all__ = [
    "attention_figure",
    "attention_kinds",
    "bias_summary",
    "events_table",
    "grad_norm_figure",
    "loss_figure",
    "loss_summary",
    "loss_table",
    "num_heads",
    "shift_figure",
    "shift_table",
    "teacher_vs_generation",
    "teacher_vs_generation_figure",
    "trainer_event_text",
    "trainer_flow_figure",
    "trainer_table",
    "update_figure",
]
