"""The lesson: seven chapters of short slides built from real runs, in the lesson notes' order.

A slide is one idea, one figure or table from a trace (built by tracer.plots), what to notice,
and where it fits a question whose answer is computed from the trace, never written by hand.
Plain Python: the Lesson page lays the slides out. Text goes through the caller's gettext `_`
(tracer.i18n), so one build serves one language; code names stay as code.

`build_lesson(_, runs)` takes the runs the page made (the class's generation trace, a BART trace,
cache-doctor reports, a training trace and a Trainer step); a chapter whose run is missing gets
one slide that says so.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tracer.doctor import CacheReport
from tracer.i18n import N_, Gettext
from tracer.plots import doctor as doctor_plots
from tracer.plots import generation as gen_plots
from tracer.plots import training as training_plots
from tracer.plots.common import Html, shape_text, token_label
from tracer.trace import Trace
from tracer.training import TrainerStepTrace, TrainingTrace

# (key, title) in the order the notes teach them; the key goes in links (?chapter=cache).
CHAPTERS: list[tuple[str, str]] = [
    ("loop", N_("The generation loop")),
    ("cache", N_("The KV cache")),
    ("attention", N_("Attention")),
    ("bart", N_("BART: encoder and decoder")),
    ("doctor", N_("When the cache breaks")),
    ("training", N_("Training")),
    ("trainer", N_("One Trainer step")),
]
PHASES = {"prefill": N_("prefill"), "decode": N_("decode")}


@dataclass(frozen=True)
class Question:
    text: str
    answer: str  # computed from the trace
    value: Any = None  # the raw answer, for tests
    figure_shows_answer: bool = False  # the page shows the figure only once the answer is revealed


@dataclass(frozen=True)
class Slide:
    chapter: str
    title: str
    idea: str
    figure: Any  # plotly Figure, a table (Arrow or pandas), Html or None
    notice: str
    question: Question | None = None
    version_note: str | None = None  # where transformers 4.x (and the notes) differ


@dataclass
class Runs:
    """What the lesson is built from; the page makes these on the shipped models."""

    generation: Trace | None = None  # the class's model and prompt
    bart: Trace | None = None
    doctor: dict[str, CacheReport] = field(default_factory=dict)  # variant -> report (side inputs)
    training: TrainingTrace | None = None
    trainer: TrainerStepTrace | None = None


def _titled(fig, title: str):
    """The builder's figure with a translated title (the builders' own titles are English)."""
    if isinstance(fig, Html):
        return Html(f"<p><b>{html.escape(title)}</b></p>{fig}")
    if hasattr(fig, "update_layout"):
        # Room above the plot for the title, whatever top margin the builder left (some leave 20 px)
        top = max(fig.layout.margin.t or 0, 50)
        fig.update_layout(
            title=dict(text=title, y=1, yanchor="top", yref="container", pad_t=10), margin_t=top
        )
    return fig


def loop_slides(_: Gettext, tr: Trace) -> list[Slide]:
    last = len(tr.steps) - 1
    decode = next((s for s in tr.steps if s.phase == "decode"), None)
    return [
        Slide(
            "loop",
            _("One step, in call order"),
            _(
                "generate() calls prepare_inputs_for_generation, then the model's forward: the "
                "decoder layers (attention + MLP), lm_head, then it chooses a token, appends it and "
                "goes again."
            ),
            _titled(gen_plots.call_flow_html(tr, 0, _=_), _("Step 0: the calls in order")),
            _("Every step repeats the same calls; only what is fed changes."),
            Question(
                _("How many steps (forward passes) did this run take?"),
                str(len(tr.steps)),
                len(tr.steps),
            ),
        ),
        Slide(
            "loop",
            _("Prefill, then decode"),
            _("Step 0 (prefill) reads the whole prompt; every later step (decode) reads one new token."),
            gen_plots.steps_table(tr, _=_),
            _("The chosen token of each step is appended and fed to the next one."),
            Question(
                _("In which phase is the last step?"),
                _(PHASES[tr.steps[last].phase]),
                tr.steps[last].phase,
            )
            if decode is not None
            else None,
            _(
                "transformers 5.x: with logits_to_keep=1, lm_head sees only the newest position "
                "even at prefill; the 4.x notes show full-length logits [1, P, vocab] at step 0."
            ),
        ),
    ]


def cache_slides(_: Gettext, tr: Trace) -> list[Slide]:
    slides = []
    k = min(3, len(tr.steps) - 1)
    fed = tr.steps[k].fed_shape
    name = "decoder_input_ids" if tr.arch == "encoder-decoder" else "input_ids"
    slides.append(
        Slide(
            "cache",
            _("What is fed each step"),
            _("With the cache, only the new token is fed after prefill; position_ids say where it sits."),
            gen_plots.prepare_inputs_table(tr, k, _=_),
            _("Compare step 0 (the whole prompt) with a decode step (one token)."),
            Question(
                _("What shape will {name} have at step {step}?").format(name=name, step=k),
                shape_text(fed) if fed is not None else _("not recorded"),
                fed,
            ),
            _(
                "transformers 5.x: there is no cache_position, and step 0 gets an empty cache "
                "object, not None as in the 4.x notes."
            ),
        )
    )
    seq = tr.steps[-1].cache_seq_len("self")
    slides.append(
        Slide(
            "cache",
            _("past_key_values grows per layer"),
            _("Each layer keeps the keys and values of every position it has seen."),
            _titled(gen_plots.cache_growth_figure(tr, _=_), _("Cache length after each step")),
            _("The last chosen token is never fed, so the cache holds one position less than the text."),
            Question(
                _("How many positions will layer 0's cache hold after the last step?"),
                str(seq) if seq is not None else _("none: the cache is off"),
                seq,
            ),
        )
    )
    slides.append(
        Slide(
            "cache",
            _("The cost with and without the cache"),
            _("Without the cache every step feeds the whole text again."),
            _titled(gen_plots.cache_on_off_figure(tr, _=_), _("Tokens fed, cache on vs off")),
            _("Cache on: tokens fed grow linearly; cache off: quadratically."),
        )
    )
    return slides


def attention_slides(_: Gettext, tr: Trace) -> list[Slide]:
    last = len(tr.steps) - 1
    weights = tr.steps[last].attention("self", 0)  # [heads, q, k]
    question = None
    if weights is not None:
        row = np.asarray(weights[0, -1], dtype=np.float64)  # head 0, the newest query: [k]
        top = int(np.argmax(row))
        ids = tr.sequence_ids
        token = token_label(tr, ids[top]) if top < len(ids) else str(top)
        question = Question(
            _("Layer 0, head 0, step {step}: which position will the newest token look at most?").format(
                step=last
            ),
            _("position {pos} ({token}), weight {weight:.2f}").format(pos=top, token=token, weight=row[top]),
            top,
        )
    layers = gen_plots.kind_layers(tr, "self")
    return [
        Slide(
            "attention",
            _("One head"),
            _("Each row is a query; it spreads a weight of 1 over the keys before it (causal)."),
            _titled(
                gen_plots.attention_figure(tr, last, "self", 0, 0, _=_),
                _("Self-attention, layer 0, head 0, step {step}").format(step=last),
            ),
            _("With the cache, a decode step has one query row and every earlier key."),
            question,
        ),
        Slide(
            "attention",
            _("All heads, and the induction pattern"),
            _("Heads of one layer look at different things; a trained model learns to copy."),
            _titled(
                gen_plots.attention_heads_figure(tr, last, "self", layers - 1, _=_),
                _("Every head of layer {layer}").format(layer=layers - 1),
            ),
            _(
                "tiny-llama learned an induction head: a token looks at what followed the same "
                "token earlier in the prompt, and copies it."
            ),
        ),
    ]


def _aligned_cross_step(tr: Trace) -> tuple[int, int, int] | None:
    """(step, head, source position) where layer 0's cross-attention is most sure of one source
    word: the step whose output copies that word's meaning (tiny-bart: "march" -> "03")."""
    special = {tr.settings.get(k) for k in ("bos_token_id", "pad_token_id")} | set(tr.eos_token_ids)
    words = [p for p, token_id in enumerate(tr.prompt_ids) if token_id not in special]
    best = None
    for step in tr.steps if words else []:
        if not step.has_attention("cross", 0) or step.chosen_id is None or step.chosen_id in special:
            continue
        cross = step.attention("cross", 0)  # [heads, q, src]
        row = np.asarray(cross[:, -1], dtype=np.float64)  # [heads, src]: the step's newest query
        mean = row.mean(axis=0)[words]
        top = words[int(np.argmax(mean))]
        if best is None or mean.max() > best[0]:
            best = (float(mean.max()), step.index, int(np.argmax(row[:, top])), top)
    return None if best is None else best[1:]


def bart_slides(_: Gettext, tr: Trace) -> list[Slide]:
    encoder_steps = [s.index for s in tr.steps if any(e.name == "encoder" for e in s.events)]
    aligned = _aligned_cross_step(tr)
    question, cross_figure = None, None
    if aligned is not None:
        step, head, top = aligned
        question = Question(
            _(
                "At step {step} the decoder writes {token}. Which source token will it look at most "
                "(cross-attention, layer 0, mean over heads)?"
            ).format(step=step, token=token_label(tr, tr.steps[step].chosen_id)),
            _("position {pos} ({token})").format(pos=top, token=token_label(tr, tr.prompt_ids[top])),
            top,
            figure_shows_answer=True,
        )
        cross_figure = _titled(
            gen_plots.stitched_attention_figure(tr, "cross", 0, head, highlight_step=step, _=_),
            _("Cross-attention over the whole run, layer 0, head {head} (step {step} outlined)").format(
                head=head, step=step
            ),
        )
    return [
        Slide(
            "bart",
            _("The encoder runs once"),
            _("BART reads the source once, before the first decoder step; every step reuses it."),
            _titled(
                gen_plots.attention_figure(tr, 0, "encoder", 0, 0, _=_),
                _("Encoder self-attention, layer 0, head 0"),
            ),
            _("Encoder attention is not causal: every source token sees every other."),
            Question(
                _("In which steps does the encoder run?"),
                ", ".join(str(i) for i in encoder_steps),
                encoder_steps,
            ),
        ),
        Slide(
            "bart",
            _("Self-attention vs cross-attention"),
            _(
                "Decoder self-attention is causal over the target; cross-attention takes queries from "
                "the decoder and keys and values projected from the encoder output."
            ),
            cross_figure,
            _("The cross-attention cache is filled once and never grows."),
            question,
        ),
        Slide(
            "bart",
            _("lm_head + final_logits_bias"),
            _("BART adds final_logits_bias to lm_head's output; then a token is chosen."),
            _titled(gen_plots.topk_figure(tr, 0, _=_), _("Step 0: the most likely tokens")),
            _("The chosen token is the tallest bar under greedy decoding."),
            Question(
                _("Which token will step 0 choose?"),
                token_label(tr, tr.steps[0].chosen_id),
                tr.steps[0].chosen_id,
            ),
        ),
    ]


VARIANT_TITLES = {
    "broken": N_("The bug: side inputs on every step"),
    "tempting": N_("The tempting fix"),
    "fixed": N_("The real fix"),
}
VARIANT_NOTICE = {
    "broken": N_("Passing bbox/pixel_values on every step with the cache on breaks the decode steps."),
    "tempting": N_("It no longer crashes, but the cached run silently differs from the uncached one."),
    "fixed": N_("Pass side inputs at prefill only: cached and uncached runs agree."),
}


def doctor_slides(_: Gettext, reports: dict[str, CacheReport]) -> list[Slide]:
    slides = []
    for variant in ("broken", "tempting", "fixed"):
        report = reports.get(variant)
        if report is None:
            continue
        step = report.first_divergent_step
        slides.append(
            Slide(
                "doctor",
                _(VARIANT_TITLES[variant]),
                _("The doctor runs generate() with the cache on and off and compares every step."),
                _titled(doctor_plots.logit_diff_figure(report, _=_), _("Logit difference, cache on vs off")),
                _(VARIANT_NOTICE[variant]),
                Question(
                    _("At which step will the cached run first differ or fail?"),
                    str(step) if step is not None else _("none: the runs agree"),
                    step,
                ),
            )
        )
    return slides


def training_slides(_: Gettext, tt: TrainingTrace) -> list[Slide]:
    loss = np.where(tt.ignored, -np.inf, tt.per_token_loss)
    worst = int(np.argmax(loss))
    slides = [
        Slide(
            "training",
            _("Labels and shift_tokens_right"),
            _(
                "In training the decoder is fed the labels shifted right by one (teacher forcing); "
                "-100 marks positions left out of the loss."
            ),
            _titled(
                training_plots.shift_figure(tt, _=_),
                _("What is fed, and what each position is scored against"),
            ),
            _("All positions are computed in one pass; generation makes one position per step."),
        ),
        Slide(
            "training",
            _("The per-token loss"),
            _("The loss is the mean cross-entropy over the positions that are not -100."),
            _titled(training_plots.loss_figure(tt, _=_), _("Loss per position")),
            _("Grey positions are ignored (-100)."),
            Question(
                _("Which position will have the highest loss?"),
                _("position {pos} ({token}), loss {loss:.2f}").format(
                    pos=worst,
                    token=token_label(tt, tt.scored_labels[worst]),
                    loss=float(loss[worst]),
                ),
                worst,
            ),
        ),
    ]
    if tt.decoder_input_ids is not None:
        first = tt.decoder_input_ids[0]
        slides[0] = Slide(
            *[getattr(slides[0], f) for f in ("chapter", "title", "idea", "figure", "notice")],
            question=Question(
                _("What will decoder_input_ids start with?"),
                f"{first} ({token_label(tt, first)})",
                first,
            ),
        )
    return slides


def trainer_slides(_: Gettext, ts: TrainerStepTrace) -> list[Slide]:
    names = ts.names
    order = pd.DataFrame({_("event"): names})
    return [
        Slide(
            "trainer",
            _("One Trainer step, in order"),
            _("forward, loss, backward, gradient clipping, optimizer step, scheduler step, zero_grad, log."),
            _titled(training_plots.trainer_flow_figure(ts, _=_), _("What Trainer.train() did in one step")),
            _("The order matters: clip after backward, zero_grad after the optimizer step."),
            Question(_("What loss did this step log?"), f"{ts.loss:.4f}", ts.loss),
        ),
        Slide(
            "trainer",
            _("The events"),
            _("Each row is one thing the Trainer did, as it was seen."),
            order,
            _("Count the events: one step is one pass through this list."),
            Question(_("How many events did the step have?"), str(len(names)), len(names)),
        ),
    ]


def missing_slide(_: Gettext, chapter: str) -> Slide:
    return Slide(
        chapter, _("No run yet"), _("This chapter needs a run that is not available here."), None, ""
    )


def build_lesson(_: Gettext, runs: Runs) -> list[list[Slide]]:
    """The slides of every chapter, in CHAPTERS order, in the language of `_`."""
    built: dict[str, list[Slide]] = {}
    tr = runs.generation
    built["loop"] = loop_slides(_, tr) if tr is not None else []
    built["cache"] = cache_slides(_, tr) if tr is not None else []
    built["attention"] = attention_slides(_, tr) if tr is not None else []
    built["bart"] = bart_slides(_, runs.bart) if runs.bart is not None else []
    built["doctor"] = doctor_slides(_, runs.doctor)
    built["training"] = training_slides(_, runs.training) if runs.training is not None else []
    built["trainer"] = trainer_slides(_, runs.trainer) if runs.trainer is not None else []
    return [built[key] or [missing_slide(_, key)] for key, _title in CHAPTERS]
