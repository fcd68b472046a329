"""What the plot modules share: token labels, shape and value text, the attention heatmap, a message figure.

`generation` (a Trace), `training` (a TrainingTrace, a TrainerStepTrace) and `doctor` (a
CacheReport) draw different records with the same pieces, so each piece is written once, here:

- tokens: `show_token` (a token's text made visible), `token_label` (an id of a record, shown),
  `plot_text` (text made safe for plotly, which reads it as HTML);
- shapes and values: `shape_text` (a shape tuple), `shape_of` (a recorded value's shape),
  `value_text` (a recorded value: dtype and shape, or its few numbers);
- attention: `KIND_TITLES`, `attention_kinds`, `attention_heatmap` and `tick_labels` (tokens on
  numeric axes);
- figures: `message_figure` (a figure that only says why there is nothing to draw),
  `Html` (a view drawn as HTML rather than as a figure: a page shows it with st.html),
  `projector_text` (text large and dark enough for a projector), `unchecked_figure` (a figure
  built fast, for the views a step change rebuilds), the shared colors.

Pure functions; no Streamlit, no model, and no torch: the app's first page imports this module
before anyone has run a model.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import plotly.graph_objects as go
import pyarrow as pa

from tracer.i18n import N_, Gettext
from tracer.trace import TensorInfo

HEATMAP_SCALE = "Blues"
OTHER_COLOR = "#8da9c4"  # bars and markers that are not the highlighted one
TEXT_COLOR = "#212529"  # labels on figures: as dark as body text, for a projector


class Html(str):
    """A view drawn as HTML, not as a figure: a page shows it with `st.html`. Text in it is escaped
    where it is built."""


KIND_TITLES = {  # shown through a session's _
    "self": N_("decoder self-attention"),
    "cross": N_("cross-attention (decoder → encoder)"),
    "encoder": N_("encoder self-attention"),
}


class HasTokens(Protocol):
    """A record that can say what text a token id stands for (a Trace, a TrainingTrace)."""

    def token_text(self, token_id: int) -> str: ...


# ---------------------------------------------------------------------------------------------
# Tokens


def show_token(text: str) -> str:
    """A token's text made visible: quotes show leading/trailing spaces, an empty one says so."""
    if text == "":
        return "''"
    if text.strip() != text:
        return repr(text)
    return text


def token_label(record: HasTokens, token_id: int) -> str:
    """The text of `token_id` in `record`'s vocabulary, made visible (see show_token)."""
    return show_token(record.token_text(token_id))


def plot_text(text: str) -> str:
    """`text` escaped for plotly, which reads labels and hover text as HTML.

    A token such as "<s>" would otherwise be taken for a strikethrough tag: it would vanish and
    strike through the rest of the label.
    """
    return html.escape(text)


# ---------------------------------------------------------------------------------------------
# Shapes and values


def shape_text(shape: Sequence[int] | None, missing: str = "") -> str:
    """A shape as the tables write it, "[1, 7]"; `missing` where nothing was recorded."""
    return missing if shape is None else f"[{', '.join(map(str, shape))}]"


def shape_of(value: Any) -> str:
    """A recorded value's shape, "[1, 7]", if it is a tensor; any other value as its text."""
    return shape_text(value.shape) if isinstance(value, TensorInfo) else str(value)


def value_text(value: Any, *, missing: str | None = None, numbers: int = 0, spaced: bool = False) -> str:
    """A recorded value as text: a tensor as its dtype and shape ("int64[1, 7]"), anything else as str().

    `missing`: the text for None (by default "None"); `numbers`: a tensor whose values were
    recorded and has at most this many shows its shape and values instead ("[1, 1] [5]");
    `spaced`: dtype and shape apart ("int64 [1, 7]"), as the doctor's wide table prints them.
    """
    if value is None and missing is not None:
        return missing
    if not isinstance(value, TensorInfo):
        return str(value)
    values = value.array() if numbers else None
    if values is not None and values.size <= numbers:
        return f"{shape_text(value.shape)} {values.reshape(-1).tolist()}"
    return f"{value.dtype} {shape_text(value.shape)}" if spaced else str(value)


# ---------------------------------------------------------------------------------------------
# Attention heatmaps


class HasArch(Protocol):
    encoder_decoder: bool


def attention_kinds(record: HasArch) -> list[str]:
    """The attention kinds a record has: ["self"], or ["self", "cross", "encoder"] for BART."""
    return ["self", "cross", "encoder"] if record.encoder_decoder else ["self"]


def attention_heatmap(
    matrix: np.ndarray, queries: list[str], keys: list[str], showscale: bool = True
) -> go.Heatmap:
    """One attention matrix [q_len, k_len] as a heatmap, weights 0 to 1, the tokens on hover.

    `queries` and `keys` are the plain labels of the rows and columns ("3: mat"); they are
    escaped here. The axes stay numeric (label them with `tick_labels`): a categorical axis would
    merge two rows labelled alike, two "the" tokens. NaN cells (masked keys) are blank and have
    no hover.
    """
    q_n, k_n = matrix.shape
    custom = np.empty((q_n, k_n, 2), dtype=object)  # [q_len, k_len, (query, key)]
    custom[:, :, 0] = np.asarray([plot_text(q) for q in queries], dtype=object)[:, None]
    custom[:, :, 1] = np.asarray([plot_text(k) for k in keys], dtype=object)[None, :]
    return go.Heatmap(
        z=matrix,
        x=list(range(k_n)),
        y=list(range(q_n)),
        customdata=custom,
        zmin=0,
        zmax=1,
        colorscale=HEATMAP_SCALE,
        showscale=showscale,
        hoverongaps=False,
        hovertemplate="query %{customdata[0]}<br>key %{customdata[1]}<br>weight %{z:.3f}<extra></extra>",
    )


def tick_labels(labels: list[str], max_ticks: int | None = None) -> dict:
    """Axis settings that put `labels` (escaped) on a numeric axis: every one, or at most `max_ticks`.

    With a limit, every n-th label is shown: more labels than the axis has room for lie on top of
    each other.
    """
    every = 1 if max_ticks is None else max(1, int(np.ceil(len(labels) / max_ticks)))
    vals = list(range(0, len(labels), every))
    return dict(tickmode="array", tickvals=vals, ticktext=[plot_text(labels[i]) for i in vals])


# ---------------------------------------------------------------------------------------------
# Figures


def message_figure(message: str, height: int = 200) -> go.Figure:
    """An empty figure that says, in its middle, why there is nothing to draw."""
    fig = go.Figure()
    fig.add_annotation(text=plot_text(message), showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=30, b=10))
    return fig


# Plotly checks every property it is given, and update_layout merges each one through its
# property tree: about 8 ms for a small figure, where the same figure built unchecked takes 1 ms.
# The views a step change rebuilds (for every student at once in a class) are built unchecked.
UNCHECKED = {"_validate": False}


def unchecked_figure(data: Any, **layout: Any) -> go.Figure:
    """A figure of `data` (a trace or a list of traces) and `layout`, built without plotly's checks.

    Write the layout as plotly stores it, with no magic underscores (`xaxis=dict(tickfont=...)`,
    not `xaxis_tickfont=...`); a title may be a plain string, as plotly's checks allow, and is
    stored as they store it. tests/test_classroom.py checks that plotly's checking constructor
    accepts each figure built this way unchanged.
    """
    layout = {name: _titled(name, value) for name, value in layout.items()}
    return go.Figure(data=data, layout=layout, **UNCHECKED)


def _titled(name: str, value: Any) -> Any:
    """A layout entry with its title as plotly stores one: `dict(text=...)`, not a plain string."""
    if name == "title" and isinstance(value, str):
        return dict(text=value)
    if name.startswith(("xaxis", "yaxis")) and isinstance(value.get("title"), str):
        return {**value, "title": dict(text=value["title"])}
    return value


def projector_text(size: int = 14) -> dict:
    """Layout settings for a diagram read from the back of a classroom: its text, ticks included,
    `size` pixels and dark."""
    font = dict(size=size, color=TEXT_COLOR)
    # The ticks too: Streamlit's chart theme gives them their own smaller, lighter font.
    return dict(font=font, xaxis_tickfont=font, yaxis_tickfont=font)


def table(rows: Sequence[dict | Sequence], columns: Sequence[str], _: Gettext) -> pa.Table:
    """A table of `rows` (dicts keyed by column, or sequences in column order) whose headers, msgids,
    are in the language of `_`, as an Arrow table (`.to_pandas()` gives a DataFrame).

    Arrow, not pandas: `st.dataframe` sends Arrow, and a step change shows two tables; building a
    DataFrame and converting it took a fifth of the server's work per click (benchmarks/
    classroom_load.py). A column whose values are not of one kind is shown as text, as
    Streamlit shows such a DataFrame column.
    """
    if rows and isinstance(rows[0], dict):
        by_column = [[row.get(column) for row in rows] for column in columns]
    else:
        by_column = [list(values) for values in zip(*rows, strict=True)] if rows else [[] for _c in columns]
    return pa.table(
        {_(column): _arrow_column(values) for column, values in zip(columns, by_column, strict=True)}
    )


def _arrow_column(values: list) -> pa.Array:
    if not values:
        return pa.array([], type=pa.string())
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed kinds (a number beside a text)
        return pa.array([None if v is None else str(v) for v in values], type=pa.string())
