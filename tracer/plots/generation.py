"""The generation views as pure functions: Trace -> plotly Figure, Arrow or pandas table, HTML or plain text.

The app's pages (overview, step replay, attention, KV cache) only lay out what these build, so
everything a page shows can be built and tested without Streamlit or a model:

- overview: `token_strip_html`, `steps_table`, `trace_summary`
- step replay: `call_flow`, `call_flow_html`, `call_flow_table`, `prepare_inputs_table`,
  `prepare_inputs_changes`, `topk_figure`, `step_story`
- attention: `attention_figure`, `attention_heads_figure`, `stitched_attention`,
  `stitched_attention_figure`
- KV cache: `cache_table`, `cache_growth_figure`, `cache_shapes_table`, `cache_on_off_table`,
  `cache_on_off_figure`

Positions: the decoder's sequence is `tr.sequence_ids` (the prompt then the generated tokens for
a decoder-only model; the start token then the generated tokens for BART). Step i sees the first
`len(tr.start_ids) + i` of them: the queries it computed are the last `q_len` of those, its keys
all of them (self-attention) or the source tokens (cross-attention).

Token labels, shape text, the heatmap and the message figure come from `tracer.plots.common`,
shared with the training and doctor views.
"""

from __future__ import annotations

import copy
import functools
import html
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pyarrow as pa
from plotly.subplots import make_subplots

from tracer import i18n, names
from tracer.i18n import N_, Gettext, untranslated
from tracer.plots.common import (
    KIND_TITLES,
    OTHER_COLOR,
    TEXT_COLOR,
    UNCHECKED,
    Html,
    attention_heatmap,
    message_figure,
    plot_text,
    shape_of,
    shape_text,
    show_token,
    table,
    tick_labels,
    token_label,
    unchecked_figure,
    value_text,
)
from tracer.plots.common import attention_kinds as attention_kinds  # the pages call g.attention_kinds
from tracer.trace import STOP_DETAILS, Event, Step, TensorInfo, Trace, human_bytes

PROMPT_COLOR = "#d0e2ff"  # the prompt / source tokens
GENERATED_COLOR = "#ffe3b3"  # tokens the model chose
CHOSEN_COLOR = "#e8590c"
ERROR_COLOR = "#fa5252"
LAYER_COLORS = ("#1c7ed6", "#e8590c", "#2f9e44", "#9c36b5", "#f08c00", "#0c8599", "#c2255c", "#5c940d")


# ---------------------------------------------------------------------------------------------
# Small helpers


# A count with its noun, singular and plural (a language without plurals says both alike).
_COUNTED = {
    "position": (N_("{count} position"), N_("{count} positions")),
    "decoder position": (N_("{count} decoder position"), N_("{count} decoder positions")),
    "key": (N_("{count} key"), N_("{count} keys")),
    "token": (N_("{count} token"), N_("{count} tokens")),
}


def _n(count: int, word: str, _: Gettext = untranslated) -> str:
    one, many = _COUNTED[word]
    return _(one if count == 1 else many).format(count=count)


def _pct(prob: float | None) -> str:
    return "n/a" if prob is None else f"{100 * prob:.1f}%"


def step_end(tr: Trace, step: Step) -> int:
    """How many decoder positions exist while step `step` runs (its keys, in self-attention)."""
    return len(tr.start_ids) + step.index


def fed_count(step: Step) -> int | None:
    """Positions the decoder was fed at this step, as ids or as embeddings."""
    return step.fed_len


def _labels(tr: Trace, ids: list[int], start: int = 0) -> list[str]:
    return [f"{start + i}: {token_label(tr, t)}" for i, t in enumerate(ids)]


def _decoder_ids(tr: Trace, end: int) -> list[int]:
    ids = list(tr.sequence_ids[:end])
    return ids + [-1] * (end - len(ids))  # a failed step may reach past what was returned


def _decoder_labels(tr: Trace, positions, *, queries: bool) -> list[str]:
    """Labels of decoder positions ("2: 1999"); a query row that wrote a token says so ("2: 1999 → 06").

    The row at position p computes the distribution of the token at p + 1: from the last start
    position on, that token is one the run wrote.
    """
    positions = [int(p) for p in positions]
    ids = _decoder_ids(tr, max(positions, default=-1) + 2)
    first_writer = len(tr.start_ids) - 1
    labels = []
    for p in positions:
        label = f"{p}: {token_label(tr, ids[p])}"
        if queries and p >= first_writer and p + 1 < len(tr.sequence_ids):
            label += f" → {token_label(tr, ids[p + 1])}"
        labels.append(label)
    return labels


def _attention_labels(tr: Trace, step: Step, kind: str, layer: int) -> tuple[list[str], list[str]]:
    """(query labels, key labels) of one attention matrix of this step, by absolute position."""
    q_len, k_len = step.attention(kind, layer).shape[-2:]
    if kind == "encoder":
        return _labels(tr, tr.prompt_ids[:q_len]), _labels(tr, tr.prompt_ids[:k_len])
    end = step_end(tr, step)
    queries = _decoder_labels(tr, range(end - q_len, end), queries=True)
    if kind == "cross":
        return queries, _labels(tr, tr.prompt_ids[:k_len])
    return queries, _decoder_labels(tr, step.key_positions(kind, layer), queries=False)


def num_heads(tr: Trace, kind: str = "self") -> int:
    for step in tr.steps:
        for layer in range(tr.num_layers):
            if step.has_attention(kind, layer):
                return int(step.attention(kind, layer).shape[0])
    if kind == "encoder" and tr.config.get("encoder_heads"):
        return int(tr.config["encoder_heads"])
    return int(tr.config.get("num_heads") or 0)


def kind_layers(tr: Trace, kind: str) -> int:
    return int(tr.config.get("encoder_layers") or 0) if kind == "encoder" else tr.num_layers


# ---------------------------------------------------------------------------------------------
# Overview


def trace_summary(tr: Trace, *, _: Gettext = untranslated) -> str:
    """One line: model, architecture, decoding and cache settings, steps, and the error if any."""
    s = tr.settings
    if s.get("do_sample"):
        # top_k and top_p only when someone set them: transformers' defaults (50, 1.0) go unsaid.
        sources = s.get("sources") or {}
        parts = [_("temperature {value}").format(value=s.get("temperature"))]
        parts += [
            f"{key} {s[key]}"
            for key in ("top_k", "top_p")
            if sources.get(key) in ("caller", "checkpoint") and s.get(key) is not None
        ]
        parts.append(_("seed {value}").format(value=s.get("seed")))
        decoding = _("sampling ({settings})").format(settings=", ".join(parts))
    elif (s.get("num_beams") or 1) > 1:
        decoding = _("beam search ({beams} beams)").format(beams=s["num_beams"])
    else:
        decoding = _("greedy")
    cache = _("cache on") if s.get("use_cache", True) else _("cache off")
    text = _(
        "{model} ({model_class}, {arch}), {decoding}, {cache}: {prompt} prompt tokens, "
        "{generated} generated in {steps} steps"
    ).format(
        model=tr.model_name,
        model_class=tr.model_class,
        arch=_(tr.arch),
        decoding=decoding,
        cache=cache,
        prompt=len(tr.prompt_ids),
        generated=len(tr.generated_ids),
        steps=len(tr.steps),
    )
    if tr.error is not None:
        text += _("; failed at step {step}").format(step=tr.error.step)
    elif tr.stop:
        text += _("; stopped: {reason}").format(reason=stop_detail(tr, _=_))
    if "eos_token_id" in tr.settings:
        text += _("; eos ids {ids}").format(ids=eos_text(tr, _=_))
    return text


# The architectures, as trace.arch names them (shown through _).
_ARCH_WORDS = (N_("decoder-only"), N_("encoder-decoder"))


def eos_line(tr: Trace, *, _: Gettext = untranslated) -> str:
    """A sentence on the run's end-of-sequence ids, for the step replay."""
    if not tr.eos_token_ids:
        return _(
            "This run has no end-of-sequence id: max_new_tokens (or another stopping criterion) ends it."
        )
    return _("End-of-sequence ids of this run: {ids}. Choosing one stops generate().").format(
        ids=eos_text(tr, _=_)
    )


def eos_text(tr: Trace, *, _: Gettext = untranslated) -> str:
    """The run's end-of-sequence ids with their tokens: "2 (</s>)", or "none"."""
    ids = tr.eos_token_ids
    return ", ".join(f"{i} ({token_label(tr, i)})" for i in ids) or _("none")


# Where a setting came from, in the words the app shows (tracer/generation_settings.py's sources).
_SOURCE_WORDS = {
    "caller": N_("your choice"),
    "checkpoint": N_("the model's generation_config"),
    "transformers default": N_("transformers default"),
}


def settings_table(tr: Trace, *, _: Gettext = untranslated) -> pa.Table:
    """Every generation setting in force for the run, its value and where it came from."""
    sources = tr.settings.get("sources") or {}
    rows = [
        {"setting": key, "value": _setting_text(tr, key, _), "from": _(_SOURCE_WORDS.get(source, source))}
        for key, source in sources.items()
    ]
    return table(rows, [N_("setting"), N_("value"), N_("from")], _)


def _setting_text(tr: Trace, key: str, _: Gettext = untranslated) -> str:
    value = tr.settings.get(key)
    if key == "eos_token_id":
        return eos_text(tr, _=_)
    return str(value)


def token_strip_html(tr: Trace, *, _: Gettext = untranslated) -> Html:
    """The prompt (blue) and the generated tokens (orange, numbered by step) as an HTML strip."""

    def chip(text: str, color: str, title: str) -> str:
        return (
            f'<span title="{html.escape(title)}" style="background:{color};border-radius:4px;'
            f'padding:2px 6px;margin:2px;display:inline-block;font-family:monospace">'
            f"{html.escape(show_token(text))}</span>"
        )

    where = _("source position {i}, id {id}") if tr.encoder_decoder else _("prompt position {i}, id {id}")
    parts = [
        chip(tr.token_text(t), PROMPT_COLOR, where.format(i=i, id=t)) for i, t in enumerate(tr.prompt_ids)
    ]
    if tr.encoder_decoder:
        parts.append('<span style="margin:0 8px">⇒</span>')
        parts += [
            chip(tr.token_text(t), "#e9ecef", _("decoder start, id {id}").format(id=t)) for t in tr.start_ids
        ]
    chosen = [s for s in tr.steps if s.chosen_id is not None]
    parts += [
        chip(
            tr.token_text(s.chosen_id),
            GENERATED_COLOR,
            _("step {step}, id {id}, p={p}").format(step=s.index, id=s.chosen_id, p=_pct(s.chosen_prob)),
        )
        for s in chosen
    ]
    if tr.error is not None:
        failed = _("✗ step {step}: {error}").format(step=tr.error.step, error=tr.error.type)
        parts.append(chip(failed, "#ffc9c9", str(tr.error)))
    return Html('<div style="line-height:2.2">' + "".join(parts) + "</div>")


def steps_table(tr: Trace, *, _: Gettext = untranslated) -> pa.Table:
    """One row per step: phase, what was fed, cache length after it, the chosen token and its probability."""
    rows = []
    for step in tr.steps:
        fed = step.fed_ids
        fed_text = " ".join(token_label(tr, t) for t in fed) if fed is not None else ""
        if step.fed_name == "inputs_embeds":
            fed_text = _("embeddings of {tokens} (inputs_embeds)").format(
                tokens=_n(step.fed_len or 0, "token", _)
            )
        if len(fed_text) > 60:
            fed_text = fed_text[:57] + "..."
        rows.append(
            {
                "step": step.index,
                "phase": _(step.phase),
                "fed": fed_text,
                "fed shape": shape_text(step.fed_shape),
                "cache length": step.cache_seq_len("self"),
                "chosen token": token_label(tr, step.chosen_id) if step.complete else "",
                "probability": step.chosen_prob,
                "status": _step_status(tr, step, _),
            }
        )
    return table(
        rows,
        [
            N_("step"),
            N_("phase"),
            N_("fed"),
            N_("fed shape"),
            N_("cache length"),
            N_("chosen token"),
            N_("probability"),
            N_("status"),
        ],
        _,
    )


def _step_status(tr: Trace, step: Step, _: Gettext = untranslated) -> str:
    if tr.error is not None and tr.error.step == step.index:
        return _("failed: {error}").format(error=tr.error.type)
    return _("ok") if step.complete else _("incomplete")


# ---------------------------------------------------------------------------------------------
# Step replay: the call flow


@dataclass(frozen=True)
class FlowNode:
    """One box of the call-flow diagram."""

    title: str  # "decoder.layers.0.self_attn"
    detail: str  # the shapes, in plain words
    depth: int  # nesting: 0 generate, 1 its calls, 2 inside forward, 3 inside a block
    module: str = ""  # the Hugging Face module path
    failed: bool = False


def _first_tensor(values: dict, keys: tuple[str, ...]) -> tuple[str, TensorInfo] | None:
    for key in keys:
        value = values.get(key)
        if isinstance(value, TensorInfo):
            return key, value
    for key, value in values.items():
        if isinstance(value, TensorInfo):
            return key, value
    return None


_IN_KEYS = ("input_ids", "decoder_input_ids", "hidden_states")
_OUT_KEYS = ("logits", "last_hidden_state", "attn_weights", "output", "output[0]")


def _event_detail(tr: Trace, step: Step, event: Event, _: Gettext = untranslated) -> str:
    kind = event.attention_kind
    if event.name in (names.DECODER_EMBED, names.ENCODER_EMBED):
        ids, out = event.inputs.get("arg0"), event.outputs.get("output")
        if isinstance(ids, TensorInfo) and isinstance(out, TensorInfo):
            return _("input_ids {ids} → embeddings {out}").format(ids=shape_of(ids), out=shape_of(out))
    parsed = names.parse_layer(event.name)
    if parsed is not None and parsed[2] == "mlp":
        hidden, out = event.inputs.get("hidden_states"), event.outputs.get("output")
        ffn = tr.config.get("ffn_dim")
        if isinstance(hidden, TensorInfo) and isinstance(out, TensorInfo):
            inner = f" → [{', '.join(map(str, hidden.shape[:-1]))}, {ffn}]" if ffn else ""
            words = _("hidden {hidden}{inner} → {out}")
            return words.format(hidden=shape_of(hidden), inner=inner, out=shape_of(out))
    if event.name == names.PREPARE_INPUTS:
        before = _first_tensor(event.inputs, ("input_ids",))
        after = _first_tensor(event.outputs, ("input_ids", "decoder_input_ids", "inputs_embeds"))
        if before and after:
            return _("sequence {before} → feeds {name} {after}").format(
                before=shape_of(before[1]), name=after[0], after=shape_of(after[1])
            )
    if event.name == names.CHOOSE_TOKEN:
        if step.chosen_id is None:
            return _("no token chosen")
        token = token_label(tr, step.chosen_id)
        return _("picks {token} (p={p})").format(token=token, p=_pct(step.chosen_prob))
    if kind is not None:
        hidden = event.inputs.get("hidden_states")
        weights = event.outputs.get("attn_weights")
        text = _("hidden {shape}").format(shape=shape_of(hidden)) if hidden is not None else ""
        if weights is not None:
            text += _(" → weights {shape}").format(shape=shape_of(weights))
        cache_before = event.inputs.get("cache_len_before")
        if kind == "self" and cache_before is not None and isinstance(weights, TensorInfo):
            text += _("; cache {before} → {after}").format(before=cache_before, after=weights.shape[-1])
        if kind == "cross" and isinstance(weights, TensorInfo):
            text += _("; {count} source positions").format(count=weights.shape[-1])
        return text.strip()
    inp = _first_tensor(event.inputs, _IN_KEYS)
    out = _first_tensor(event.outputs, _OUT_KEYS)
    parts = []
    if inp:
        parts.append(f"{inp[0]} {shape_of(inp[1])}")
    if out:
        parts.append(f"{out[0]} {shape_of(out[1])}")
    return " → ".join(parts)


def _event_depth(event: Event) -> int:
    if event.name in (names.PREPARE_INPUTS, names.FORWARD, names.CHOOSE_TOKEN, names.ENCODER):
        return 1
    parsed = names.parse_layer(event.name)
    if event.attention_kind is not None or (parsed is not None and parsed[2] == "mlp"):
        return 3
    return 2  # decoder.layers.{i}, the embeddings, lm_head


def call_flow(tr: Trace, step_index: int, *, _: Gettext = untranslated) -> list[FlowNode]:
    """The step's calls in the order they happened, with shapes, framed by generate() and the append."""
    step = tr.steps[step_index]
    end = step_end(tr, step)
    where = _("step {step} ({phase}); {positions} so far").format(
        step=step.index, phase=_(step.phase), positions=_n(end, "decoder position", _)
    )
    nodes = [FlowNode("generate()", where, 0)]
    for event in step.events:
        nodes.append(
            FlowNode(
                event.name,
                _event_detail(tr, step, event, _),
                _event_depth(event),
                event.module,
                failed=event.error is not None,
            )
        )
        bias = tr.config.get("final_logits_bias")
        if event.name == names.LM_HEAD and bias and event.error is None:
            # BART's forward adds a (1, vocab) buffer to lm_head's logits: no module, so no hook.
            logits = event.outputs.get("output")
            nodes.append(
                FlowNode(
                    "final_logits_bias",
                    f"logits {shape_of(logits)} + final_logits_bias {shape_text(tuple(bias))}",
                    2,
                    _("{model_class}.forward (a buffer added after lm_head)").format(
                        model_class=tr.model_class
                    ),
                )
            )
    failed_here = tr.error is not None and tr.error.step == step.index
    if failed_here:
        nodes.append(FlowNode(_("error"), str(tr.error), 0, failed=True))
    elif step.complete:
        token = token_label(tr, step.chosen_id)
        nodes.append(FlowNode("append", f"input_ids [1, {end}] + {token} → [1, {end + 1}]", 1))
        last = step.index == len(tr.steps) - 1
        nodes.append(FlowNode(_("stop") if last else _("next step"), _stop_reason(tr, _) if last else "", 0))
    return nodes


def _stop_reason(tr: Trace, _: Gettext = untranslated) -> str:
    """Why generate() ended, as recorded (tracer/stopping.py); older traces say less."""
    if tr.error is not None:
        return _("the model raised")
    if tr.stop:
        text = stop_detail(tr, _=_)
        token_id = tr.stop.get("token_id")
        if token_id is not None:
            text = text.replace(f"id {token_id}", f"id {token_id} ({token_label(tr, token_id)})", 1)
        return _("{reason} (eos ids: {ids})").format(reason=text, ids=eos_text(tr, _=_))
    return _("not recorded (a trace from an older Stepwise)")


def stop_detail(tr: Trace, *, _: Gettext = untranslated) -> str:
    """The recorded stop reason's words (tracer.stopping), in the language of `_` when it has them."""
    return i18n.reword((tr.stop or {}).get("detail", ""), STOP_DETAILS.values(), _)


# The figures a step change rebuilds (the top-10, the attention views) are built unchecked
# (common.unchecked_figure): plotly's checking took most of their time.

# The call flow is HTML, not a figure: the browser wraps each box's text to the screen's width,
# and a step change sends a few kilobytes of text where a plotly figure of boxes and annotations
# cost a third of the server's work per click (built, copied by Streamlit's to_dict, encoded).
_FLOW_STYLE = """<style>
.sw-flow { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 13px;
  line-height: 1.4; color: #212529; display: flex; flex-direction: column; gap: 12px; }
.sw-call { border: 1px solid #4dabf7; background: #ffffff; border-radius: 4px; padding: 3px 8px;
  white-space: pre-wrap; overflow-wrap: anywhere; position: relative; }
.sw-call + .sw-call::before { content: "↓"; position: absolute; top: -14px; left: 4px;
  font-size: 11px; line-height: 12px; color: #868e96; }
.sw-call.sw-outer { border-color: #868e96; background: #f1f3f5; }
.sw-call.sw-failed { border-color: %(error)s; background: #fff0f0; color: %(error)s; }
.sw-d1 { margin-left: 14px; } .sw-d2 { margin-left: 28px; } .sw-d3 { margin-left: 42px; }
</style>"""


def call_flow_html(tr: Trace, step_index: int, *, _: Gettext = untranslated) -> Html:
    """The call flow as boxes, one per call (name, then its shapes), indented by nesting and joined
    by arrows; hovering a box shows its Hugging Face module path. Shown with `st.html`."""
    boxes = []
    for node in call_flow(tr, step_index, _=_):
        kind = "sw-failed" if node.failed else ("sw-outer" if node.depth == 0 else "")
        hover = "\n".join(part for part in (node.module, node.detail) if part)
        detail = f"\n<span>{html.escape(node.detail)}</span>" if node.detail else ""
        boxes.append(
            f'<div class="sw-call sw-d{min(node.depth, 3)} {kind}" title="{html.escape(hover)}">'
            f"<b>{html.escape(node.title)}</b>{detail}</div>"
        )
    return Html(_FLOW_STYLE % {"error": ERROR_COLOR} + '<div class="sw-flow">' + "".join(boxes) + "</div>")


def call_flow_table(tr: Trace, step_index: int, *, _: Gettext = untranslated) -> pa.Table:
    """Every recorded call of the step, exactly: hook point, HF module, inputs and outputs."""
    step = tr.steps[step_index]
    rows = [
        {
            "order": i,
            "hook point": e.name,
            "module": e.module,
            "inputs": ", ".join(f"{k}={value_text(v)}" for k, v in e.inputs.items()),
            "outputs": ", ".join(f"{k}={value_text(v)}" for k, v in e.outputs.items()),
            "note": e.note or (f"error: {e.error}" if e.error else ""),
        }
        for i, e in enumerate(step.events)
    ]
    return table(
        rows, [N_("order"), N_("hook point"), N_("module"), N_("inputs"), N_("outputs"), N_("note")], _
    )


# ---------------------------------------------------------------------------------------------
# Step replay: what prepare_inputs_for_generation returned


def _pi_tokens(tr: Trace, value) -> str:
    if isinstance(value, TensorInfo) and value.values is not None and value.dtype.startswith("int"):
        values = list(value.values)
        shown = ", ".join(map(str, values[:12])) + (", ..." if len(values) > 12 else "")
        return f"[{shown}]"
    return ""


def prepare_inputs_table(tr: Trace, step_index: int, *, _: Gettext = untranslated) -> pa.Table:
    """What prepare_inputs_for_generation returned here and at the previous step, and what changed."""
    step = tr.steps[step_index]
    prev = tr.steps[step_index - 1].prepare_inputs if step_index > 0 else {}
    keys = list(step.prepare_inputs) + [k for k in prev if k not in step.prepare_inputs]
    rows = []
    for key in keys:
        now, before = step.prepare_inputs.get(key), prev.get(key)
        rows.append(
            {
                "argument": key,
                "previous step": value_text(before, missing="—") if step_index > 0 else "",
                "this step": value_text(now, missing="—"),
                "values": _pi_tokens(tr, now),
                "changed": step_index > 0 and value_text(now, missing="—") != value_text(before, missing="—"),
            }
        )
    columns = [N_("argument"), N_("previous step"), N_("this step"), N_("values"), N_("changed")]
    return table(rows, columns, _)


def prepare_inputs_changes(tr: Trace, step_index: int) -> list[str]:
    """The shape changes since the previous step, e.g. "input_ids [1, 7] → [1, 1]"."""
    if step_index == 0:
        return []
    now = tr.steps[step_index].prepare_inputs
    before = tr.steps[step_index - 1].prepare_inputs
    changes = []
    for key in list(now) + [k for k in before if k not in now]:
        a, b = before.get(key), now.get(key)
        if isinstance(a, TensorInfo) or isinstance(b, TensorInfo):
            # A tensor on one side may be absent or a plain value (None) on the other.
            same = isinstance(a, TensorInfo) and isinstance(b, TensorInfo) and a.shape == b.shape
            if not same:
                changes.append(
                    f"{key} {shape_of(a) if a is not None else 'absent'} → "
                    f"{shape_of(b) if b is not None else 'absent'}"
                )
        elif a != b:
            changes.append(f"{key} {a} → {b}")
    return changes


# ---------------------------------------------------------------------------------------------
# Step replay: what transformers 5.x does that the (4.x) lesson notes describe otherwise


def live_values_table(tr: Trace, step_index: int, *, _: Gettext = untranslated) -> pa.Table:
    """Five things generate() does in transformers 5.x, each as this step's recorded value and why."""
    step = tr.steps[step_index]
    args, fed = step.prepare_inputs_args, step.prepare_inputs
    lm_head = step.event(names.LM_HEAD)
    lm_in = None if lm_head is None else _first_tensor(lm_head.inputs, ("hidden_states",))
    keep = fed.get("logits_to_keep", args.get("logits_to_keep"))
    forward = step.event(names.FORWARD)
    mask_key = "decoder_attention_mask" if tr.encoder_decoder else "attention_mask"
    fed_mask = fed.get(mask_key)
    if fed_mask is None and forward is not None:
        fed_mask = forward.inputs.get(mask_key)
    if tr.encoder_decoder:
        mask_row = (
            "attention_mask, decoder_attention_mask",
            _("source mask {source}; decoder mask {decoder}").format(
                source=value_text(args.get("attention_mask", "None")),
                decoder=value_text(fed_mask) if fed_mask is not None else "None",
            ),
            _(
                "The source's mask stays (the encoder and cross-attention read it); generate() gives the "
                "decoder no mask of ones: its causal mask is built inside the model."
            ),
        )
    else:
        mask_row = (
            "attention_mask",
            _("called with {given}; fed {fed}").format(
                given=value_text(args.get("attention_mask", "None")),
                fed=value_text(fed_mask) if fed_mask is not None else "None",
            ),
            _(
                "A mask of all ones (no padding) says nothing the causal mask does not: generate() drops it "
                "and passes None, and the model builds its causal mask alone."
            ),
        )
    rows = [
        (
            "logits_to_keep",
            _("{keep}; lm_head sees {shape}").format(
                keep=keep if keep is not None else _("not passed"),
                shape=shape_of(lm_in[1]) if lm_in else _("nothing recorded"),
            ),
            _(
                "generate() needs only the last position's logits, so lm_head runs on [1, 1, hidden] even "
                "at the prefill; a training forward computes logits for every position, [1, T, hidden]."
            ),
        ),
        (
            "cache_position",
            value_text(fed["cache_position"]) if "cache_position" in fed else _("absent"),
            _(
                "transformers 5.x no longer passes cache_position to its models: the cache counts its own "
                "positions (the lesson notes, written for 4.x, still show it)."
            ),
        ),
        (
            "past_key_values",
            value_text(args.get("past_key_values", "None")),
            _(
                "With the cache on, generate() builds an empty cache object before step 0 and passes it, "
                "not None: a check `past_key_values is None` never sees the first step in 5.x."
            ),
        ),
        mask_row,
        (
            "is_first_iteration",
            value_text(args.get("is_first_iteration", _("False (not passed)"))),
            _(
                "generate() marks the prefill call, so prepare_inputs_for_generation uses inputs_embeds "
                "(and inputs such as pixel_values) on the first step only."
            ),
        ),
    ]
    return table(rows, [N_("argument"), N_("this step"), N_("why")], _)


# ---------------------------------------------------------------------------------------------
# Step replay: the token choice and the plain-language account


def topk_figure(tr: Trace, step_index: int, *, _: Gettext = untranslated) -> go.Figure:
    """The top-10 of the distribution the token was chosen from, the chosen token highlighted."""
    step = tr.steps[step_index]
    if not step.topk:
        return message_figure(_("No token was chosen at this step."))
    eos = set(tr.eos_token_ids)
    tokens = [show_token(t.text) + (" (eos)" if t.token_id in eos else "") for t in step.topk]
    probs = [t.prob for t in step.topk]
    colors = [CHOSEN_COLOR if t.token_id == step.chosen_id else OTHER_COLOR for t in step.topk]
    labels = [plot_text(f"{i + 1}. {tok}") for i, tok in enumerate(tokens)]
    return unchecked_figure(
        go.Bar(
            x=probs,
            y=labels,
            orientation="h",
            marker_color=colors,
            text=[_pct(p) for p in probs],
            textposition="outside",
            cliponaxis=False,  # a bar near 100% puts its label past the axis, into the right margin
            customdata=[[t.token_id] for t in step.topk],
            hovertemplate="%{y}<br>id %{customdata[0]}<br>p = %{x:.4f}<extra></extra>",  # no words
            **UNCHECKED,
        ),
        height=360,
        margin=dict(l=10, r=64, t=30, b=10),
        title=dict(
            text=_("Step {step}: next-token distribution (top {count})").format(
                step=step.index, count=len(probs)
            ),
            font=dict(size=15),
        ),
        # Read from the back of a classroom: labels as large and dark as the text around them.
        font=dict(size=15, color=TEXT_COLOR),
        xaxis=dict(title=_("probability"), range=[0, max(probs) * 1.3 or 1], tickfont=dict(size=14)),
        yaxis=dict(autorange="reversed", type="category", tickfont=dict(size=16, color=TEXT_COLOR)),
    )


def _cache_before_words(tr: Trace, step: Step, _: Gettext = untranslated) -> str:
    """ "The cache already holds 7 positions", or, on sliding-window layers, what it saw and kept."""
    previous = tr.steps[step.index - 1] if step.index > 0 else None
    seen = previous.cache_seen("self") if previous is not None else None
    if seen is None:
        seen = step.index - 1 + len(tr.start_ids)
    kept = sorted({c.seq_len for c in previous.cache if c.kind == "self"}) if previous is not None else []
    if kept and kept[0] < seen:
        return _(
            "The cache has seen {positions} but its sliding-window layers keep only the last {kept}"
        ).format(positions=_n(seen, "position", _), kept=kept[0])
    return _("The cache already holds {positions}").format(positions=_n(seen, "position", _))


def _keys_words(tr: Trace, step: Step, _: Gettext = untranslated) -> str:
    """Which keys the new token's query attended to, per layer, by absolute position."""
    spans = {}
    for layer in range(tr.num_layers):
        event = step.event(names.decoder_self_attn(layer))
        if event is not None and isinstance(event.outputs.get("attn_weights"), TensorInfo):
            positions = step.key_positions("self", layer)
            spans.setdefault((int(positions[0]), int(positions[-1])), []).append(layer)
    if not spans:
        return ""
    parts = []
    for (first, last), layers in spans.items():
        count = last - first + 1
        which = ", ".join(map(str, layers))
        if len(spans) == 1:
            who = _("Its query")
        else:
            who = (
                _("In layers {layers} its query") if len(layers) > 1 else _("In layer {layers} its query")
            ).format(layers=which)
        parts.append(
            _(
                "{who} attended to {keys}, positions {first} to {last}: the {cached} cached and its own."
            ).format(who=who, keys=_n(count, "key", _), first=first, last=last, cached=count - 1)
        )
    return " ".join(parts)


def step_story(tr: Trace, step_index: int, *, _: Gettext = untranslated) -> str:
    """A short plain-language account of the step, built from what the trace recorded."""
    step = tr.steps[step_index]
    use_cache = bool(tr.settings.get("use_cache", True))
    fed = fed_count(step)
    fed_ids = step.fed_ids or []
    fed_words = " ".join(token_label(tr, t) for t in fed_ids)
    fed_shape = f"{step.fed_name or 'input_ids'} {shape_text(step.fed_shape)}"
    n_layers = tr.num_layers
    lines = []

    if tr.encoder_decoder and step.index == 0 and step.event(names.ENCODER) is not None:
        lines.append(
            _(
                "The **encoder** read the {count} source tokens once, before this first step; "
                "every step reuses its output."
            ).format(count=len(tr.prompt_ids))
        )
    if step.index == 0:
        embedded = step.fed_name == "inputs_embeds"
        if tr.encoder_decoder:
            what = _("only the decoder start token")
        else:
            what = _("the whole prompt of {count} tokens").format(count=fed)
        if embedded:
            what = _(
                "{what}, as embeddings (their rows of the embedding table rather than their ids),"
            ).format(what=what)
        if use_cache:
            lines.append(
                _(
                    "Step 0 is the **prefill**: the cache is empty, so {what} was fed ({shape}). "
                    "Each of the {layers} layers stored their keys and values in the cache."
                ).format(what=what, shape=fed_shape, layers=n_layers)
            )
        else:
            lines.append(
                _("Step 0: the cache is off, so {what} was fed ({shape}).").format(what=what, shape=fed_shape)
            )
        if embedded:
            lines.append(
                _(
                    "generate() uses inputs_embeds on the first step only: from step 1 it feeds the new "
                    "token's input_ids [1, 1]."
                )
            )
    elif use_cache:
        lines.append(
            _("{cache}, so only the new token **{token}** was fed ({shape}).").format(
                cache=_cache_before_words(tr, step, _), token=fed_words, shape=fed_shape
            )
            + " "
            + _keys_words(tr, step, _)
        )
    else:
        lines.append(
            _(
                "The cache is **off**, so all {count} tokens so far were fed again ({shape}) "
                "and every layer recomputed keys and values for every position; only the last position's "
                "logits choose the next token."
            ).format(count=fed, shape=fed_shape)
        )
    if tr.encoder_decoder and step.complete:
        src = len(tr.prompt_ids)
        if use_cache and step.index == 0:
            lines.append(
                _(
                    "Cross-attention projected the encoder output into keys and values for the {count} "
                    "source positions and stored them in the cross-attention cache, which stays fixed from "
                    "now on."
                ).format(count=src)
            )
        elif use_cache:
            lines.append(
                _("Cross-attention read its {count} source keys and values from the cache.").format(count=src)
            )
        else:
            lines.append(
                _("Cross-attention recomputed keys and values for the {count} source positions.").format(
                    count=src
                )
            )

    if step.complete:
        token = token_label(tr, step.chosen_id)
        rank = next((i for i, t in enumerate(step.topk) if t.token_id == step.chosen_id), None)
        if tr.settings.get("do_sample"):
            where = (
                _("the #{rank} most likely").format(rank=rank + 1)
                if rank is not None
                else _("outside the top 10")
            )
            how = _(
                "Sampling at temperature {temperature} (seed {seed}) drew **{token}** ({p}), {where}."
            ).format(
                temperature=tr.settings.get("temperature"),
                seed=tr.settings.get("seed"),
                token=token,
                p=_pct(step.chosen_prob),
                where=where,
            )
        else:
            how = _("Greedy decoding took the most likely token, **{token}** ({p}).").format(
                token=token, p=_pct(step.chosen_prob)
            )
        lines.append(how)
        after = step.cache_seq_len("self")
        kept = sorted({c.seq_len for c in step.cache if c.kind == "self"})
        seen = step.cache_seen("self")
        if after is not None and kept[0] < (seen or 0):
            others = _(", the other layers all {seen}").format(seen=seen) if kept[-1] == seen else ""
            lines.append(
                _(
                    "After the step the cache has seen {positions}; its sliding-window layers keep "
                    "the last {kept} of them{others}. {token} is appended."
                ).format(positions=_n(seen, "position", _), kept=kept[0], others=others, token=token)
            )
        elif after is not None:
            lines.append(
                _("After the step the cache holds {positions} per layer; {token} is appended.").format(
                    positions=_n(after, "position", _), token=token
                )
            )
        else:
            lines.append(
                _("{token} is appended to the sequence; nothing is kept for the next step.").format(
                    token=token
                )
            )
        if step.index == len(tr.steps) - 1 and tr.error is None:
            lines.append(_("generate() stops here: {reason}.").format(reason=_stop_reason(tr, _)))
    if tr.error is not None and tr.error.step == step.index:
        where = _(" in `{where}`").format(where=tr.error.where) if tr.error.where else ""
        lines.append(
            _(
                "**This step failed**{where}: {error}: {message}. "
                "The calls recorded before the failure are shown."
            ).format(where=where, error=tr.error.type, message=tr.error.message)
        )
    return "\n\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Attention


def step_attention(
    tr: Trace, step_index: int, kind: str, layer: int
) -> tuple[np.ndarray, list[str], list[str]]:
    """This step's attention [heads, q_len, k_len] with query and key labels ("7: mia")."""
    step = tr.steps[step_index]
    queries, keys = _attention_labels(tr, step, kind, layer)
    return step.attention(kind, layer), queries, keys


def _attention_title(
    tr: Trace, step_index: int, kind: str, layer: int, head: int | None, _: Gettext = untranslated
) -> str:
    head_text = _("all heads") if head is None else _("head {head}").format(head=head)
    return _("Step {step}, layer {layer}, {heads}: {kind}").format(
        step=step_index, layer=layer, heads=head_text, kind=_(KIND_TITLES[kind])
    )


def attention_figure(
    tr: Trace, step_index: int, kind: str, layer: int, head: int, *, _: Gettext = untranslated
) -> go.Figure:
    """One head's attention at one step: rows are the queries computed here, columns the keys."""
    step = tr.steps[step_index]
    if not step.has_attention(kind, layer):
        return message_figure(_missing_attention(tr, step, kind, layer, _))
    att, queries, keys = step_attention(tr, step_index, kind, layer)
    q_n = len(queries)
    return unchecked_figure(
        attention_heatmap(att[head], queries, keys),
        title=dict(text=_attention_title(tr, step_index, kind, layer, head, _), font=dict(size=14)),
        height=max(220, min(700, 120 + 18 * q_n)),
        margin=dict(l=10, r=10, t=40, b=10),
        xaxis=dict(title=_("key (attended to)"), **tick_labels(keys, 40)),
        yaxis=dict(title=_("query"), autorange="reversed", **tick_labels(queries, 40)),
    )


def attention_heads_figure(
    tr: Trace, step_index: int, kind: str, layer: int, narrow: bool = False, *, _: Gettext = untranslated
) -> go.Figure:
    """Every head of one layer at one step; `narrow` for a phone: one head per row, fewer labels.

    A step that computed one query (a cached decode step) shows one matrix, a row per head: each
    row is that head's weights for the newest token. Otherwise one heatmap per head, two per row,
    the query labels only left of the first of each row (they would lie over the neighbour's keys).
    """
    step = tr.steps[step_index]
    if not step.has_attention(kind, layer):
        return message_figure(_missing_attention(tr, step, kind, layer, _))
    att, queries, keys = step_attention(tr, step_index, kind, layer)
    heads = att.shape[0]
    title = dict(text=_attention_title(tr, step_index, kind, layer, None, _), font=dict(size=14))
    head_names = [_("head {head}").format(head=h) for h in range(heads)]
    if len(queries) == 1:
        per_head = [f"{name} ← {queries[0]}" for name in head_names]
        return unchecked_figure(
            attention_heatmap(att[:, 0, :], per_head, keys),
            title=title,
            height=150 + 34 * heads,
            margin=dict(l=10, r=10, t=40, b=10),
            xaxis=dict(
                title=_("key (attended to)"),
                tickangle=-60,
                tickfont=dict(size=12, color=TEXT_COLOR),
                **tick_labels(keys, 10 if narrow else 24),
            ),
            yaxis=dict(
                autorange="reversed",
                tickvals=list(range(heads)),
                ticktext=head_names,
                tickfont=dict(size=13, color=TEXT_COLOR),
            ),
        )
    cols = 1 if narrow else min(2, heads)
    rows = int(np.ceil(heads / cols))
    max_ticks = 10 if narrow else 16
    grid, panels = _heads_grid(rows, cols, tuple(head_names))
    heatmaps = []
    for h in range(heads):
        heatmap = attention_heatmap(att[h], queries, keys, showscale=h == 0)
        x_name, y_name = panels[h]
        heatmap.xaxis, heatmap.yaxis = x_name.replace("axis", ""), y_name.replace("axis", "")  # "x2"
        heatmaps.append(heatmap)
    # Every panel's axes: the keys below, the queries left of the first panel of each row only.
    x_ticks = dict(tickangle=-60, tickfont=dict(size=11, color=TEXT_COLOR), **tick_labels(keys, max_ticks))
    y_ticks = dict(
        autorange="reversed", tickfont=dict(size=11, color=TEXT_COLOR), **tick_labels(queries, max_ticks)
    )
    first_column = {panels[row * cols][1] for row in range(rows)}
    for name, axis in grid.items():
        if name.startswith("xaxis"):
            axis.update(x_ticks)
        elif name.startswith("yaxis"):
            axis.update(y_ticks, showticklabels=name in first_column)
    panel = max(180, min(360, 80 + 16 * len(queries)))
    return unchecked_figure(
        heatmaps, **grid, title=title, height=rows * panel + 90, margin=dict(l=10, r=10, t=60, b=10)
    )


@functools.lru_cache(maxsize=64)
def _heads_grid_cached(rows: int, cols: int, titles: tuple[str, ...]) -> tuple[dict, list[tuple[str, str]]]:
    grid = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=list(titles),
        shared_yaxes=True,
        horizontal_spacing=0.04,
        vertical_spacing=min(0.12, 0.5 / rows),
    )
    layout = grid.to_dict()["layout"]
    del layout["template"]  # the figure built from the grid gets its own
    panels = [grid.get_subplot(row, col) for row in range(1, rows + 1) for col in range(1, cols + 1)]
    return layout, [(panel.xaxis.plotly_name, panel.yaxis.plotly_name) for panel in panels]


def _heads_grid(rows: int, cols: int, titles: tuple[str, ...]) -> tuple[dict, list[tuple[str, str]]]:
    """The heads figure's grid, as make_subplots lays it out: its layout (each panel's axes and
    title) and each panel's (x axis, y axis) names, row by row ("xaxis2", "yaxis2").

    make_subplots takes about 20 ms and its grid is the same for every step of a trace, so it is
    made once per shape; each figure gets its own copy of the layout to fill in.
    """
    layout, panels = _heads_grid_cached(rows, cols, titles)
    return copy.deepcopy(layout), panels


def _missing_attention(tr: Trace, step: Step, kind: str, layer: int, _: Gettext = untranslated) -> str:
    what = _(KIND_TITLES[kind])
    if kind == "encoder" and step.index != 0:
        return _("The encoder runs once, before step 0: choose step 0 to see its attention.")
    if kind != "self" and not tr.encoder_decoder:
        return _("A {arch} model has no {kind}.").format(arch=_(tr.arch), kind=what)
    event = step.event(names.attention_name(kind, layer))
    if event is None:
        return _("Step {step} did not reach layer {layer}'s {kind}.").format(
            step=step.index, layer=layer, kind=what
        )
    if event.error is not None:
        return _("Step {step}, layer {layer}: the {kind} raised before returning weights.").format(
            step=step.index, layer=layer, kind=what
        )
    note = event.note or _("attention was not captured")
    return _("Step {step}, layer {layer}: {note}.").format(step=step.index, layer=layer, note=note)


def stitched_attention(
    tr: Trace, kind: str, layer: int
) -> tuple[np.ndarray, list[str], list[str], list[int]]:
    """The whole attention matrix stitched from every step: [heads, T, K], columns by absolute position.

    With the cache on, step 0 gives the prompt's rows and each decode step adds one row; with
    the cache off each step recomputes every row, and the latest step's rows are kept. A cell is
    NaN (blank) where the row has no such key: a later position (the causal mask gives it weight
    0), or one a sliding-window layer no longer keeps. Returns (matrix, query labels, key
    labels, row_step) where row_step[r] is the step that computed row r.
    """
    if kind == "encoder":
        step = tr.steps[0] if tr.steps else None
        if step is None or not step.has_attention("encoder", layer):
            return np.zeros((0, 0, 0)), [], [], []
        att, queries, keys = step_attention(tr, 0, "encoder", layer)
        return att, queries, keys, [0] * len(queries)
    pieces = [(s, s.attention(kind, layer)) for s in tr.steps if s.has_attention(kind, layer)]
    if not pieces:
        return np.zeros((0, 0, 0)), [], [], []
    heads = pieces[0][1].shape[0]
    t_len = max(step_end(tr, s) for s, _ in pieces)
    k_len = len(tr.prompt_ids) if kind == "cross" else t_len
    k_len = max([k_len] + [a.shape[-1] for _, a in pieces])
    matrix = np.full((heads, t_len, k_len), np.nan, dtype=np.float32)
    row_step = [-1] * t_len
    for step, att in pieces:  # [heads, q_len, k_len]
        end = step_end(tr, step)
        q_len, k = att.shape[-2:]
        columns = step.key_positions(kind, layer) if kind == "self" else np.arange(k)
        rows = slice(end - q_len, end)
        matrix[:, rows, :] = np.nan  # a cache-off step replaces the rows an earlier step computed
        matrix[:, rows, columns] = att
        for r in range(end - q_len, end):
            row_step[r] = step.index
    if kind == "self":  # a query never sees later keys (the causal mask): blank, not a zero weight
        above = np.triu_indices(t_len, k=1, m=k_len)
        matrix[:, above[0], above[1]] = np.nan
    queries = _decoder_labels(tr, range(t_len), queries=True)
    if kind == "cross":
        keys = _labels(tr, tr.prompt_ids[:k_len])
    else:
        keys = _decoder_labels(tr, range(k_len), queries=False)
    return matrix, queries, keys, row_step


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
    """One head's stitched matrix over the whole run, the rows of `highlight_step` outlined
    (`narrow`: fewer labels, for a phone)."""
    matrix, queries, keys, row_step = stitched_attention(tr, kind, layer)
    if matrix.size == 0:
        return message_figure(
            _("No {kind} was captured in layer {layer}.").format(kind=_(KIND_TITLES[kind]), layer=layer)
        )
    rows = [r for r, s in enumerate(row_step) if s == highlight_step]
    outline = {}
    if rows:
        outline["shapes"] = [
            dict(
                type="rect",
                x0=-0.5,
                x1=len(keys) - 0.5,
                y0=min(rows) - 0.5,
                y1=max(rows) + 0.5,
                line=dict(color=CHOSEN_COLOR, width=2),
            )
        ]
    height = max(300, min(900, 160 + 16 * len(queries)))
    title = _("Layer {layer}, head {head}: {kind} over the whole run").format(
        layer=layer, head=head, kind=_(KIND_TITLES[kind])
    )
    if kind != "encoder":
        title += (
            _(" (each step adds its rows)")
            if tr.settings.get("use_cache", True)
            else _(" (last step's rows)")
        )
    return unchecked_figure(
        attention_heatmap(matrix[head], queries, keys),
        **outline,
        title=dict(text=title, font=dict(size=14)),
        height=height,
        margin=dict(l=10, r=10, t=40, b=10),
        xaxis=dict(title=_("key"), **tick_labels(keys, 10 if narrow else 40)),
        # A labelled row needs 16 px, or its label lies on the next one's.
        yaxis=dict(title=_("query"), autorange="reversed", **tick_labels(queries, (height - 160) // 16)),
    )


# ---------------------------------------------------------------------------------------------
# KV cache


def cache_table(tr: Trace) -> pd.DataFrame:
    """Long table: one row per step, layer and cache kind, with shapes, length and bytes."""
    rows = [
        {
            "step": s.index,
            "layer": c.layer,
            "kind": c.kind,
            "seq_len": c.seq_len,
            "seen": c.positions_seen,
            "bytes": c.nbytes,
            "key shape": shape_text(c.key_shape),
            "value shape": shape_text(c.value_shape),
        }
        for s in tr.steps
        for c in s.cache
    ]
    return pd.DataFrame(
        rows,
        columns=[
            N_("step"),
            N_("layer"),
            N_("kind"),
            N_("seq_len"),
            N_("seen"),
            N_("bytes"),
            N_("key shape"),
            N_("value shape"),
        ],
    )


def cache_growth_figure(tr: Trace, *, _: Gettext = untranslated) -> go.Figure:
    """Cache length (top) and bytes (below) per layer over the steps; BART's cross cache dashed.

    Layers whose cache grew alike draw as one line named after all of them ("layers 0, 1, 2"), so
    every legend entry has a line of its own; a line keeps its colour in both charts.
    """
    table = cache_table(tr)
    if table.empty:
        return message_figure(_("The cache is off in this trace: nothing is kept between steps."))
    fig = make_subplots(
        rows=2,
        cols=1,
        subplot_titles=(_("positions kept (seq_len) and seen"), _("memory per layer")),
        shared_xaxes=True,  # one step axis: the top chart needs no tick labels of its own
        vertical_spacing=0.16,
    )
    dash = {"self": "solid", "cross": "dash"}
    series: dict[tuple, list[int]] = {}  # (kind, steps, kept, seen, bytes) -> layers that grew so
    for (kind, layer), part in table.groupby(["kind", "layer"], sort=True):
        key = (kind, tuple(part["step"]), tuple(part["seq_len"]), tuple(part["seen"]), tuple(part["bytes"]))
        series.setdefault(key, []).append(int(layer))
    for i, ((kind, steps, lengths, seen, sizes), layers) in enumerate(series.items()):
        which = ", ".join(map(str, layers))
        name = (_("layer {layers}") if len(layers) == 1 else _("layers {layers}")).format(layers=which)
        if tr.encoder_decoder:
            name += f" {kind}"
        color = LAYER_COLORS[i % len(LAYER_COLORS)]  # a group's lines (kept, seen, bytes) share its color
        common = dict(
            mode="lines+markers",
            line=dict(dash=dash.get(kind, "solid"), color=color),
            marker=dict(color=color),
            legendgroup=name,
        )
        fig.add_trace(go.Scatter(x=steps, y=lengths, name=name, **common), row=1, col=1)
        if seen != lengths:  # a sliding-window layer: it keeps fewer positions than it has seen
            fig.add_trace(
                go.Scatter(
                    x=steps,
                    y=seen,
                    name=_("{name}, positions seen").format(name=name),
                    mode="lines",
                    line=dict(dash="dot", color=color),
                    legendgroup=name,
                ),
                row=1,
                col=1,
            )
        fig.add_trace(
            go.Scatter(
                x=steps,
                y=sizes,
                name=name,
                showlegend=False,
                customdata=[human_bytes(int(b)) for b in sizes],
                hovertemplate=_("step") + " %{x}<br>%{customdata}<extra>" + name + "</extra>",
                **common,
            ),
            row=2,
            col=1,
        )
    # Room above the highest line: BART's fixed cross cache is the top one and sat on the frame.
    top = max(table["seq_len"].max(), table["seen"].max())
    fig.update_yaxes(title_text=_("positions"), range=[0, top * 1.15 + 1], row=1, col=1)
    fig.update_yaxes(title_text=_("bytes"), range=[0, table["bytes"].max() * 1.15], row=2, col=1)
    fig.update_xaxes(title_text=_("step"), row=2, col=1)
    fig.update_layout(height=560, margin=dict(l=10, r=10, t=40, b=10), legend=dict(orientation="h", y=-0.12))
    return fig


def cache_shapes_table(tr: Trace, step_index: int, *, _: Gettext = untranslated) -> pa.Table:
    """The cache after one step: key/value shapes [batch, kv_heads, seq, head_dim] per layer and kind."""
    step = tr.steps[step_index]
    prev = {(c.layer, c.kind): c for c in tr.steps[step_index - 1].cache} if step_index > 0 else {}
    rows = []
    for c in step.cache:
        before = prev.get((c.layer, c.kind))
        rows.append(
            {
                "layer": c.layer,
                "kind": c.kind,
                "key shape": shape_text(c.key_shape),
                "value shape": shape_text(c.value_shape),
                "seq_len": c.seq_len,
                "positions seen": c.positions_seen,
                "grew by": c.seq_len - before.seq_len if before is not None else c.seq_len,
                "memory": human_bytes(c.nbytes),
            }
        )
    columns = [
        N_("layer"),
        N_("kind"),
        N_("key shape"),
        N_("value shape"),
        N_("seq_len"),
        N_("positions seen"),
        N_("grew by"),
        N_("memory"),
    ]
    return table(rows, columns, _)


def cache_on_off_table(tr: Trace, other: Trace | None = None, *, _: Gettext = untranslated) -> pd.DataFrame:
    """Tokens fed to the decoder per step with the cache on (1 after the prefill) and off (all so far).

    This trace's own column is what it recorded; the other setting's column is what that
    setting feeds (computed), or what `other` (the same run with the other setting) recorded.
    """
    use_cache = bool(tr.settings.get("use_cache", True))
    start = len(tr.start_ids)
    rows = []
    other_steps = other.steps if other is not None else []
    for step in tr.steps:
        recorded = fed_count(step)
        computed_on = start if step.index == 0 else 1
        computed_off = start + step.index
        if step.index < len(other_steps):
            other_fed = fed_count(other_steps[step.index])
        else:
            other_fed = computed_off if use_cache else computed_on
        on, off = (recorded, other_fed) if use_cache else (other_fed, recorded)
        rows.append({"step": step.index, "cache on": on, "cache off": off})
    counts = pd.DataFrame(rows, columns=[N_("step"), N_("cache on"), N_("cache off")])
    counts[N_("cache on, total")] = counts["cache on"].cumsum()
    counts[N_("cache off, total")] = counts["cache off"].cumsum()
    return counts.rename(columns=_)


def cache_on_off_figure(tr: Trace, other: Trace | None = None, *, _: Gettext = untranslated) -> go.Figure:
    """Tokens fed per step and in total, cache on vs off."""
    table = cache_on_off_table(tr, other)  # English columns: the names below are shown through _
    # One chart above the other: side by side, they ran into each other on a phone.
    fig = make_subplots(
        rows=2,
        cols=1,
        subplot_titles=(_("tokens fed per step"), _("tokens fed in total")),
        shared_xaxes=True,  # one step axis, labelled once under the lower chart
        vertical_spacing=0.18,
    )
    colors = {"cache on": "#1c7ed6", "cache off": "#f08c00"}
    for name, color in colors.items():
        fig.add_trace(go.Bar(x=table["step"], y=table[name], name=_(name), marker_color=color), row=1, col=1)
        fig.add_trace(
            go.Scatter(
                x=table["step"],
                y=table[f"{name}, total"],
                name=_(f"{name}, total"),
                mode="lines+markers",
                line=dict(color=color),
                showlegend=False,
            ),
            row=2,
            col=1,
        )
    fig.update_xaxes(title_text=_("step"), row=2, col=1)
    fig.update_yaxes(title_text=_("tokens"))
    fig.update_layout(barmode="group", height=520, margin=dict(l=10, r=10, t=40, b=10))
    return fig


def cache_on_off_summary(tr: Trace, other: Trace | None = None, *, _: Gettext = untranslated) -> str:
    table = cache_on_off_table(tr, other)
    if table.empty:
        return ""
    on, off = int(table["cache on"].sum()), int(table["cache off"].sum())
    side = _("decoder") if tr.encoder_decoder else _("model")
    return _(
        "Over {steps} steps the {side} is fed {on} tokens with the cache on and {off} with it off "
        "({ratio:.1f}×). With the cache, each step after the prefill feeds one token and reads "
        "the rest from the cache; without it, every step feeds the whole sequence again."
    ).format(steps=len(table), side=side, on=on, off=off, ratio=off / max(on, 1))
