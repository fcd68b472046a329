"""Training step: what a model sees when it learns, for one source and target.

Labels and what the decoder is fed (shift_tokens_right for BART, the shift inside the loss for a
Llama), the per-token loss, the attention of the teacher-forced pass, one real Trainer step as a
flow, and teacher forcing (one pass) beside generation (one position per step). Layout only:
the records come from tracer.training, the figures from tracer.plots.training through ui.view;
ui.show_training and ui.show_trainer_step lay out what a file opened in the sidebar shows too.
"""

from __future__ import annotations

import zlib

import streamlit as st

import models
import tracer
from models.corpus import training_examples
from models.tokenizer import unknown_words
from stepwise_app import ui  # one cached model per name for every session, loaded under the trace lock
from tracer.errors import StepwiseInputError
from tracer.plots import training as plots
from tracer.training import default_pairs

_ = ui.gettext()  # this run's language, bound now (format_funcs run later too)

# A source and target each model knows the words of: for the trained models, the first of their
# example prompts (models.EXAMPLES, words of their corpus) with its answer.
DEFAULTS = {
    "tiny-llama": models.EXAMPLES["tiny-llama"][0],
    "tiny-bart": models.EXAMPLES["tiny-bart"][0],
    "random-llama": ("the cat sat on the", "mat ."),
    "random-bart": ("tom saw a big dog in the park .", "a big dog ."),
}
ARCH_DEFAULTS = {"decoder-only": DEFAULTS["random-llama"], "encoder-decoder": DEFAULTS["random-bart"]}


def default_example(name: str, tok, encoder_decoder: bool) -> tuple[str, str]:
    """The source and target the page opens with: the sidebar's prompt when the app has one.

    Its target is the known answer of an example prompt, else what the session's trace of that
    prompt generated, else the model's own default target.
    """
    arch = "encoder-decoder" if encoder_decoder else "decoder-only"
    source, target = DEFAULTS.get(name, ARCH_DEFAULTS[arch])
    prompt = st.session_state.get("prompt", "").strip()
    if not prompt or prompt == source:
        return source, target
    answers = {p: a for p, a in models.EXAMPLES.get(name, []) if a}
    if prompt in answers:
        return prompt, answers[prompt]
    _, tr = ui.current()
    if tr is not None and tr.model_name == name and tr.prompt_text == prompt and tr.generated_ids:
        special = set(getattr(tok, "all_special_ids", []))
        return prompt, " ".join(tr.token_text(i) for i in tr.generated_ids if i not in special)
    return prompt, target


# st.cache_resource, not st.cache_data: every rerun (and session) gets the same record object, which
# ui.view keys its figures by; st.cache_data would hand out a fresh copy each time. The records
# are frozen, with read-only arrays, so sharing them is safe.
@st.cache_resource(show_spinner=False, max_entries=32)
def teacher_forced(name: str, source: str, target: str | None, pad_to: int | None) -> tracer.TrainingTrace:
    # The spinners are shown by the callers, in the session's language (a cached function has none).
    model, tok = ui.load_model(name)
    return tracer.trace_training_step(model, tok, source, target, pad_to=pad_to, model_name=name)


@st.cache_resource(show_spinner=False, max_entries=32)
def generated(name: str, source: str, max_new_tokens: int) -> tracer.Trace:
    model, tok = ui.load_model(name)
    return tracer.trace_generation(model, tok, source, max_new_tokens=max_new_tokens, model_name=name)


@st.cache_resource(show_spinner=False, max_entries=8)
def trainer_step(name: str, pairs: tuple[tuple[str, str | None], ...], max_grad_norm: float):
    model, tok = ui.load_model(name)
    return tracer.trace_trainer_step(model, tok, list(pairs), max_grad_norm=max_grad_norm, model_name=name)


def second_example(name: str, model, source: str) -> list[tuple[str, str]]:
    """A second, different example for the batch, so it shows padding (labels padded with -100)."""
    try:
        candidates = [(ex.prompt, ex.answer) for ex in training_examples(name, 4)]  # the model's own data
    except ValueError:
        candidates = default_pairs(model)
    return [p for p in candidates if p[0] != source][:1]


def choose_model() -> str | None:
    """The model the app's sidebar picked; on its own, the page asks."""
    shared = st.session_state.get("model")  # set by ui.sidebar() when the page runs inside the app
    if shared:
        if shared == ui.LOCAL_FOLDER:
            shared = st.session_state.get("folder", "").strip()
            if not shared:
                st.info(_("Type the checkpoint folder in the sidebar."))
                return None
        st.caption(_("Model: **{model}**, picked in the sidebar.").format(model=shared))
        return shared
    return st.selectbox(_("Model"), models.available(), key="training_model")


st.title(_("Training step"))
st.caption(
    _(
        "What the model sees when it learns: the labels, what the decoder is fed, the loss of every "
        "position, and what `Trainer.train()` does in one step."
    )
)

if ui.show_opened_training():  # a file opened in the sidebar, until it is closed
    st.stop()
name = choose_model()
if name is None:
    st.stop()
try:
    model, tok = ui.load_model(name)
except (models.ModelLoadError, OSError, ValueError) as exc:
    st.error(_("Cannot load {name}: {error}").format(name=name, error=ui.error_text(exc)))
    st.stop()
encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
default_source, default_target = default_example(name, tok, encoder_decoder)
# A new prompt in the sidebar is a new default here: the inputs are keyed by it.
example_key = name
if default_source != DEFAULTS.get(name, ("",))[0]:
    example_key = f"{name}-{zlib.crc32(default_source.encode())}"

left, right = st.columns(2)
if encoder_decoder:
    source = left.text_input(_("Source (the encoder reads it)"), default_source, key=f"source-{example_key}")
    target = right.text_input(
        _("Target (the decoder learns it)"), default_target, key=f"target-{example_key}"
    )
    mask_prompt = True
else:
    source = left.text_input(_("Prompt"), default_source, key=f"source-{example_key}")
    target = right.text_input(
        _("Answer (the answer starts here)"), default_target, key=f"target-{example_key}"
    )
    mask_prompt = st.checkbox(
        _("Learn only the answer (prompt positions get -100)"), value=True, key=f"mask-{name}"
    )
pad_to = st.number_input(
    _("Pad the labels to this many positions, as a batch would (0: no padding)"),
    min_value=0,
    max_value=512,
    value=0,
    step=1,
    key=f"pad-{name}",
)

unknown = [w for text in (source, target) for w in unknown_words(tok, text)]
if unknown:
    words = ", ".join(dict.fromkeys(unknown))
    st.warning(_("Not in {name}'s vocabulary (read as <unk>): {words}").format(name=name, words=words))

if not mask_prompt:  # the whole text is learned: one string, no boundary
    source, target = f"{source} {target}".strip(), None
try:
    with st.spinner(_("Tracing the teacher-forced pass…")):
        tt = teacher_forced(name, source, target, int(pad_to) or None)
except StepwiseInputError as exc:
    st.error(ui.error_text(exc))
    st.stop()

trainer_tab, generation_tab = ui.show_training(
    tt, more=(_("Trainer step"), _("Teacher forcing vs generation"))
)

with trainer_tab:
    st.markdown(
        _(
            "One real `transformers.Trainer` step (max_steps=1, linear schedule, AdamW) on a copy of the "
            "model, with this example and a second one in the batch. Recorded through a `TrainerCallback`, "
            "optimizer step hooks and gradient hooks; the model on the other pages is not changed."
        )
    )
    max_grad_norm = st.number_input(
        "max_grad_norm", min_value=0.01, max_value=100.0, value=1.0, step=0.5, key="training-max-grad-norm"
    )
    if st.button(_("Run one Trainer step"), key="run-trainer"):
        st.session_state["trainer-request"] = (name, source, target, float(max_grad_norm))
    request = st.session_state.get("trainer-request")
    if request is not None and request == (name, source, target, float(max_grad_norm)):
        pairs = ((source, target), *second_example(name, model, source))
        try:
            with st.spinner(_("Running one Trainer step on a copy of the model…")):
                ts = trainer_step(name, pairs, float(max_grad_norm))
        except StepwiseInputError as exc:
            st.error(ui.error_text(exc))
        else:
            ui.show_trainer_step(ts)
    else:
        st.info(_("Press the button to run a real Trainer step (a few seconds the first time)."))

with generation_tab:
    scored = int((~tt.ignored).sum())
    if target is None:
        st.info(_("Mark where the answer starts (tick 'Learn only the answer') to compare with generation."))
    else:
        st.markdown(
            _(
                "Teacher forcing computes every position in **one pass**, each fed the *true* previous "
                "token. Generation computes **one position per step**, each fed the model's *own* previous "
                "choice; where they differ, generation has drifted from the target."
            )
        )
        try:
            with st.spinner(_("Generating, one position per step…")):
                gen = generated(name, tt.source_text, scored)
        except StepwiseInputError as exc:
            st.error(ui.error_text(exc))
        else:
            st.plotly_chart(
                ui.view(plots.teacher_vs_generation_figure, gen, record=tt),
                config={"displayModeBar": False},
                key="tf-vs-gen",
            )
            st.dataframe(ui.view(plots.teacher_vs_generation, gen, record=tt), hide_index=True)
