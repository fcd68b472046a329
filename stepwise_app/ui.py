"""Streamlit glue shared by app.py and the pages: the sidebar, the shared model, the current trace.

- `load_model(name)`: one model per name for every browser session (st.cache_resource).
- `run_trace(...)`: trace one prompt on the shared model; the tracer serialises traces on one
  model (tracer.record's lock), so two sessions tracing at once each get their own records.
- The current trace lives in st.session_state under a random id; figures are built through
  `view(builder, *args)`, cached by (builder, trace id, args), so moving to another step only
  builds what that step shows, once.
- `sidebar()`: model, prompt, settings, Run; download and upload of trace files.
- `step_picker`, `choice`: widgets whose value survives page changes and new traces.

Bad input never reaches the user as a traceback: every failure becomes one st.error that says
what is wrong and what to do.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import streamlit as st

import models
import tracer
from models.tokenizer import unknown_words
from tracer.plots import generation
from tracer.record import TRACE_LOCK

LOCAL_FOLDER = "Local checkpoint folder…"
# Decoding choices: the model's own generation_config (as generate() runs it), or one forced.
MODEL_DECODING, GREEDY, SAMPLING = "model's own", "greedy", "sampling"
MAX_NEW_TOKENS = 64
KEEP_TRACES = 4  # per session: the current one and a few earlier ones (cache on vs off)

# Example prompts per model (models.EXAMPLES: the shipped models were trained on these kinds of text).
EXAMPLES: dict[str, list[str]] = {
    name: [prompt for prompt, _ in pairs] for name, pairs in models.EXAMPLES.items()
}
GENERIC_EXAMPLES = ["the cat sat on the mat"]


# ---------------------------------------------------------------------------------------------
# The model and the trace run


@st.cache_resource(show_spinner=False, max_entries=4)
def load_model(name: str):
    """(model, tokenizer), loaded once and shared by every session. Raises models.ModelLoadError."""
    # Building a random model reseeds torch's one global RNG (inside fork_rng); done while another
    # session samples, it would change that session's seeded draws. Traces hold this lock, so a
    # load waits for the running trace and a trace waits for the load.
    with TRACE_LOCK:
        return models.load(name)


def run_trace(
    model_name: str,
    prompt: str,
    *,
    max_new_tokens: int = 8,
    use_cache: bool = True,
    do_sample: bool | None = None,
    temperature: float | None = None,
    seed: int | None = None,
    feed_embeddings: bool = False,
    progress: Callable[[int], None] | None = None,
) -> tracer.Trace:
    """Trace `prompt` on the shared model `model_name`. Safe to call from several sessions at once.

    `do_sample` None keeps the model's own decoding (its generation_config); True or False picks
    sampling or greedy search (with num_beams=1, over a checkpoint's beams).
    """
    model, tok = load_model(model_name)
    forced = {} if do_sample is None else {"do_sample": do_sample, "num_beams": 1}
    return tracer.trace_generation(
        model,
        tok,
        prompt,
        max_new_tokens=max_new_tokens,
        use_cache=use_cache,
        temperature=temperature,
        seed=seed,
        feed_embeddings=feed_embeddings,
        model_name=Path(model_name).name if model_name not in models.available() else model_name,
        progress=progress,
        **forced,
    )


def default_model() -> str:
    """tiny-llama when it is shipped, else random-llama (a decoder-only model is the simpler first sight)."""
    names = models.available()
    return next((name for name in ("tiny-llama", "random-llama") if name in names), names[0])


# ---------------------------------------------------------------------------------------------
# The current trace


def set_trace(tr: tracer.Trace) -> str:
    """Make `tr` the session's current trace under a fresh id; keep a few earlier ones."""
    traces: dict[str, tracer.Trace] = st.session_state.setdefault("traces", {})
    trace_id = uuid.uuid4().hex[:12]
    traces[trace_id] = tr
    while len(traces) > KEEP_TRACES:
        traces.pop(next(iter(traces)))
    st.session_state["trace_id"] = trace_id
    st.session_state["step"] = 0
    return trace_id


def current() -> tuple[str | None, tracer.Trace | None]:
    trace_id = st.session_state.get("trace_id")
    tr = st.session_state.get("traces", {}).get(trace_id)
    return (trace_id, tr) if tr is not None else (None, None)


def require_trace() -> tracer.Trace:
    """The current trace; without one, say how to get one and stop the page."""
    _, tr = current()
    if tr is None:
        st.info(
            "No trace yet. Pick a model and a prompt in the sidebar and press **Run trace**, "
            "or open a saved trace file under **Trace file**."
        )
        st.stop()
    return tr


def counterpart(tr: tracer.Trace) -> tracer.Trace | None:
    """An earlier trace of this session with the same run but the other cache setting, if any."""

    def run_of(t: tracer.Trace) -> tuple:
        s = t.settings
        return (t.model_name, t.prompt_ids, s.get("max_new_tokens"), s.get("do_sample"), s.get("seed"))

    use_cache = bool(tr.settings.get("use_cache", True))
    for other in st.session_state.get("traces", {}).values():
        if run_of(other) == run_of(tr) and bool(other.settings.get("use_cache", True)) != use_cache:
            return other
    return None


@st.cache_data(max_entries=4096, show_spinner=False)
def _build(name: str, trace_id: str, args: tuple, other_id: str | None, _tr, _other) -> Any:
    # Keyed by the trace's id (unique per run or upload), never by its content: hashing a
    # trace's arrays on every redraw would cost more than building the figure.
    builder = getattr(generation, name)
    return builder(_tr, *args) if other_id is None else builder(_tr, *args, other=_other)


def view(builder: Callable, *args, other: tracer.Trace | None = None) -> Any:
    """`builder(current trace, *args)` from tracer.plots.generation, cached per trace and arguments."""
    trace_id, tr = current()
    other_id = None
    if other is not None:
        other_id = next((i for i, t in st.session_state["traces"].items() if t is other), None)
    return _build(builder.__name__, trace_id, tuple(args), other_id, tr, other)


def show_trace_error(tr: tracer.Trace) -> None:
    if tr.error is not None:
        st.error(
            f"The model raised at step {tr.error.step}: {tr.error}. "
            f"The {tr.error.step} step(s) before it are complete; the failing step shows its calls up "
            "to the failure.",
            icon="⚠️",
        )


# ---------------------------------------------------------------------------------------------
# Widgets that keep their value across pages


def _copy_widget(key: str) -> None:
    st.session_state[key] = st.session_state[f"_w_{key}"]


def choice(widget, label: str, options: list, key: str, **kwargs) -> Any:
    """`widget(label, options)` whose choice survives page changes; the first option if it vanished."""
    value = st.session_state.get(key)
    if value not in options:
        value = options[0]
    st.session_state[key] = value
    st.session_state[f"_w_{key}"] = value  # set before the widget exists: no value= needed
    widget(label, options, key=f"_w_{key}", on_change=_copy_widget, args=(key,), **kwargs)
    return st.session_state[key]


def _move_step(delta: int, last: int) -> None:
    st.session_state["step"] = min(max(st.session_state.get("step", 0) + delta, 0), last)


def step_picker(tr: tracer.Trace) -> int:
    """A step slider with previous/next buttons; the chosen step is shared by every page."""
    last = len(tr.steps) - 1
    step = min(max(int(st.session_state.get("step", 0)), 0), max(last, 0))
    st.session_state["step"] = step
    if last <= 0:
        st.caption("Step 0, the only step of this trace.")
        return 0
    prev_col, slider_col, next_col = st.columns([1, 10, 1], vertical_alignment="bottom")
    prev_col.button("◀ Prev", on_click=_move_step, args=(-1, last), disabled=step == 0, key="prev_step")
    next_col.button("Next ▶", on_click=_move_step, args=(1, last), disabled=step == last, key="next_step")
    st.session_state["_w_step"] = step
    with slider_col:
        st.slider("Step", 0, last, key="_w_step", on_change=_copy_widget, args=("step",))
    return step


# ---------------------------------------------------------------------------------------------
# The sidebar


def _examples(model: str) -> list[str]:
    return EXAMPLES.get(model, GENERIC_EXAMPLES)


def _on_model_change() -> None:
    st.session_state["prompt"] = _examples(st.session_state["model"])[0]


def _on_example() -> None:
    st.session_state["prompt"] = st.session_state["example"]


def _say(kind: str, text: str) -> None:
    """Remember a message for the sidebar until the next action (a rerun would lose it)."""
    st.session_state["message"] = (kind, text)


def sidebar() -> None:
    """Model, prompt and settings, the Run button, and the trace file (download, upload)."""
    options = [*models.available(), LOCAL_FOLDER]
    if st.session_state.get("model") not in options:
        st.session_state["model"] = default_model()
        st.session_state["prompt"] = _examples(st.session_state["model"])[0]
    with st.sidebar:
        st.title("Stepwise")
        st.caption("Watch a transformer generate, one step at a time.")
        model = st.selectbox("Model", options, key="model", on_change=_on_model_change)
        folder = ""
        if model == LOCAL_FOLDER:
            folder = st.text_input(
                "Checkpoint folder", key="folder", placeholder="/path/to/a/llama-or-bart-checkpoint"
            )
        st.selectbox(
            "Example prompts",
            _examples(model),
            key="example",
            on_change=_on_example,
            index=None,
            placeholder="Pick an example…",
        )
        st.text_area("Prompt", key="prompt", height=90)
        max_new = st.slider("Max new tokens", 1, MAX_NEW_TOKENS, 8, key="max_new_tokens")
        use_cache = st.toggle("Use the KV cache", value=True, key="use_cache")
        decoding = st.radio(
            "Decoding",
            [MODEL_DECODING, GREEDY, SAMPLING],
            horizontal=True,
            key="decoding",
            help="model's own: the checkpoint's generation_config, as generate() uses it",
        )
        temperature, seed = None, None
        if decoding == SAMPLING:
            temperature = st.slider("Temperature", 0.1, 2.0, 1.0, 0.1, key="temperature")
            seed = int(st.number_input("Seed", 0, 2**31 - 1, 0, key="seed"))
        feed_embeddings = st.toggle(
            "Feed the prompt as embeddings",
            value=False,
            key="feed_embeddings",
            help="step 0 feeds inputs_embeds [1, P, hidden], later steps input_ids [1, 1]",
        )
        if st.button("Run trace", type="primary", key="run", width="stretch"):
            name = folder.strip() if model == LOCAL_FOLDER else model
            _run(
                name,
                st.session_state.get("prompt", ""),
                max_new,
                use_cache,
                None if decoding == MODEL_DECODING else decoding == SAMPLING,
                temperature,
                seed,
                feed_embeddings,
            )
        message = st.session_state.get("message")
        if message:
            kind, text = message
            (st.error if kind == "error" else st.warning if kind == "warning" else st.success)(text)
        _trace_file()


def _run(
    name: str,
    prompt: str,
    max_new: int,
    use_cache: bool,
    do_sample: bool | None,
    temperature,
    seed,
    feed_embeddings: bool = False,
) -> None:
    st.session_state.pop("message", None)
    if not name:
        _say("error", "Type the path of a local checkpoint folder (it holds config.json and *.safetensors).")
        return
    if not prompt.strip():
        _say("error", "The prompt is empty: type a few words for the model to continue.")
        return
    bar = st.progress(0.0, text=f"Loading {name}…")
    try:
        _, tok = load_model(name)
        unknown = unknown_words(tok, prompt)
        bar.progress(0.0, text="Tracing step 0…")

        def progress(done: int) -> None:
            bar.progress(min(done / max_new, 1.0), text=f"Traced {done} of up to {max_new} steps")

        tr = run_trace(
            name,
            prompt,
            max_new_tokens=max_new,
            use_cache=use_cache,
            do_sample=do_sample,
            temperature=temperature,
            seed=seed,
            feed_embeddings=feed_embeddings,
            progress=progress,
        )
    except (models.ModelLoadError, tracer.StepwiseInputError) as exc:  # TracingNotSupported too
        _say("error", str(exc))
        return
    except Exception as exc:  # anything else: still one clear message, never a traceback
        _say("error", f"Tracing failed: {type(exc).__name__}: {exc}")
        return
    finally:
        bar.empty()
    set_trace(tr)
    if unknown:
        words = ", ".join(f"'{w}'" for w in unknown)
        _say("warning", f"Not in {name}'s vocabulary, so traced as <unk>: {words}.")
    elif tr.error is not None:
        _say("warning", f"The model raised at step {tr.error.step}; the steps before it are kept.")
    else:
        _say("success", f"Traced {len(tr.steps)} steps.")


@st.cache_resource(max_entries=8, show_spinner=False)
def _trace_bytes(trace_id: str, _tr: tracer.Trace) -> bytes:
    return _tr.to_bytes()


def _trace_file() -> None:
    with st.expander("Trace file", expanded=current()[1] is None):
        trace_id, tr = current()
        if tr is not None:
            st.download_button(
                "Download this trace",
                data=lambda: _trace_bytes(trace_id, tr),  # built only when clicked
                file_name=f"{tr.model_name}-{trace_id}.trace",
                mime="application/octet-stream",
                on_click="ignore",
                key="download",
            )
        uploaded = st.file_uploader("Open a saved trace (no model needed)", key="upload")
        if uploaded is not None and st.session_state.get("uploaded_id") != uploaded.file_id:
            st.session_state["uploaded_id"] = uploaded.file_id  # read each upload once
            try:
                tr = tracer.trace_from_bytes(uploaded.getvalue(), source=uploaded.name)
            except tracer.TraceFileError as exc:
                _say("error", str(exc))
                st.rerun()  # show it where the sidebar shows messages
            set_trace(tr)
            _say("success", f"Opened {uploaded.name}: {len(tr.steps)} steps of {tr.model_name}.")
            st.rerun()  # redraw the page with the new trace
