"""The views of beam search: Trace -> plotly Figure, pandas DataFrame or text.

At each step every running beam proposes continuations; generate() ranks the best 2 * num_beams
of them, keeps the best num_beams that did not end as the next step's beams, sets the ones that
ended (eos) aside as finished hypotheses, and reorders the cache so that row j holds the past of
the new beam j. What the trace recorded of that (`Step.beams`, `Trace.beam_result`) is drawn here:

- `beam_summary`: the settings (num_beams, num_return_sequences, length_penalty, early_stopping)
  and what came out;
- `beam_tree` / `beam_tree_figure`: every ranked candidate of every step as a node (x: the step,
  y: its rank), an edge from the beam it extends, kept, finished and pruned apart, the winner's
  path and the returned hypotheses marked;
- `candidates_table`: one step's ranked candidates and what became of each;
- `hypotheses_table`: the sequences generate() returned, with their length-penalised scores;
- `reorder_table`, `reorder_layers_table`, `reorder_figure`: the cache reorder after a step (the
  beam index every cache row takes its keys and values from) and whether each layer applied it.

`prompt` is the prompt of a batch (0 for one prompt). Pure functions: no Streamlit, no model.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from tracer.i18n import Gettext, untranslated
from tracer.plots import generation as g
from tracer.plots.common import OTHER_COLOR, TEXT_COLOR, message_figure, plot_text, token_label
from tracer.trace import Trace

KEPT_COLOR = "#1c7ed6"
FINISHED_COLOR = "#2f9e44"
PRUNED_COLOR = "#adb5bd"
WINNER_COLOR = g.CHOSEN_COLOR
PICKED_COLOR = "#9c36b5"  # the hypothesis picked in the app, when it is not the winner

TREE_COLUMNS = [
    "step",
    "rank",
    "parent_beam",
    "parent_rank",
    "token_id",
    "token",
    "score",
    "status",
    "beam",
    "returned",
    "winner_path",
]


def _no_beams(_: Gettext) -> str:
    return _("This trace is not a beam search: choose Beam search under Decoding in the sidebar and run it.")


def beam_summary(tr: Trace, *, _: Gettext = untranslated) -> str:
    """The beam search's settings, where each came from, and its best hypothesis per prompt."""
    if tr.beam_result is None:
        return _no_beams(_)
    s = tr.settings
    sources = s.get("sources") or {}

    def setting(key: str, default) -> str:
        value = s.get(key, default)
        source = sources.get(key)
        return f"`{key}={value}`" + (f" ({_(g._SOURCE_WORDS.get(source, source))})" if source else "")

    lines = [
        _("Beam search with {beams}, {returned}, {penalty}, {early}.").format(
            beams=setting("num_beams", tr.num_beams),
            returned=setting("num_return_sequences", 1),
            penalty=setting("length_penalty", 1.0),
            early=setting("early_stopping", False),
        ),
        _(
            "Each step, every running beam extends its sequence by one token; the best {twice} "
            "continuations by summed log-probability are ranked, the best {beams} that did not end "
            "run on, and one that ends with eos becomes a finished hypothesis. A hypothesis's score "
            "is its summed log-probability divided by its length to the power length_penalty."
        ).format(twice=2 * tr.num_beams, beams=tr.num_beams),
    ]
    per_prompt = tr.returned_per_prompt
    for prompt in range(tr.batch_size):
        best = prompt * per_prompt
        sequence = tr.beam_result.sequences[best]
        text = " ".join(token_label(tr, t) for t in sequence[len(tr.start_ids) :])
        where = _("Prompt {prompt}: ").format(prompt=prompt) if tr.batch is not None else ""
        lines.append(
            where
            + _("the best hypothesis is `{text}` (score {score:.4f}).").format(
                text=text, score=tr.beam_result.sequences_scores[best]
            )
        )
    return "\n\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The tree


def _kept_ranks(
    parents: list[int], tokens: list[int], cand_parents: list[int], cand_tokens: list[int]
) -> list[int]:
    """For each kept beam j, the rank of the candidate it is (its parent beam and token)."""
    ranks, used = [], set()
    for parent, token in zip(parents, tokens, strict=True):
        rank = next(
            (
                c
                for c, (p, t) in enumerate(zip(cand_parents, cand_tokens, strict=True))
                if c not in used and p == parent and t == token
            ),
            -1,
        )
        used.add(rank)
        ranks.append(rank)
    return ranks


def beam_tree(tr: Trace, prompt: int = 0) -> pd.DataFrame:
    """Every ranked candidate of every step of one prompt's beam search, one line each.

    Columns: step, rank (0: the best continuation of the step), parent_beam (the running beam it
    extends, as BeamChoice.candidate_parents), parent_rank (that beam's node at the step before,
    -1: the prompt), token_id, token, score (summed log-probability), status ("kept": a beam of
    the next step; "finished": ended with eos among the best num_beams, or ranked so at the last
    step; "pruned"), beam (the beam it became, -1 if none), returned (which returned hypothesis of
    the prompt ends here, -1 if none), winner_path (on the best hypothesis's path).
    """
    if tr.beam_result is None:
        return pd.DataFrame(columns=TREE_COLUMNS)
    nb = tr.num_beams
    eos = set(tr.eos_token_ids)
    lines: list[dict] = []
    previous_ranks: list[int] = [0] * nb  # beam j's node at the step before (the prompt, first)
    node_of: dict[tuple[int, int], int] = {}  # (step, rank) -> line
    steps = [s for s in tr.steps if s.beams is not None]
    for step in steps:
        choice = step.beams
        cand_parents = choice.candidate_parents[prompt]
        cand_tokens = choice.candidate_tokens[prompt]
        last = not choice.parents or step is steps[-1]
        kept = (
            _kept_ranks(choice.parents[prompt], choice.tokens[prompt], cand_parents, cand_tokens)
            if choice.parents
            else []
        )
        for rank, (parent, token, score) in enumerate(
            zip(cand_parents, cand_tokens, choice.candidate_scores[prompt], strict=True)
        ):
            if rank in kept:
                status = "kept"
            elif rank < nb and (token in eos or last):
                status = "finished"
            else:
                status = "pruned"
            node_of[step.index, rank] = len(lines)
            lines.append(
                {
                    "step": step.index,
                    "rank": rank,
                    "parent_beam": parent,
                    "parent_rank": -1 if step.index == 0 else previous_ranks[parent],
                    "token_id": token,
                    "token": token_label(tr, token),
                    "score": score,
                    "status": status,
                    "beam": kept.index(rank) if rank in kept else -1,
                    "returned": -1,
                    "winner_path": False,
                }
            )
        if kept:
            previous_ranks = kept
    _mark_returned(tr, prompt, lines, node_of)
    return pd.DataFrame(lines, columns=TREE_COLUMNS)


def _hypothesis_nodes(tr: Trace, prompt: int, h: int, lines: list[dict], node_of: dict) -> list[int]:
    """The lines of returned hypothesis h of `prompt` from its first step to its last (its path)."""
    result = tr.beam_result
    index = prompt * tr.returned_per_prompt + h
    beams = result.beam_indices[index]
    sequence = result.sequences[index]
    start = len(tr.start_ids)
    own = [t for t in range(len(tr.steps)) if t < len(beams) and beams[t] >= 0]
    path = []
    for t in own:
        beam = beams[t] - prompt * tr.num_beams
        token = sequence[start + t] if start + t < len(sequence) else None
        line = next(
            (
                node_of[t, rank]
                for rank in range(2 * tr.num_beams)
                if (t, rank) in node_of
                and lines[node_of[t, rank]]["parent_beam"] == beam
                and lines[node_of[t, rank]]["token_id"] == token
            ),
            None,
        )
        if line is not None:
            path.append(line)
    return path


def _mark_returned(tr: Trace, prompt: int, lines: list[dict], node_of: dict) -> None:
    for h in range(tr.returned_per_prompt):
        path = _hypothesis_nodes(tr, prompt, h, lines, node_of)
        if not path:
            continue
        lines[path[-1]]["returned"] = h
        if lines[path[-1]]["status"] == "pruned":  # ranked past num_beams but kept: say it ended here
            lines[path[-1]]["status"] = "finished"
        if h == 0:
            for line in path:
                lines[line]["winner_path"] = True


def beam_tree_figure(
    tr: Trace, prompt: int = 0, picked: int = 0, narrow: bool = False, *, _: Gettext = untranslated
) -> go.Figure:
    """The beam tree of one prompt: x the step, y the rank of each ranked continuation.

    Blue: kept (a beam of the next step), green: finished (a hypothesis set aside), grey: pruned.
    Edges go from the beam a continuation extends. The best hypothesis's path is orange, the
    `picked` returned hypothesis's (when it is another) purple; a star marks where each returned
    hypothesis ends, its length-penalised score on hover.
    """
    tree = beam_tree(tr, prompt)
    if tree.empty:
        return message_figure(_no_beams(_))
    picked_path = set()
    if picked:
        lines = tree.to_dict("records")
        node_of = {(line["step"], line["rank"]): i for i, line in enumerate(lines)}
        picked_path = set(_hypothesis_nodes(tr, prompt, picked, lines, node_of))
    fig = go.Figure()
    position = {(row.step, row.rank): (row.step, row.rank) for row in tree.itertuples()}
    groups = {  # edge style per kind of node it leads to
        "pruned": dict(color=PRUNED_COLOR, width=1, dash="dot"),
        "kept": dict(color=KEPT_COLOR, width=1.5),
        "finished": dict(color=FINISHED_COLOR, width=1.5),
        "picked": dict(color=PICKED_COLOR, width=3.5),
        "winner": dict(color=WINNER_COLOR, width=4),
    }
    for group, line_style in groups.items():
        xs: list = []
        ys: list = []
        for i, row in enumerate(tree.itertuples()):
            kind = "winner" if row.winner_path else "picked" if i in picked_path else row.status
            if kind != group:
                continue
            x0, y0 = (-1, 0) if row.parent_rank < 0 else position[(row.step - 1, row.parent_rank)]
            xs += [x0, row.step, None]
            ys += [y0, row.rank, None]
        if xs:
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=ys,
                    mode="lines",
                    line=line_style,
                    hoverinfo="skip",
                    showlegend=False,
                    name=f"edges {group}",
                )
            )
    status_words = {"kept": _("kept"), "finished": _("finished"), "pruned": _("pruned")}
    styles = {
        "kept": dict(color=KEPT_COLOR, size=13, symbol="circle"),
        "finished": dict(color=FINISHED_COLOR, size=13, symbol="diamond"),
        "pruned": dict(color="#ffffff", size=9, symbol="circle", line=dict(color=PRUNED_COLOR, width=1.5)),
    }
    scores = tr.beam_result.sequences_scores
    per_prompt = tr.returned_per_prompt
    for status, style in styles.items():
        part = tree[tree["status"] == status]
        if part.empty:
            continue
        hover = []
        for row in part.itertuples():
            lines = [
                _("step {step}, rank {rank}: beam {parent} + {token} (id {id})").format(
                    step=row.step, rank=row.rank, parent=row.parent_beam, token=row.token, id=row.token_id
                ),
                _("summed log-prob {score:.3f}").format(score=row.score),
                status_words[status]
                + (" → " + _("beam {beam}").format(beam=row.beam) if row.beam >= 0 else ""),
            ]
            if row.returned >= 0:
                lines.append(
                    _("returned hypothesis {h}, score {score:.4f}").format(
                        h=row.returned, score=scores[prompt * per_prompt + row.returned]
                    )
                )
            hover.append("<br>".join(plot_text(line) for line in lines))
        labelled = status != "pruned" or not narrow
        fig.add_trace(
            go.Scatter(
                x=part["step"],
                y=part["rank"],
                mode="markers+text" if labelled else "markers",
                marker=style,
                text=[plot_text(t) for t in part["token"]] if labelled else None,
                textposition="top center" if narrow else "middle right",
                textfont=dict(
                    size=(12 if status != "pruned" else 10) - (2 if narrow else 0),
                    color=TEXT_COLOR if status != "pruned" else "#868e96",
                ),
                hovertext=hover,
                hoverinfo="text",
                name=status_words[status],
            )
        )
    ends = tree[tree["returned"] >= 0]
    if not ends.empty:
        fig.add_trace(
            go.Scatter(
                x=ends["step"],
                y=ends["rank"],
                mode="markers",
                marker=dict(
                    symbol="star",
                    size=22,
                    color=[
                        WINNER_COLOR if h == 0 else PICKED_COLOR if h == picked else "#fab005"
                        for h in ends["returned"]
                    ],
                    line=dict(color=TEXT_COLOR, width=1),
                ),
                hovertext=[
                    plot_text(
                        _("returned hypothesis {h}, score {score:.4f}").format(
                            h=h, score=scores[prompt * per_prompt + h]
                        )
                    )
                    for h in ends["returned"]
                ],
                hoverinfo="text",
                name=_("returned"),
            )
        )
    fig.add_trace(
        go.Scatter(
            x=[-1],
            y=[0],
            mode="markers+text",
            marker=dict(symbol="square", size=14, color=OTHER_COLOR),
            text=[_("prompt")],
            textposition="top center",
            hoverinfo="skip",
            showlegend=False,
            name="prompt",
        )
    )
    n_steps = int(tree["step"].max()) + 1
    ranks = 2 * tr.num_beams
    fig.update_layout(
        title=dict(
            text=_("Beam tree: every step's {n} best continuations, ranked").format(n=ranks),
            font=dict(size=14),
        ),
        height=140 + 42 * ranks,
        margin=dict(l=10, r=10, t=40, b=10),
        xaxis=dict(
            title=_("step"), range=[-1.5, n_steps + 0.2], dtick=1 if n_steps <= 24 else 4, zeroline=False
        ),
        yaxis=dict(
            title=_("rank"),
            autorange="reversed",
            tickmode="array",
            tickvals=list(range(ranks)),
            zeroline=False,
        ),
        legend=dict(orientation="h", y=-0.15),
        showlegend=not narrow,  # a phone has no room for it: the page's caption names the colours
        plot_bgcolor="#ffffff",
        font=dict(size=13, color=TEXT_COLOR),
    )
    fig.update_xaxes(showgrid=True, gridcolor="#f1f3f5")
    fig.update_yaxes(showgrid=False)
    return fig


# ---------------------------------------------------------------------------------------------
# Tables


def candidates_table(
    tr: Trace, step_index: int, prompt: int = 0, *, _: Gettext = untranslated
) -> pd.DataFrame:
    """One step's ranked continuations of one prompt: the beam each extends, its token, its summed
    log-probability, and what became of it (kept as beam j, finished, pruned)."""
    columns = [_("rank"), _("from beam"), _("token"), _("summed log-prob"), _("outcome")]
    tree = beam_tree(tr, prompt)
    if tree.empty:
        return pd.DataFrame(columns=columns)
    part = tree[tree["step"] == step_index]
    outcome = {
        "kept": lambda row: _("kept as beam {beam}").format(beam=row.beam),
        "finished": lambda row: _("finished hypothesis"),
        "pruned": lambda row: _("pruned"),
    }
    lines = []
    for row in part.itertuples():
        text = outcome[row.status](row)
        if row.returned >= 0:
            text += ", " + _("returned as hypothesis {h}").format(h=row.returned)
        lines.append(
            {
                columns[0]: row.rank,
                columns[1]: row.parent_beam,
                columns[2]: f"{row.token} ({row.token_id})",
                columns[3]: round(float(row.score), 4),
                columns[4]: text,
            }
        )
    return pd.DataFrame(lines, columns=columns)


def hypotheses_table(tr: Trace, prompt: int = 0, *, _: Gettext = untranslated) -> pd.DataFrame:
    """The sequences beam search returned for one prompt, best first, with their scores."""
    columns = [_("hypothesis"), _("tokens"), _("new tokens"), _("score")]
    if tr.beam_result is None:
        return pd.DataFrame(columns=columns)
    result = tr.beam_result
    per_prompt = tr.returned_per_prompt
    start = len(tr.start_ids)
    lines = []
    for h in range(per_prompt):
        i = prompt * per_prompt + h
        own = sum(1 for beam in result.beam_indices[i] if beam >= 0)
        tokens = result.sequences[i][start : start + own]
        lines.append(
            {
                columns[0]: h,
                columns[1]: " ".join(token_label(tr, t) for t in tokens),
                columns[2]: own,
                columns[3]: round(result.sequences_scores[i], 4),
            }
        )
    return pd.DataFrame(lines, columns=columns)


def reorder_table(tr: Trace, step_index: int, *, _: Gettext = untranslated) -> pd.DataFrame:
    """The cache reorder after a step: every cache row (prompt b's beam j) and the row of the step
    it takes its keys and values from (BeamChoice.reorder), with the token that beam appended."""
    columns = [_("cache row"), _("prompt"), _("new beam"), _("takes row"), _("token appended")]
    step = tr.steps[step_index] if step_index < len(tr.steps) else None
    if step is None or step.beams is None or step.beams.reorder is None:
        return pd.DataFrame(columns=columns)
    nb = tr.num_beams
    lines = []
    for row, source in enumerate(step.beams.reorder):
        prompt, beam = divmod(row, nb)
        tokens = step.beams.tokens[prompt] if prompt < len(step.beams.tokens) else []
        token = tokens[beam] if beam < len(tokens) else None
        lines.append(
            {
                columns[0]: row,
                columns[1]: prompt,
                columns[2]: beam,
                columns[3]: source,
                columns[4]: "" if token is None else f"{token_label(tr, token)} ({token})",
            }
        )
    return pd.DataFrame(lines, columns=columns)


def reorder_layers_table(tr: Trace, step_index: int, *, _: Gettext = untranslated) -> pd.DataFrame:
    """Whether each cache layer (self-attention, then cross) moved its rows as the reorder says."""
    columns = [_("layer"), _("cache"), _("reorder applied")]
    step = tr.steps[step_index] if step_index < len(tr.steps) else None
    if step is None or step.beams is None or step.beams.reorder is None:
        return pd.DataFrame(columns=columns)
    # reorder_applied follows the cache's layers: self-attention first, then cross-attention
    cache = step.cache
    kinds = [c for c in cache if c.kind == "self"] + [c for c in cache if c.kind == "cross"]
    lines = []
    for i, applied in enumerate(step.beams.reorder_applied):
        layer = kinds[i] if i < len(kinds) else None
        lines.append(
            {
                columns[0]: layer.layer if layer is not None else i,
                columns[1]: _(layer.kind) if layer is not None else "",
                columns[2]: _("yes") if applied else _("NO: this layer kept its old rows"),
            }
        )
    return pd.DataFrame(lines, columns=columns)


def reorder_figure(
    tr: Trace, step_index: int, narrow: bool = False, *, _: Gettext = untranslated
) -> go.Figure:
    """The cache reorder after a step as arrows: each cache row of the next step (right) from the
    row of this step (left) it copies; every layer's keys and values move the same way."""
    step = tr.steps[step_index] if step_index < len(tr.steps) else None
    if tr.beam_result is None:
        return message_figure(_no_beams(_))
    if step is None or step.beams is None or step.beams.reorder is None:
        if not tr.settings.get("use_cache", True):
            return message_figure(_("The cache is off: there is no cache to reorder."))
        return message_figure(_("Nothing was reordered after this step (the last step)."))
    reorder = step.beams.reorder
    nb = tr.num_beams
    applied = all(step.beams.reorder_applied)
    fig = go.Figure()
    xs, ys = [], []
    for row, source in enumerate(reorder):
        xs += [0, 1, None]
        ys += [source, row, None]
    fig.add_trace(
        go.Scatter(
            x=xs,
            y=ys,
            mode="lines",
            line=dict(color=KEPT_COLOR if applied else g.ERROR_COLOR, width=2.5),
            hoverinfo="skip",
            showlegend=False,
            name="reorder",
        )
    )

    def label(row: int) -> str:
        prompt, beam = divmod(row, nb)
        return (
            _("prompt {p}, beam {b}").format(p=prompt, b=beam) if tr.batch else _("beam {b}").format(b=beam)
        )

    rows = list(range(len(reorder)))
    used = set(reorder)
    fig.add_trace(
        go.Scatter(
            x=[0] * len(rows),
            y=rows,
            mode="markers+text",
            text=[plot_text(label(r)) for r in rows],
            textposition="middle left",
            marker=dict(size=14, color=[KEPT_COLOR if r in used else PRUNED_COLOR for r in rows]),
            hovertext=[
                plot_text(
                    _("row {r} at step {s}: copied to {n} rows").format(r=r, s=step_index, n=reorder.count(r))
                )
                for r in rows
            ],
            hoverinfo="text",
            showlegend=False,
            name="before",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[1] * len(rows),
            y=rows,
            mode="markers+text",
            text=[plot_text(label(r)) for r in rows],
            textposition="middle right",
            marker=dict(size=14, color=KEPT_COLOR),
            hovertext=[
                plot_text(
                    _("row {r} at step {s}: takes row {src}").format(r=r, s=step_index + 1, src=reorder[r])
                )
                for r in rows
            ],
            hoverinfo="text",
            showlegend=False,
            name="after",
        )
    )
    title = _("After step {step}: reorder_cache({order})").format(step=step_index, order=reorder)
    if not applied:
        title += " — " + _("a layer did not apply it")
    fig.update_layout(
        title=dict(text=plot_text(title), font=dict(size=14)),
        height=140 + 44 * len(rows),
        margin=dict(l=10, r=10, t=70, b=10),
        xaxis=dict(
            range=[-1.2 if not narrow else -1.6, 2.2 if not narrow else 2.6],
            tickmode="array",
            tickvals=[0, 1],
            ticktext=[_("step {s}").format(s=step_index), _("step {s}").format(s=step_index + 1)],
            zeroline=False,
            showgrid=False,
            side="top",
        ),
        yaxis=dict(autorange="reversed", visible=False),
        plot_bgcolor="#ffffff",
        font=dict(size=13, color=TEXT_COLOR),
    )
    return fig


def prompt_of(tr: Trace, returned: int) -> int:
    """The prompt that returned sequence `returned` (a hypothesis index, or a batch row) belongs to."""
    return returned // tr.returned_per_prompt if tr.beam_result is not None else returned


def hypothesis_in_prompt(tr: Trace, returned: int) -> int:
    """Which of its prompt's returned hypotheses sequence `returned` is (0: the best)."""
    return returned % tr.returned_per_prompt if tr.beam_result is not None else 0
