"""Streamlit glue shared by app.py and the pages: the sidebar, the shared model, the current trace.

- `load_model(name)`: one model per name for every browser session (st.cache_resource).
- `run_trace(...)`: trace one prompt on the shared model; the tracer serialises traces on one
  model (tracer.record's lock), so two sessions tracing at once each get their own records.
- The current trace lives in st.session_state under a random id; figures are built through
  `view(builder, *args)`, cached by (builder, trace id, args), so moving to another step only
  builds what that step shows, once. `view(builder, *args, record=r)` does the same for any
  other record (a training trace, a Trainer step, a doctor report), keyed by its identity.
- `sidebar()`: model, prompt, Run, then the settings; download and upload of trace files. A file
  holding a training trace or a doctor report opens on the Training step or Cache doctor page
  (`opened`, `show_opened_training`); `download_record` saves one of those from its page.
- `show_training`, `show_trainer_step`: the training views' layout, for the Training step page
  and for a file opened in the sidebar alike.
- `step_picker`, `choice`: widgets whose value survives page changes and new traces.
- `row_picker`: for a batch (or a beam search), the row (hypothesis) the pages show; `view`
  builds on it by default (`shown()`), and the link keeps it (&row=).
- Links: `follow_link()` reads the model, trace and view from the URL's query parameters on a
  session's first run, `update_link()` writes them back; the traces behind links stay in one
  bounded `TraceShelf` for every session, so a reload or a shared link finds them.

Bad input never reaches the user as a traceback: every failure becomes one st.error that says
what is wrong and what to do.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import importlib
import inspect
import threading
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import streamlit as st

import models
import tracer
from models import scenarios
from tracer import i18n
from tracer.i18n import N_
from tracer.records import SavedRecord

LOCAL_FOLDER = N_("Local checkpoint folder…")  # an option value: shown through _
# Decoding choices: the model's own generation_config (as generate() runs it), or one forced.
MODEL_DECODING, GREEDY, SAMPLING, BEAMS = N_("model's own"), N_("greedy"), N_("sampling"), N_("beam search")
# Where a batch's prompts are padded: the tracer's default (left for a decoder-only model, the
# tokenizer's side for an encoder-decoder one), or one forced.
AUTO_SIDE = "auto"
MAX_BEAMS = 8
MAX_NEW_TOKENS = 64
KEEP_TRACES = 4  # per session: the current one and a few earlier ones (cache on vs off)
# Traces behind links (?trace=…), for every session together: the newest are kept.
LINKED_TRACES = 100
LINKED_TRACE_BYTES = 256 * 2**20

# Example prompts per model (models.EXAMPLES: the shipped models were trained on these kinds of text).
EXAMPLES: dict[str, list[str]] = {
    name: [prompt for prompt, _ in pairs] for name, pairs in models.EXAMPLES.items()
}
GENERIC_EXAMPLES = ["the cat sat on the mat"]


# ---------------------------------------------------------------------------------------------
# The model and the trace run


_IMPORT_LOCK = threading.Lock()


def import_the_tracer() -> None:
    """Import torch, transformers and the tracer's parts that use them, one session at a time.

    The first page needs none of them (tracer and models import their parts on first use), so it
    draws in about a second; the first Run, or the cache doctor and training pages, import them
    here. Two sessions importing transformers' lazily loaded modules at once can see one half
    imported ("cannot import name ..."): this lock lets one import and the others wait.
    """
    with _IMPORT_LOCK:
        for module in ("models.tokenizer", "tracer.record", "tracer.generate", "models.random_models"):
            importlib.import_module(module)
        _freeze_the_imports()


@functools.cache  # once: a later call would also freeze what sessions made, their cycles for good
def _freeze_the_imports() -> None:
    """Move every object there is out of the garbage collector's way, for good.

    Python's full collection walks every object there is, and the imports bring about 400,000:
    each took 0.2 s (0.1 to 0.3 s in a class, with every session's thread stopped, several times
    while it stepped). What they made lives as long as the server, so it is frozen once, and the
    collector no longer walks it; what sessions make later is collected as before.
    """
    gc.freeze()


@st.cache_resource(show_spinner=False, max_entries=4)
def load_model(name: str):
    """(model, tokenizer), loaded once and shared by every session. Raises models.ModelLoadError."""
    # Building a random model reseeds torch's one global RNG (inside fork_rng); done while another
    # session samples, it would change that session's seeded draws. Traces hold this lock, so a
    # load waits for the running trace and a trace waits for the load.
    import_the_tracer()
    from tracer.record import TRACE_LOCK

    _one_torch_thread()
    with TRACE_LOCK:
        return models.load(name)


def _one_torch_thread() -> None:
    """Run this session's torch operations on one thread.

    The app's models are small and its sessions are many: split over torch's threads, a tiny-llama
    trace spent its time waiting for the other thread of a busy machine's cores (0.8 s on one thread
    it takes 0.02 s), all of it holding the trace lock the other sessions queue on. The setting
    belongs to the calling thread, and each session runs in its own, so it is set on every call.
    """
    import torch

    torch.set_num_threads(1)


def run_trace(
    model_name: str,
    prompt: str | list[str],
    *,
    max_new_tokens: int = 8,
    use_cache: bool = True,
    do_sample: bool | None = None,
    temperature: float | None = None,
    seed: int | None = None,
    feed_embeddings: bool = False,
    padding_side: str | None = None,
    beams: dict[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
) -> tracer.Trace:
    """Trace `prompt` (a text, or a batch of texts padded on `padding_side`) on the shared model
    `model_name`. Safe to call from several sessions at once.

    `do_sample` None keeps the model's own decoding (its generation_config); True or False picks
    sampling or greedy search (with num_beams=1, over a checkpoint's beams). `beams` runs beam
    search with these settings (num_beams, num_return_sequences, length_penalty, early_stopping).
    """
    model, tok = load_model(model_name)
    _one_torch_thread()
    forced = {} if do_sample is None else {"do_sample": do_sample, "num_beams": 1}
    if beams:
        forced = {"do_sample": False, **beams}
    return tracer.trace_generation(
        model,
        tok,
        prompt,
        padding_side=padding_side,
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


class TraceShelf:
    """The traces links point to, shared by every session: the newest, bounded in number and bytes.

    A link (?trace=<id>) outlives its session: a reload or another browser finds the trace here
    while it is among the newest `max_traces` and they fit in `max_bytes` together.
    """

    def __init__(self, max_traces: int, max_bytes: int) -> None:
        self.max_traces, self.max_bytes = max_traces, max_bytes
        self._traces: OrderedDict[str, tuple[tracer.Trace, int]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def size(tr: tracer.Trace) -> int:
        # The captured arrays, plus a rough allowance for each step's events and shapes.
        return tr.capture.captured_bytes + 2048 * sum(1 + len(s.events) for s in tr.steps)

    def put(self, trace_id: str, tr: tracer.Trace) -> None:
        with self._lock:
            self._traces[trace_id] = (tr, self.size(tr))
            self._traces.move_to_end(trace_id)
            while len(self._traces) > 1 and (
                len(self._traces) > self.max_traces or self.nbytes > self.max_bytes
            ):
                self._traces.popitem(last=False)

    def get(self, trace_id: str) -> tracer.Trace | None:
        with self._lock:
            kept = self._traces.get(trace_id)
            if kept is None:
                return None
            self._traces.move_to_end(trace_id)  # a trace still in use is kept longest
            return kept[0]

    @property
    def nbytes(self) -> int:
        return sum(size for _, size in self._traces.values())

    def __len__(self) -> int:
        return len(self._traces)


@st.cache_resource(show_spinner=False)
def trace_shelf() -> TraceShelf:
    """The one TraceShelf of this server."""
    return TraceShelf(LINKED_TRACES, LINKED_TRACE_BYTES)


def _adopt(trace_id: str, tr: tracer.Trace) -> None:
    traces: dict[str, tracer.Trace] = st.session_state.setdefault("traces", {})
    traces[trace_id] = tr
    while len(traces) > KEEP_TRACES:
        traces.pop(next(iter(traces)))
    st.session_state["trace_id"] = trace_id


def set_trace(tr: tracer.Trace) -> str:
    """Make `tr` the session's current trace under a fresh id; keep a few earlier ones."""
    trace_id = uuid.uuid4().hex[:12]
    trace_shelf().put(trace_id, tr)
    _adopt(trace_id, tr)
    st.session_state["step"] = 0
    st.session_state.pop("row", None)  # a new trace opens on its first row (or best hypothesis)
    return trace_id


def current() -> tuple[str | None, tracer.Trace | None]:
    trace_id = st.session_state.get("trace_id")
    tr = st.session_state.get("traces", {}).get(trace_id)
    return (trace_id, tr) if tr is not None else (None, None)


def shown_row(tr: tracer.Trace) -> int:
    """Which returned sequence of `tr` the pages show: a batch's row or a beam hypothesis (&row=)."""
    row = st.session_state.get("row", 0)
    return min(max(row, 0), tr.num_returned - 1) if isinstance(row, int) else 0


def shown() -> tuple[str | None, tracer.Trace | None]:
    """The current trace as the pages show it: for a batch or a beam search, the row (hypothesis)
    picked, as a trace of its own, keyed apart from the others; else the trace itself."""
    trace_id, tr = current()
    if tr is None or tr.num_returned <= 1:
        return trace_id, tr
    row = shown_row(tr)
    return f"{trace_id}/{row}", tr.returned(row)


def row_picker(tr: tracer.Trace) -> tracer.Trace:
    """Pick the row of a batch (the hypothesis of a beam search) the page shows, and return it as a
    trace of its own; the choice is shared by every page and kept in the link (&row=). A trace of
    one sequence is returned as it is, with no picker."""
    _ = gettext()  # the session's language, read once for all this function's texts
    from tracer.plots import batch

    labels = batch.row_labels(tr, _=i18n.gettext_for(lang()))
    if not labels:
        return tr
    st.session_state["row"] = shown_row(tr)
    label = _("Hypothesis") if tr.beam_result is not None else _("Row of the batch")
    row = choice(st.selectbox, label, list(range(len(labels))), "row", format_func=labels.__getitem__)
    return tr.returned(row)


def require_trace() -> tracer.Trace:
    """The current trace; without one, say how to get one and stop the page."""
    _trace_id, tr = current()
    if tr is None:
        st.info(
            _(
                "No trace yet. Pick a model and a prompt in the sidebar (on a phone: » at the top left) "
                "and press **Run trace**, or open a saved trace file under **Trace file**."
            )
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


class FigureCache:
    """Figures and tables already built, shared by every session: the newest `max_entries`.

    Keyed by the builder, the trace's id (unique per run or upload) and the arguments, never by
    the trace's content: hashing a trace's arrays on every redraw would cost more than building
    the figure. A plain dict behind a lock, because a page asks for half a dozen views on every
    redraw: a hit here costs microseconds, where st.cache_resource spent about a millisecond per
    call on its own bookkeeping, and st.cache_data also pickled every figure. Pages only read what
    is built here, never change it.
    """

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._built: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple, build: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._built:
                self._built.move_to_end(key)
                return self._built[key]
        value = build()  # outside the lock: two sessions may build the same view once each
        with self._lock:
            self._built[key] = value
            while len(self._built) > self.max_entries:
                self._built.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._built)


FIGURES = FigureCache(max_entries=4096)


class RecordIds:
    """A short id for each record object while it lives: what FIGURES keys a record's views by.

    A record's identity, not its content (see FigureCache). The records are frozen, so one object
    always shows the same; a record read again from a file or built again is a new object and
    gets a new id. The id is forgotten when the object is collected, before Python can give its
    id() to another object.
    """

    def __init__(self) -> None:
        self._ids: dict[int, str] = {}  # id(record) -> its short id
        self._lock = threading.Lock()

    def __call__(self, record: Any) -> str:
        with self._lock:
            found = self._ids.get(id(record))
            if found is None:
                found = self._ids[id(record)] = uuid.uuid4().hex[:12]
                weakref.finalize(record, self._ids.pop, id(record), None)
            return found


record_id = RecordIds()


def _key(value: Any) -> Any:
    # A record among a builder's arguments (a generation trace beside a training trace) counts
    # by its identity: hashing a record would hash its arrays, or fail.
    return ("record", record_id(value)) if isinstance(value, SavedRecord) else value


def view(builder: Callable, *args, record: Any = None, other: tracer.Trace | None = None) -> Any:
    """`builder(record, *args)`, any builder of tracer.plots, cached per record and arguments.

    `record` is the session's current generation trace unless given (its row or hypothesis picked,
    for a batch or a beam search: see shown()): a whole trace, a training trace, a Trainer
    step, a doctor report, another trace. The current trace counts by its trace id, any other
    record by its identity (record_id), so a page should pass the same object on every rerun
    (one from st.cache_resource, the session or FIGURES, not a copy from st.cache_data).
    """
    if record is None:
        record_key, record = shown()
    else:
        record_key = record_id(record)
    name = (builder.__module__, builder.__qualname__)
    key = (name, record_key, tuple(_key(a) for a in args))
    kwargs: dict[str, Any] = {}
    if _writes_text(builder):
        language = lang()
        kwargs["_"] = i18n.gettext_for(language)
        key = (*key, language)
    if other is not None:
        kwargs["other"] = other
        key = (*key, _key(other))
    return FIGURES.get(key, lambda: builder(record, *args, **kwargs))


@functools.cache
def _writes_text(builder: Callable) -> bool:
    """Whether `builder` takes the session's gettext as `_=` (tracer.i18n: builders that write text)."""
    return "_" in inspect.signature(builder).parameters


def narrow_screen() -> bool:
    """Whether the browser is a phone's (its user agent says "Mobi"): figures then lay out for it."""
    return "Mobi" in (st.context.headers.get("User-Agent") or "")


def show_trace_error(tr: tracer.Trace) -> None:
    if tr.error is not None:
        error = tr.error
        where = _(" in {where}").format(where=error.where) if error.where else ""
        st.error(
            _(
                "The model raised at step {step}{where}: {error}. The {step} step(s) before it are "
                "complete; the failing step shows its calls up to the failure."
            ).format(step=error.step, where=where, error=f"{error.type}: {error.message}"),
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
    _ = gettext()  # the session's language, read once for all this function's texts
    last = len(tr.steps) - 1
    step = min(max(int(st.session_state.get("step", 0)), 0), max(last, 0))
    st.session_state["step"] = step
    if last <= 0:
        st.caption(_("Step 0, the only step of this trace."))
        return 0
    # One row that never wraps: the buttons as wide as their labels, the slider takes the rest
    # (columns of fixed shares cut the labels at 1280 px and stacked them on a phone).
    with st.container(horizontal=True, wrap=False, vertical_alignment="bottom", key="step_picker"):
        st.button(_("◀ Prev"), on_click=_move_step, args=(-1, last), disabled=step == 0, key="prev_step")
        st.session_state["_w_step"] = step
        st.slider(_("Step"), 0, last, key="_w_step", on_change=_copy_widget, args=("step",))
        st.button(_("Next ▶"), on_click=_move_step, args=(1, last), disabled=step == last, key="next_step")
    return step


# ---------------------------------------------------------------------------------------------
# Language and presenter setting: per session, remembered in the link (?lang=zh_CN&present=1)


def lang() -> str:
    """This session's language: the link's ?lang= on the first run, then the picker's choice."""
    if "lang" not in st.session_state:
        st.session_state["lang"] = i18n.language(st.query_params.get("lang"))
    return st.session_state["lang"]


def _(message: str) -> str:
    """`message` in this session's language (tracer.i18n catalogs; never a process-global switch)."""
    return i18n.gettext_for(lang())(message)


def gettext() -> i18n.Gettext:
    """This run's gettext, bound to the session's language now: what a page calls `_`, and the
    format_func of a widget (Streamlit may call that after the run, outside the session)."""
    return i18n.gettext_for(lang())


def error_text(exc: BaseException) -> str:
    """An error's message in this session's language (tracer.i18n.error_message): bad input, a model
    that cannot be loaded, a damaged file."""
    return i18n.error_message(exc, i18n.gettext_for(lang()))


def presenting() -> bool:
    """The presenter setting: large text and figures for a projector, the sidebar out of the way."""
    if "present" not in st.session_state:
        st.session_state["present"] = st.query_params.get("present") == "1"
    return bool(st.session_state["present"])


PRESENTER_CSS = """
<style>
html, .stApp { font-size: 22px; }
.stApp [data-testid="stMarkdownContainer"] p, .stApp li { font-size: 1.15rem; line-height: 1.45; }
.stApp h1 { font-size: 2.2rem; } .stApp h2 { font-size: 1.8rem; } .stApp h3 { font-size: 1.5rem; }
.block-container { padding-top: 4.4rem; padding-left: 2rem; padding-right: 2rem; max-width: 100%; }
.stApp .sw-flow { font-size: 17px; }
</style>
"""


def presenter_style() -> None:
    if presenting():
        st.html(PRESENTER_CSS)


def _on_language() -> None:
    st.session_state["lang"] = st.session_state["_w_lang"]


def _on_present() -> None:
    st.session_state["present"] = st.session_state["_w_present"]


def settings_picker() -> None:
    """Language and presenter setting, at the top of the sidebar."""
    _ = gettext()  # the session's language, read once for all this function's texts
    st.session_state["_w_lang"] = lang()
    st.session_state["_w_present"] = presenting()
    st.selectbox(
        _("Language"),
        list(i18n.LANGUAGES),
        format_func=i18n.LANGUAGES.get,
        key="_w_lang",
        on_change=_on_language,
    )
    st.toggle(_("Presenter mode (projector)"), key="_w_present", on_change=_on_present)


# ---------------------------------------------------------------------------------------------
# Links: the URL's query parameters keep the model, the trace and the view

# Query parameter -> session state key, and how to read the parameter back.
_LINKED_VIEW = {
    "step": int,
    "kind": str,
    "layer": int,
    "head": lambda v: v if v == "all" else int(v),
    "row": int,  # a batch's row, or a beam search's hypothesis
}


def follow_link() -> None:
    """On a session's first run, take the model, trace and view from the URL (a link, a reload)."""
    if st.session_state.get("_link_followed"):
        return
    st.session_state["_link_followed"] = True
    params = st.query_params
    if params.get("model") in models.available():
        st.session_state["model"] = params["model"]
        st.session_state["prompt"] = _examples(params["model"])[0]
    for name, parse in _LINKED_VIEW.items():
        if name in params:
            with contextlib.suppress(ValueError):  # a garbled value: the widget keeps its default
                st.session_state[name] = parse(params[name])
    trace_id = params.get("trace")
    if trace_id:
        tr = trace_shelf().get(trace_id)
        if tr is None:
            _say(
                "warning",
                _(
                    "This link's trace is no longer on the server (it keeps the newest {count}). "
                    "Press **Run trace** to record it again."
                ).format(count=LINKED_TRACES),
            )
        else:
            _adopt(trace_id, tr)
            st.session_state["prompt"] = tr.prompt_text
            if tr.batch is not None:  # every prompt of the batch, one per line, as it was run
                st.session_state["batch"] = True
                st.session_state["prompt"] = "\n".join(tr.batch.prompt_texts)
            _say(
                "success",
                _("Opened the linked trace: {count} steps of {model}.").format(
                    count=len(tr.steps), model=tr.model_name
                ),
            )


def update_link(keep: tuple[str, ...] = ()) -> None:
    """Write the model, the current trace and the view into the URL, so a reload or a copied link
    comes back to them; `keep` names parameters the page sets itself (the lesson's position)."""
    wanted: dict[str, str] = {name: st.query_params[name] for name in keep if name in st.query_params}
    if lang() != i18n.DEFAULT:
        wanted["lang"] = lang()
    if presenting():
        wanted["present"] = "1"
    if st.session_state.get("model") in models.available():
        wanted["model"] = st.session_state["model"]
    trace_id, _tr = current()
    if trace_id is not None:
        wanted["trace"] = trace_id
        for name in _LINKED_VIEW:
            if name in st.session_state:
                wanted[name] = str(st.session_state[name])
    if dict(st.query_params) != wanted:  # each change is a message to the browser
        st.query_params.from_dict(wanted)


# ---------------------------------------------------------------------------------------------
# The sidebar


def _examples(model: str) -> list[str]:
    return EXAMPLES.get(model, GENERIC_EXAMPLES)


def _on_model_change() -> None:
    # A prompt the user typed stays; an example (or nothing) becomes the new model's first example.
    prompt = st.session_state.get("prompt", "").strip()
    examples = {p for pairs in [*EXAMPLES.values(), GENERIC_EXAMPLES] for p in pairs}
    if not prompt or prompt in examples:
        st.session_state["prompt"] = _examples(st.session_state["model"])[0]


def _on_example() -> None:
    example = st.session_state["example"]
    if st.session_state.get("batch"):  # a batch: the example becomes one more line
        lines = _prompt_lines(st.session_state.get("prompt", ""))
        if example not in lines:
            st.session_state["prompt"] = "\n".join([*lines, example])
        return
    st.session_state["prompt"] = example


def _prompt_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _on_batch() -> None:
    # Switched on with one prompt: a second example joins it; off: the first line stays.
    lines = _prompt_lines(st.session_state.get("prompt", ""))
    if st.session_state.get("batch"):
        if len(lines) < 2:
            examples = [e for e in _examples(st.session_state.get("model", "")) if e not in lines]
            st.session_state["prompt"] = "\n".join(lines + examples[: 2 - len(lines)])
    elif lines:
        st.session_state["prompt"] = lines[0]


def checkpoint_generation(name: str) -> dict[str, Any]:
    """The checkpoint's generation_config.json (its generate() defaults), {} when it has none.

    Read as a file: the sidebar draws before any model is loaded (and torch imported)."""
    import json

    folder = models.CHECKPOINTS_DIR / name if name in models.available() else Path(name)
    try:
        return json.loads((folder / "generation_config.json").read_text())
    except (OSError, ValueError):
        return {}


def _beam_defaults(name: str) -> None:
    """Set the beam settings to the checkpoint's own (its generation_config), once per model."""
    if st.session_state.get("_beam_defaults_for") == name:
        return
    st.session_state["_beam_defaults_for"] = name
    config = checkpoint_generation(name)
    beams = int(config.get("num_beams") or 1)
    st.session_state["num_beams"] = min(max(beams, 2), MAX_BEAMS)
    st.session_state["num_return_sequences"] = int(config.get("num_return_sequences") or 1)
    st.session_state["length_penalty"] = float(config.get("length_penalty", 1.0))
    early = config.get("early_stopping", False)
    st.session_state["early_stopping"] = early if early in (False, True, "never") else False


def _beam_settings(name: str) -> dict[str, Any]:
    """num_beams, num_return_sequences, length_penalty and early_stopping, as generate() takes them."""
    _ = gettext()  # the session's language, read once for all this function's texts
    _beam_defaults(name)
    num_beams = int(st.number_input(_("Beams (num_beams)"), 2, MAX_BEAMS, key="num_beams"))
    st.session_state["num_return_sequences"] = min(int(st.session_state["num_return_sequences"]), num_beams)
    returned = int(
        st.number_input(
            _("Sequences returned (num_return_sequences)"),
            1,
            num_beams,
            key="num_return_sequences",
            help=_("the best finished hypotheses generate() returns per prompt"),
        )
    )
    penalty = float(
        st.number_input(
            "length_penalty",
            -5.0,
            5.0,
            step=0.5,
            key="length_penalty",
            help=_("a hypothesis's score is its summed log-probability / length ** length_penalty"),
        )
    )
    early = st.selectbox(
        "early_stopping",
        [False, True, "never"],
        key="early_stopping",
        help=_("when beam search stops: False (a heuristic), True (num_beams hypotheses finished), never"),
    )
    return {
        "num_beams": num_beams,
        "num_return_sequences": returned,
        "length_penalty": penalty,
        "early_stopping": early,
    }


def _say(kind: str, text: str) -> None:
    """Remember a message for the sidebar until the next action (a rerun would lose it)."""
    st.session_state["message"] = (kind, text)


def sidebar() -> None:
    """Model, prompt and settings, the Run button, and the trace file (download, upload)."""
    _ = gettext()  # the session's language, read once for all this function's texts
    options = [*models.available(), LOCAL_FOLDER]
    if st.session_state.get("model") not in options:
        st.session_state["model"] = default_model()
        st.session_state["prompt"] = _examples(st.session_state["model"])[0]
    with st.sidebar:
        # Model, prompt and Run first: on a projector (1280x720) and in a phone's drawer the Run
        # button shows without scrolling; the settings follow below it.
        model = st.selectbox(
            _("Model"), options, format_func=gettext(), key="model", on_change=_on_model_change
        )
        folder = ""
        if model == LOCAL_FOLDER:
            folder = st.text_input(
                _("Checkpoint folder"), key="folder", placeholder="/path/to/a/llama-or-bart-checkpoint"
            )
        batch = bool(st.session_state.get("batch"))
        st.text_area(
            _("Prompts, one per line") if batch else _("Prompt"), key="prompt", height=110 if batch else 80
        )
        run_area = st.container()  # filled below, once the settings' values are known
        st.selectbox(
            _("Example prompts"),
            _examples(model),
            key="example",
            on_change=_on_example,
            index=None,
            placeholder=_("Pick an example…"),
        )
        max_new = st.slider(_("Max new tokens"), 1, MAX_NEW_TOKENS, 8, key="max_new_tokens")
        use_cache = st.toggle(_("Use the KV cache"), value=True, key="use_cache")
        st.toggle(
            _("Batch: several prompts"),
            key="batch",
            on_change=_on_batch,
            help=_("one prompt per line: the tokenizer pads them to one length, and every row is traced"),
        )
        padding_side = None
        if batch:
            say = gettext()  # bound now: the format_func below may be called after the run
            side = st.radio(
                _("Padding side"),
                [AUTO_SIDE, "left", "right"],
                horizontal=True,
                key="padding_side",
                format_func=lambda s: say(N_("model's default")) if s == AUTO_SIDE else say(s),
                help=_(
                    "auto: left for a decoder-only model, the tokenizer's side for an encoder-decoder one"
                ),
            )
            padding_side = None if side == AUTO_SIDE else side
        decoding = st.radio(
            _("Decoding"),
            [MODEL_DECODING, GREEDY, SAMPLING, BEAMS],
            horizontal=True,
            format_func=gettext(),
            key="decoding",
            help=_("model's own: the checkpoint's generation_config, as generate() uses it"),
        )
        temperature, seed = None, None
        if decoding == SAMPLING:
            temperature = st.slider(_("Temperature"), 0.1, 2.0, 1.0, 0.1, key="temperature")
            seed = int(st.number_input(_("Seed"), 0, 2**31 - 1, 0, key="seed"))
        beams = (
            _beam_settings(folder.strip() if model == LOCAL_FOLDER else model) if decoding == BEAMS else None
        )
        feed_embeddings = st.toggle(
            _("Feed the prompt as embeddings"),
            value=False,
            key="feed_embeddings",
            help=_("step 0 feeds inputs_embeds [1, P, hidden], later steps input_ids [1, 1]"),
        )
        with run_area:
            if st.button(_("Run trace"), type="primary", key="run", width="stretch"):
                name = folder.strip() if model == LOCAL_FOLDER else model
                text = st.session_state.get("prompt", "")
                _run(
                    name,
                    _prompt_lines(text) if batch else text,
                    max_new,
                    use_cache,
                    None if decoding in (MODEL_DECODING, BEAMS) else decoding == SAMPLING,
                    temperature,
                    seed,
                    feed_embeddings,
                    padding_side=padding_side,
                    beams=beams,
                )
            message = st.session_state.get("message")
            if message:
                kind, text = message
                (st.error if kind == "error" else st.warning if kind == "warning" else st.success)(text)
        _trace_file()
        settings_picker()  # below Run: Run stays in view at 1280x720
        st.caption(_("Stepwise: watch a transformer generate, one step at a time."))


def _run(
    name: str,
    prompt: str | list[str],
    max_new: int,
    use_cache: bool,
    do_sample: bool | None,
    temperature,
    seed,
    feed_embeddings: bool = False,
    *,
    padding_side: str | None = None,
    beams: dict[str, Any] | None = None,
) -> None:
    """Trace `prompt` (or a batch: a list of prompts) and make it the session's trace."""
    _ = gettext()  # the session's language, read once for all this function's texts
    st.session_state.pop("message", None)
    if not name:
        _say(
            "error", _("Type the path of a local checkpoint folder (it holds config.json and *.safetensors).")
        )
        return
    if not (prompt.strip() if isinstance(prompt, str) else prompt):
        _say("error", _("The prompt is empty: type a few words for the model to continue."))
        return
    bar = st.progress(0.0, text=_("Loading {name}…").format(name=name))
    try:
        import_the_tracer()  # the first Run of a fresh server: torch and transformers, a few seconds
        from models.tokenizer import unknown_words

        _model, tok = load_model(name)
        unknown = unknown_words(tok, prompt if isinstance(prompt, str) else " ".join(prompt))
        bar.progress(0.0, text=_("Tracing step 0…"))

        shown = [time.perf_counter()]

        def progress(done: int) -> None:
            # Every update is a message to the browser, sent while the trace holds the model's
            # lock: a few a second are enough to see it move.
            if time.perf_counter() - shown[0] >= 0.25:
                shown[0] = time.perf_counter()
                text = _("Traced {done} of up to {count} steps").format(done=done, count=max_new)
                bar.progress(min(done / max_new, 1.0), text=text)

        tr = run_trace(
            name,
            prompt,
            max_new_tokens=max_new,
            use_cache=use_cache,
            do_sample=do_sample,
            temperature=temperature,
            seed=seed,
            feed_embeddings=feed_embeddings,
            padding_side=padding_side,
            beams=beams,
            progress=progress,
        )
    except (models.ModelLoadError, tracer.StepwiseInputError) as exc:  # TracingNotSupported too
        _say("error", error_text(exc))
        return
    except Exception as exc:  # anything else: still one clear message, never a traceback
        _say("error", _("Tracing failed: {error}").format(error=f"{type(exc).__name__}: {exc}"))
        return
    finally:
        bar.empty()
    set_trace(tr)
    if unknown:
        words = ", ".join(f"'{w}'" for w in unknown)
        _say(
            "warning",
            _("Not in {name}'s vocabulary, so traced as <unk>: {words}.").format(name=name, words=words),
        )
    elif tr.error is not None:
        _say(
            "warning",
            _("The model raised at step {step}; the steps before it are kept.").format(step=tr.error.step),
        )
    else:
        _say("success", _("Traced {count} steps.").format(count=len(tr.steps)))


@st.cache_resource(max_entries=8, show_spinner=False)
def _trace_bytes(trace_id: str, _tr: tracer.Trace) -> bytes:
    return _tr.to_bytes()


def _trace_file() -> None:
    _ = gettext()  # the session's language, read once for all this function's texts
    with st.expander(_("Trace file"), expanded=current()[1] is None):
        trace_id, tr = current()
        if tr is not None:
            st.download_button(
                _("Download this trace"),
                data=lambda: _trace_bytes(trace_id, tr),  # built only when clicked
                file_name=f"{tr.model_name}-{trace_id}.trace",
                mime="application/octet-stream",
                on_click="ignore",
                key="download",
            )
        uploaded = st.file_uploader(_("Open a saved trace (no model needed)"), key="upload")
        if uploaded is not None and st.session_state.get("uploaded_id") != uploaded.file_id:
            st.session_state["uploaded_id"] = uploaded.file_id  # read each upload once
            try:
                tr = tracer.record_from_bytes(uploaded.getvalue(), source=uploaded.name)
            except tracer.TraceFileError as exc:
                _say("error", error_text(exc))
                st.rerun()  # show it where the sidebar shows messages
            if not isinstance(tr, tracer.Trace):
                _open_record(uploaded.name, tr)  # a training trace or a doctor report: its page shows it
                st.rerun()
            set_trace(tr)
            _say(
                "success",
                _("Opened {file}: {count} steps of {model}.").format(
                    file=uploaded.name, count=len(tr.steps), model=tr.model_name
                ),
            )
            st.rerun()  # redraw the page with the new trace


# ---------------------------------------------------------------------------------------------
# Records other than a generation trace, opened from a file or saved from their page

PAGES = Path(__file__).resolve().parent / "pages"
# The page that shows each kind of record a trace file can hold, besides a generation trace.
OPENED_PAGES = {
    "training-trace": "training_step.py",
    "trainer-step": "training_step.py",
    "cache-report": "cache_doctor.py",
}
RECORD_WORDS = {
    "training-trace": N_("a training trace"),
    "trainer-step": N_("a Trainer step"),
    "cache-report": N_("a cache doctor report"),
}


def _open_record(file_name: str, record: Any) -> None:
    """Keep an uploaded record for its page (one per kind, for the session) and go to that page."""
    kind = record.record_kind
    st.session_state.setdefault("opened", {})[kind] = (file_name, record)
    st.session_state["opened_now"] = kind
    _say(
        "success",
        _("Opened {file}: {what} of {model}.").format(
            file=file_name, what=_(RECORD_WORDS[kind]), model=_record_model(record)
        ),
    )
    st.switch_page(PAGES / OPENED_PAGES[kind])


def _record_model(record: Any) -> str:
    return getattr(record, "model_name", None) or record.cached.model_name  # a report: its two runs'


def opened(kind: str) -> tuple[str | None, Any]:
    """(file name, record) of the record of `kind` opened from a file in this session, or (None, None)."""
    return st.session_state.get("opened", {}).get(kind, (None, None))


def opened_now(kind: str) -> bool:
    """True once, on the run right after a record of `kind` was opened: its page then shows it."""
    if st.session_state.get("opened_now") != kind:
        return False
    del st.session_state["opened_now"]
    return True


def _close(kinds: tuple[str, ...]) -> None:
    for kind in kinds:
        st.session_state.get("opened", {}).pop(kind, None)


def download_record(record: Any, key: str) -> None:
    """A button that saves a training trace, a Trainer step or a doctor report as a trace file."""
    st.download_button(
        _("Download as a trace file"),
        data=lambda: record.to_bytes(),  # built only when clicked
        file_name=f"{_record_model(record).replace('/', '_')}-{record.record_kind}.trace",
        mime="application/octet-stream",
        on_click="ignore",
        key=key,
    )


def show_opened_training() -> bool:
    """Lay out the training trace and Trainer step opened from files, if any; True when there was one.

    The Training step page calls it first: what was opened replaces the live page until closed.
    It is laid out as the live page lays out its own (show_training, show_trainer_step).
    """
    _ = gettext()  # the session's language, read once for all this function's texts
    kinds = ("training-trace", "trainer-step")
    files = {kind: opened(kind) for kind in kinds}
    if all(record is None for _name, record in files.values()):
        return False
    names = ", ".join(name for name, record in files.values() if record is not None)
    st.info(_("Showing {files}, opened from a file (no model needed).").format(files=names))
    st.button(_("Close the file"), key="close-opened-training", on_click=_close, args=(kinds,))
    _name, tt = files["training-trace"]
    if tt is not None:
        st.markdown(f"**{tt.model_name}**: `{tt.source_text}` → `{tt.target_text}`")
        show_training(tt, prefix="opened-", download=False)
    _name, ts = files["trainer-step"]
    if ts is not None:
        st.markdown(
            _("**One Trainer step of {model}**: loss {loss:.6f}").format(model=ts.model_name, loss=ts.loss)
        )
        show_trainer_step(ts, prefix="opened-", download=False)
    return True


# ---------------------------------------------------------------------------------------------
# The training views, laid out alike on the Training step page and for a file opened in the sidebar
# (tracer.plots.training is imported where it is used: it imports torch, which the first page
# of the app does without)


def show_training(
    tt: tracer.TrainingTrace, *, prefix: str = "", more: tuple[str, ...] = (), download: bool = True
) -> list:
    """A teacher-forced pass: its loss in a line, then tabs for the shift, the loss per token and
    the attention. `more` names further tabs, returned for the caller to fill; `prefix` goes before
    the keys of the widgets and charts (the live page's have none: links and tests find them by
    those keys); `download` adds a button that saves the trace to a file."""
    _ = gettext()  # the session's language, read once for all this function's texts
    from tracer.plots import training as plots

    st.markdown(view(plots.loss_summary, record=tt))
    if download:
        download_record(tt, key=f"{prefix}training-download")
    shift_tab, loss_tab, attention_tab, *more_tabs = st.tabs(
        [_("Labels and the shift"), _("Loss per token"), _("Attention"), *more]
    )

    with shift_tab:
        if tt.encoder_decoder:
            st.markdown(
                _(
                    "BART's forward gets `labels` and builds the decoder's input itself: "
                    "`shift_tokens_right(labels, pad_token_id, decoder_start_token_id)` moves every label "
                    "one place right, puts the start token ({start}) first and turns -100 into padding. "
                    "So position t is fed the label before it and scored against label t."
                ).format(start=tt.settings["decoder_start_token_id"])
            )
        else:
            st.markdown(
                _(
                    "A Llama's labels are its input ids, with -100 where nothing is learned (the prompt, "
                    "padding). They are passed unshifted; the loss shifts them left, so position t is "
                    "scored against the token fed at t + 1."
                )
            )
        st.plotly_chart(
            view(plots.shift_figure, record=tt), config={"displayModeBar": False}, key=f"{prefix}shift-figure"
        )
        st.dataframe(view(plots.shift_table, record=tt))

    with loss_tab:
        st.plotly_chart(
            view(plots.loss_figure, record=tt), config={"displayModeBar": False}, key=f"{prefix}loss-figure"
        )
        st.dataframe(view(plots.loss_table, record=tt), hide_index=True)
        st.markdown(view(plots.bias_summary, record=tt))

    with attention_tab:
        st.markdown(
            _(
                "All positions at once: the decoder's self-attention is causal (each position sees itself "
                "and the ones before), which is what makes one pass equal to feeding the targets one by one."
            )
        )
        c1, c2, c3 = st.columns(3)
        say = gettext()  # bound now: the format_funcs below may be called after the run
        kinds = plots.attention_kinds(tt)
        kind = c1.selectbox(
            _("Attention"),
            kinds,
            format_func=lambda k: say(plots.KIND_TITLES[k]),
            key=f"{prefix}training-kind",
        )
        layer = c2.selectbox(_("Layer"), list(range(tt.num_layers)), key=f"{prefix}training-layer")
        head = c3.selectbox(
            _("Head"),
            ["mean", *range(plots.num_heads(tt, kind))],
            format_func=lambda h: say(N_("mean")) if h == "mean" else str(h),
            key=f"{prefix}training-head",
        )
        st.plotly_chart(
            view(plots.attention_figure, kind, layer, None if head == "mean" else int(head), record=tt),
            config={"displayModeBar": False},
            key=f"{prefix}attention-figure",
        )
        with st.expander(_("Every hook point of the pass, in call order")):
            st.dataframe(view(plots.events_table, record=tt), hide_index=True)
    return more_tabs


def show_trainer_step(ts: tracer.TrainerStepTrace, *, prefix: str = "", download: bool = True) -> None:
    """One Trainer step: its flow, the loss checked against the logged one, the gradient norms and
    updates per part, every event; `prefix` and `download` as for show_training."""
    from tracer.plots import training as plots

    st.plotly_chart(
        view(plots.trainer_flow_figure, record=ts),
        config={"displayModeBar": False},
        key=f"{prefix}trainer-flow",
    )
    st.success(
        _("Recorded loss {loss:.6f} = the loss the Trainer logged ({logged:.6f}).").format(
            loss=ts.loss, logged=ts.logged_loss
        )
    )
    g1, g2 = st.columns(2)
    g1.plotly_chart(view(plots.grad_norm_figure, record=ts), key=f"{prefix}grad-norms")
    g2.plotly_chart(view(plots.update_figure, record=ts), key=f"{prefix}updates")
    st.dataframe(view(plots.trainer_table, record=ts), hide_index=True)
    if download:
        download_record(ts, key=f"{prefix}trainer-download")


# ---------------------------------------------------------------------------------------------
# The lesson's own runs (tracer.lesson builds the slides from them)

LESSON_TOKENS = 6


@st.cache_resource(show_spinner=False, max_entries=2)
def lesson_runs(names: tuple[str, ...]) -> dict[str, Any]:
    """The chapters' own runs on the shipped models, made once for every session."""
    llama = next((n for n in ("tiny-llama", "random-llama") if n in names), None)
    bart = next((n for n in ("tiny-bart", "random-bart") if n in names), None)
    runs: dict[str, Any] = {}
    if llama is not None:
        runs["generation"] = run_trace(llama, _examples(llama)[0], max_new_tokens=LESSON_TOKENS)
        model, tok = load_model(llama)
        runs["trainer"] = tracer.trace_trainer_step(model, tok, model_name=llama)
    if bart is not None:
        runs["bart"] = run_trace(bart, _examples(bart)[0], max_new_tokens=LESSON_TOKENS)
        model, tok = load_model(bart)
        source, target = models.EXAMPLES[bart][0] if bart in models.EXAMPLES else (_examples(bart)[0], None)
        runs["training"] = tracer.trace_training_step(model, tok, source, target, model_name=bart)
    runs["doctor"] = {
        variant: scenarios.check("side-inputs", variant, LESSON_TOKENS)
        for variant in ("broken", "tempting", "fixed")
    }
    return runs
