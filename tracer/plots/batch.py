"""The views of a padded batch: Trace -> plotly Figure, pandas DataFrame or text.

A batch of prompts of different lengths is padded to one length, and the attention mask (0 at a
pad) keeps the pads out of every real token's attention. These builders show that:

- which row is shown: `row_labels` (the app's row picker: batch rows, or beam hypotheses);
- all rows side by side: `rows_grid` / `rows_figure` (each row's tokens with its pads, its
  attention mask and its `position_ids`, as generate() fed them), `step_rows_table` (what each
  row was fed at one step and what it chose);
- one row's attention with its masked keys drawn as masked, not as a zero weight:
  `attention_figure`, `stitched_attention_figure` (generation.py's figures with the masked cells
  laid over them: grey, crossed, "masked" on hover), `masked_cells`;
- BART: the encoder's padding mask and how it reaches cross-attention: `encoder_mask_figure`,
  `encoder_mask_story`.

The figures themselves are generation.py's and common.py's (one attention heatmap); this module
adds the mask. Pure functions: no Streamlit, no model.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from tracer.i18n import N_, Gettext, untranslated
from tracer.plots import generation as g
from tracer.plots.common import (
    TEXT_COLOR,
    attention_heatmap,
    message_figure,
    plot_text,
    shape_text,
    tick_labels,
    token_label,
)
from tracer.trace import Step, TensorInfo, Trace

MASKED_COLOR = "#ced4da"  # a masked cell: no weight was computed for it, it is not a zero
MASKED_MARK = "#495057"  # the cross drawn over a masked cell
AFTER_END_COLOR = "#f8f9fa"
MAX_MARKS = 4000  # masked cells crossed with a "×"; past it, the grey alone (a browser draws each one)


def _text_builder(builder: Callable, *args, _: Gettext, **kwargs):
    """`builder(*args)`, with `_` when it takes one (a builder of generation.py that writes text)."""
    if "_" in inspect.signature(builder).parameters:
        kwargs["_"] = _
    return builder(*args, **kwargs)


# ---------------------------------------------------------------------------------------------
# Which row


def row_labels(tr: Trace, *, _: Gettext = untranslated) -> list[str]:
    """One label per sequence generate() returned, for a picker: the rows of a batch, or the
    hypotheses of a beam search ("prompt 1, hypothesis 0: ... (score -0.41)"); [] for one sequence."""
    if tr.num_returned <= 1:
        return []
    if tr.beam_result is not None:
        per_prompt = tr.returned_per_prompt
        labels = []
        for i, score in enumerate(tr.beam_result.sequences_scores):
            prompt, h = divmod(i, per_prompt)
            text = _short(tr.batch.prompt_texts[prompt] if tr.batch else tr.prompt_text)
            if tr.batch is not None:
                label = _("prompt {prompt}, hypothesis {h}").format(prompt=prompt, h=h)
            else:
                label = _("hypothesis {h}").format(h=h)
            best = _(" (best)") if h == 0 else ""
            labels.append(f"{label}{best}: {text} ({_('score')} {score:.3f})")
        return labels
    return [
        _("row {r}: {text}").format(r=r, text=_short(text)) for r, text in enumerate(tr.batch.prompt_texts)
    ]


def _short(text: str, width: int = 36) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


# ---------------------------------------------------------------------------------------------
# All rows side by side


def _position_ids(tr: Trace, row: int) -> dict[int, int]:
    """Position -> the position_id generate() fed there, for batch row `row` (its first beam).

    Read off each step's `position_ids` [batch, fed]: the fed positions are the last ones before
    the step's end. Empty when the model is not fed position_ids (BART numbers its own).
    """
    found: dict[int, int] = {}
    for step in tr.steps:
        value = step.prepare_inputs.get("position_ids")
        ids = value.array() if isinstance(value, TensorInfo) else None
        if ids is None or ids.ndim != 2:
            continue
        fed = ids[row * tr.num_beams]  # [fed]
        end = g.step_end(tr, step)
        for i, position_id in enumerate(fed.tolist()):
            found[end - len(fed) + i] = int(position_id)
    return found


def rows_grid(tr: Trace, part: str = "decoder") -> pd.DataFrame:
    """Every row's positions, side by side: one line per (row, position).

    `part` "decoder": the decoder's sequence (a decoder-only model: the padded prompt, then the
    tokens generated; BART: the start token, then the tokens); "source": BART's encoder input.
    Columns: row, position, token_id, token, kind ("pad", "prompt", "start", "generated",
    "after end": a row that finished is fed the pad id), mask (the attention mask there),
    position_id (what generate() fed, None where it fed none).
    """
    batch = tr.batch
    if batch is None:
        return pd.DataFrame(columns=["row", "position", "token_id", "token", "kind", "mask", "position_id"])
    per_prompt = tr.returned_per_prompt
    lines = []
    for r in range(batch.size):
        if part == "source":
            ids, mask, positions = batch.prompt_ids[r], batch.attention_mask[r], {}
            kinds = ["prompt" if m else "pad" for m in mask]
        else:
            ids = batch.sequence_ids[r * per_prompt]  # a beam search's best hypothesis of the prompt
            start = len(tr.start_ids)
            prompt_mask = [] if tr.encoder_decoder else batch.attention_mask[r]
            mask = list(prompt_mask) + [1] * (len(ids) - len(prompt_mask))
            ended = _last_own_step(tr, r)
            kinds = []
            for p in range(len(ids)):
                if p < start:
                    kinds.append(("prompt" if mask[p] else "pad") if not tr.encoder_decoder else "start")
                elif ended is not None and p - start > ended:
                    kinds.append("after end")
                else:
                    kinds.append("generated")
            positions = _position_ids(tr, r)
        for p, (token_id, kind, m) in enumerate(zip(ids, kinds, mask, strict=True)):
            lines.append(
                {
                    "row": r,
                    "position": p,
                    "token_id": int(token_id),
                    "token": token_label(tr, int(token_id)),
                    "kind": kind,
                    "mask": int(m),
                    "position_id": positions.get(p),
                }
            )
    return pd.DataFrame(
        lines, columns=["row", "position", "token_id", "token", "kind", "mask", "position_id"]
    )


def _last_own_step(tr: Trace, r: int) -> int | None:
    """The step at which row `r` chose its eos (after it, generate() pads the row), or None."""
    if tr.beam_result is not None:  # the prompt's best hypothesis: its tokens are those with a beam
        own = sum(1 for beam in tr.beam_result.beam_indices[r * tr.returned_per_prompt] if beam >= 0)
        return own - 1 if own < len(tr.steps) else None
    stop = tr.batch.stops[r] if r < len(tr.batch.stops) else {}
    return stop.get("step") if stop.get("reason") == "eos" else None


# The words the views translate at run time (`_(kind)`), marked here for the catalog: the kinds of
# position, the padding sides and the cache kinds.
WORDS = (
    N_("pad"),
    N_("prompt"),
    N_("start"),
    N_("generated"),
    N_("after end"),
    N_("left"),
    N_("right"),
    N_("self"),
    N_("cross"),
)

_KIND_COLORS = {
    "pad": MASKED_COLOR,
    "prompt": g.PROMPT_COLOR,
    "start": "#e9ecef",
    "generated": g.GENERATED_COLOR,
    "after end": AFTER_END_COLOR,
}
_NUMBER_COLOR = "#ffffff"


def rows_figure(
    tr: Trace, part: str = "decoder", narrow: bool = False, *, _: Gettext = untranslated
) -> go.Figure:
    """Every row of the batch as a strip of tokens, with its attention mask and position_ids beside it.

    Pads are masked cells (grey): the mask is 0 there and no real token attends to them. Wide:
    one line per row, positions left to right; `narrow` (a phone): positions top to bottom, a
    column per row and its mask and position_ids beside it.
    """
    grid = rows_grid(tr, part)
    if grid.empty:
        return message_figure(_("This trace has one prompt: there are no rows to compare."))
    rows = int(grid["row"].max()) + 1
    width = int(grid["position"].max()) + 1
    with_positions = part == "decoder" and grid["position_id"].notna().any()
    per_row = 3 if with_positions else 2
    n_lines = rows * per_row
    colors = np.full((n_lines, width), np.nan)  # [line, position]: an index into the palette
    text = np.full((n_lines, width), "", dtype=object)
    hover = np.full((n_lines, width), "", dtype=object)
    palette = [*_KIND_COLORS.values(), _NUMBER_COLOR]
    codes = {kind: i for i, kind in enumerate(_KIND_COLORS)}
    line_names = []
    for r in range(rows):
        first = r * per_row
        line_names += [_("row {r}").format(r=r), "attention_mask"] + (
            ["position_ids"] if with_positions else []
        )
        for line in grid[grid["row"] == r].itertuples():
            p = line.position
            colors[first, p] = codes[line.kind]
            text[first, p] = plot_text(line.token)
            position_id = (
                "—" if line.position_id is None or pd.isna(line.position_id) else int(line.position_id)
            )
            hover[first : first + per_row, p] = plot_text(
                _(
                    "row {r}, position {p}: {token} (id {id}), {kind}; attention_mask {m}; position_id {pid}"
                ).format(
                    r=r,
                    p=p,
                    token=line.token,
                    id=line.token_id,
                    kind=_(line.kind),
                    m=line.mask,
                    pid=position_id,
                )
            )
            colors[first + 1, p] = codes["pad"] if line.mask == 0 else len(palette) - 1
            text[first + 1, p] = str(line.mask)
            if with_positions:
                colors[first + 2, p] = len(palette) - 1
                text[first + 2, p] = "" if position_id == "—" else str(position_id)
    n = len(palette)
    cells = dict(
        texttemplate="%{text}",
        textfont=dict(size=11, color=TEXT_COLOR),
        hovertemplate="%{customdata}<extra></extra>",
        colorscale=[[i / (n - 1), color] for i, color in enumerate(palette)],
        zmin=0,
        zmax=n - 1,
        showscale=False,
        xgap=2,
        ygap=2,
        hoverongaps=False,
        name="rows",
    )
    title = _("The batch's rows side by side")
    if part == "source":
        title = _("The encoder's input, row by row")
    lines_axis = dict(tickmode="array", ticktext=line_names, tickfont=dict(size=12, color=TEXT_COLOR))
    if narrow:  # positions down the screen; a token column three times as wide as a number's
        widths = [3.0, 1.2, 1.4][:per_row] * rows
        edges = np.concatenate([[0.0], np.cumsum(widths)])
        fig = go.Figure(
            go.Heatmap(z=colors.T, x=edges, y=list(range(width)), text=text.T, customdata=hover.T, **cells)
        )
        fig.update_layout(
            xaxis=dict(
                side="top", tickangle=-45, tickvals=((edges[:-1] + edges[1:]) / 2).tolist(), **lines_axis
            ),
            yaxis=dict(autorange="reversed", title=_("position"), dtick=1 if width <= 40 else 5),
            height=140 + 22 * width,
            margin=dict(l=10, r=60, t=110, b=10),  # room for the last slanted column label
        )
    else:
        fig = go.Figure(
            go.Heatmap(
                z=colors, x=list(range(width)), y=list(range(n_lines)), text=text, customdata=hover, **cells
            )
        )
        fig.update_layout(
            xaxis=dict(side="top", dtick=1 if width <= 40 else 5),
            yaxis=dict(autorange="reversed", tickvals=list(range(n_lines)), **lines_axis),
            height=100 + 26 * n_lines,
            margin=dict(l=10, r=10, t=60, b=10),
        )
    fig.update_layout(title=dict(text=title, font=dict(size=14)), plot_bgcolor="#ffffff")
    return fig


def step_rows_table(tr: Trace, step_index: int, *, _: Gettext = untranslated) -> pd.DataFrame:
    """One line per row of the model's batch at one step: what it was fed (ids, position_ids, the
    attention mask's length and its pads) and what it chose. Beam search: one line per beam (every
    beam is a row of the model's batch), and the continuations of it that were kept."""
    last = _("kept → next beam") if tr.num_beams > 1 else _("chosen token")
    columns = [_("row"), _("fed"), "position_ids", "attention_mask", last]
    if tr.num_returned <= 1 or step_index >= len(tr.steps):
        return pd.DataFrame(columns=columns)
    step = tr.steps[step_index]
    arrays = {
        name: value.array() if isinstance(value, TensorInfo) else None
        for name, value in step.prepare_inputs.items()
        if name in ("position_ids", "attention_mask")
    }
    fed = step.fed.array() if step.fed is not None and step.fed_name != "inputs_embeds" else None
    nb = tr.num_beams
    lines = []
    for i in range(tr.batch_size * nb):
        prompt, beam = divmod(i, nb)
        if nb > 1:
            name = _("beam {beam}").format(beam=beam)
            if tr.batch is not None:
                name = _("prompt {prompt}, beam {beam}").format(prompt=prompt, beam=beam)
            kept = _kept_from(tr, step, prompt, beam)
            chosen = ", ".join(kept) if kept else _("none kept")
        else:
            name = _("row {r}").format(r=i)
            choice = step.rows[i] if i < len(step.rows) else None
            chosen = token_label(tr, choice.chosen_id) if choice is not None else ""
        mask = arrays.get("attention_mask")
        if mask is not None and mask.ndim == 2:
            mask_text = _("{n} positions, {pads} masked").format(
                n=mask.shape[1], pads=int((mask[i] == 0).sum())
            )
        else:
            mask_text = _("none (every position real)")
        positions = arrays.get("position_ids")
        lines.append(
            {
                columns[0]: name,
                columns[1]: " ".join(token_label(tr, t) for t in fed[i].tolist()) if fed is not None else "",
                columns[2]: " ".join(map(str, positions[i].tolist()))
                if positions is not None and positions.ndim == 2
                else "",
                columns[3]: mask_text,
                columns[4]: chosen,
            }
        )
    return pd.DataFrame(lines, columns=columns)


def _kept_from(tr: Trace, step: Step, prompt: int, beam: int) -> list[str]:
    """The continuations of `beam` this step kept, as "token → beam k"."""
    choice = step.beams
    if choice is None or not choice.parents:
        return []
    return [
        f"{token_label(tr, token)} → {k}"
        for k, (parent, token) in enumerate(zip(choice.parents[prompt], choice.tokens[prompt], strict=True))
        if parent == beam
    ]


# ---------------------------------------------------------------------------------------------
# Masked keys, drawn as masked


def masked_cells(tr: Trace, step: Step, kind: str, layer: int, q_len: int) -> np.ndarray | None:
    """[q_len, k_len] bool: the cells of this attention whose key the mask let through (False:
    masked); None when every key is real. `tr` is the row the step belongs to (`Trace.row`)."""
    keys = tr.key_mask(step, kind, layer)
    if keys is None:
        return None
    return np.broadcast_to(keys[None, :], (q_len, len(keys)))


def _overlay_masked(fig: go.Figure, key_real: np.ndarray, hover: str) -> go.Figure:
    """A copy of `fig` with every heatmap's masked key columns drawn as masked cells.

    `key_real` [k_len] bool: False where the attention mask hid the key. A cell is drawn masked
    where its key is hidden and the heatmap has a value there (a blank cell, a later position the
    causal mask hides, stays blank).
    """
    out = go.Figure(fig)  # the builders' figures are cached and shared: never change them
    for trace in fig.data:
        if trace.type != "heatmap" or trace.name == "masked":
            continue
        z = np.asarray(trace.z, dtype=float)  # [q, k]
        if z.ndim != 2 or z.shape[1] != len(key_real):
            continue
        hidden = ~key_real[None, :] & ~np.isnan(z)  # [q, k]
        if not hidden.any():
            continue
        crossed = hidden.sum() <= MAX_MARKS
        out.add_trace(
            go.Heatmap(
                z=np.where(hidden, 1.0, np.nan),
                x=trace.x,
                y=trace.y,
                text=np.where(hidden, "×", "") if crossed else None,
                texttemplate="%{text}" if crossed else None,
                textfont=dict(color=MASKED_MARK, size=13),
                colorscale=[[0, MASKED_COLOR], [1, MASKED_COLOR]],
                zmin=0,
                zmax=1,
                showscale=False,
                hoverongaps=False,
                hovertemplate=plot_text(hover) + "<extra></extra>",
                name="masked",
                xaxis=trace.xaxis,
                yaxis=trace.yaxis,
            )
        )
    return out


def _masked_hover(_: Gettext) -> str:
    return _("masked: attention_mask is 0 for this key (a pad), so it gets no weight at all")


def attention_figure(
    tr: Trace,
    step_index: int,
    kind: str,
    layer: int,
    head: int | str,
    narrow: bool = False,
    *,
    _: Gettext = untranslated,
) -> go.Figure:
    """One head (or "all" heads) of one row's attention at a step, its masked keys drawn as masked.

    generation.py's attention_figure / attention_heads_figure, with a grey crossed cell wherever
    the row's attention mask hid the key (`Trace.key_mask`): a pad is not attended to with weight
    0, it is not attended to at all.
    """
    if head == "all":
        fig = _text_builder(g.attention_heads_figure, tr, step_index, kind, layer, narrow, _=_)
    else:
        fig = _text_builder(g.attention_figure, tr, step_index, kind, layer, int(head), _=_)
    step = tr.steps[step_index]
    if not step.has_attention(kind, layer):
        return fig
    keys = tr.key_mask(step, kind, layer)
    return fig if keys is None else _overlay_masked(fig, keys, _masked_hover(_))


def stitched_attention_figure(
    tr: Trace,
    kind: str,
    layer: int,
    head: int,
    highlight_step: int | None = None,
    narrow: bool = False,
    *,
    _: Gettext = untranslated,
) -> go.Figure:
    """generation.py's whole-run matrix of one row, the keys its mask hid drawn as masked."""
    fig = _text_builder(g.stitched_attention_figure, tr, kind, layer, head, highlight_step, narrow, _=_)
    real = _source_or_prompt_mask(tr, kind)
    if real is None:
        return fig
    width = next((len(t.x) for t in fig.data if t.type == "heatmap"), 0)
    keys = np.ones(width, dtype=bool)
    keys[: min(width, len(real))] = real[:width]
    return _overlay_masked(fig, keys, _masked_hover(_))


def _source_or_prompt_mask(tr: Trace, kind: str) -> np.ndarray | None:
    """The row's mask over key positions, [prompt_len] bool, where `kind` has masked keys at all."""
    mask = tr.prompt_mask if tr.batch is None else tr.batch.attention_mask[0]
    if mask is None or all(mask) or (kind == "self" and tr.encoder_decoder):
        return None
    return np.asarray(mask, dtype=bool)


# ---------------------------------------------------------------------------------------------
# BART: the encoder's padding mask, and how it reaches cross-attention


def encoder_mask_figure(
    tr: Trace, step_index: int, layer: int, head: int, narrow: bool = False, *, _: Gettext = untranslated
) -> go.Figure:
    """One row of a BART batch: the encoder's self-attention (step 0) beside the decoder's
    cross-attention at `step_index`, one head, the source's pads masked in both.

    The same attention_mask hides the same source positions in both: the encoder's keys, and the
    keys cross-attention reads from the encoder's output.
    """
    if not tr.encoder_decoder:
        return message_figure(
            _("A decoder-only model has no encoder: its pads are masked in self-attention.")
        )
    panels = [("encoder", 0), ("cross", step_index)]
    if not all(tr.steps[s].has_attention(kind, layer) for kind, s in panels if s < len(tr.steps)):
        return message_figure(_("This step's attention was not captured."))
    fig = make_subplots(
        rows=2 if narrow else 1,
        cols=1 if narrow else 2,
        subplot_titles=[
            _("encoder self-attention (step 0)"),
            _("cross-attention (step {step})").format(step=step_index),
        ],
        horizontal_spacing=0.2,  # the cross-attention's query labels sit between the two
        vertical_spacing=0.18,
    )
    for i, (kind, s) in enumerate(panels):
        att, queries, keys = g.step_attention(tr, s, kind, layer)  # [heads, q, k]
        heatmap = attention_heatmap(att[head], queries, keys, showscale=i == 0)
        place = dict(row=i + 1, col=1) if narrow else dict(row=1, col=i + 1)
        fig.add_trace(heatmap, **place)
        fig.update_xaxes(tickangle=-60, **tick_labels(keys, 12), **place)
        fig.update_yaxes(autorange="reversed", **tick_labels(queries, 16), **place)
    real = tr.key_mask(tr.steps[0], "encoder", layer)
    if real is not None:
        fig = _overlay_masked(fig, real, _masked_hover(_))
    fig.update_layout(
        title=dict(
            text=_("Layer {layer}, head {head}: the source's pads are masked keys in both").format(
                layer=layer, head=head
            ),
            font=dict(size=12 if narrow else 14),  # a phone's width holds the whole line
        ),
        height=(760 if narrow else 420),
        margin=dict(l=10, r=10, t=70, b=10),
    )
    return fig


def encoder_mask_story(tr: Trace, step_index: int, *, _: Gettext = untranslated) -> str:
    """How BART's encoder padding mask travels: the encoder, then every cross-attention, each step."""
    if not tr.encoder_decoder or tr.batch is None:
        return ""
    step = tr.steps[step_index]
    mask = step.prepare_inputs.get("attention_mask")
    pads = [row.count(0) for row in tr.batch.attention_mask]
    return _(
        "The tokenizer padded the sources to {length} tokens on the {side} ({pads} pads per row). "
        "generate() runs the encoder once with `attention_mask` {shape}: its self-attention gives "
        "no weight to a pad key. Then, at every step, prepare_inputs_for_generation passes the same "
        "`attention_mask` beside `encoder_outputs`, and every decoder layer's cross-attention masks "
        "those source positions as keys: the decoder never reads a pad. The decoder's own "
        "self-attention has no pads (every row starts from the decoder start token)."
    ).format(
        length=len(tr.batch.attention_mask[0]),
        side=_(tr.batch.padding_side),
        pads=", ".join(map(str, pads)),
        shape=shape_text(mask.shape) if isinstance(mask, TensorInfo) else "",
    )
