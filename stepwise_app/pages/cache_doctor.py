"""Cache doctor: cached vs uncached generation side by side, where they part, why, and the fix.

Also a row of a batch vs the same prompt generated alone (tracer.compare_row_with_alone), for
scenarios about batches and for the sidebar's model on a batch typed here.

Layout only: the report comes from tracer.check_cache, the figures and tables from
tracer.plots.doctor. A scenario needs no model from the sidebar; "the current model" reads the
sidebar's choice and loads it through ui's shared loader. Reports and their views are kept in
ui's shared cache (ui.FIGURES, ui.view), like every page's figures: a report is the same for
every session that asks for the same check.
"""

import re

import streamlit as st

import tracer
from models import scenarios
from stepwise_app import ui  # the sidebar's model and prompt, the cached model loader
from tracer.i18n import N_
from tracer.plots import doctor as d

_ = ui.gettext()  # this run's language, bound now (format_funcs run later too)

# Option values stay English (the session keeps them); they are shown through _.
SCENARIO_SOURCE, MODEL_SOURCE = N_("A cache-bug scenario"), N_("The current model and prompt")
ROW_SOURCE = N_("A row of a batch vs its prompt alone")
OPENED_SOURCE = N_("The report opened from a file")
VARIANT_WORDS = {"broken": N_("broken"), "fixed": N_("fixed"), "tempting": N_("tempting fix (wrong)")}
PADDING_SIDES = {"left": N_("left"), "right": N_("right")}

st.title(_("Cache doctor"))
what_is_compared = st.empty()  # filled once the report is known: cache on vs off, or a row vs its prompt

# A report opened from a file (the sidebar's upload) is one more source; it is shown once opened.
opened_name, opened_report = ui.opened("cache-report")
if ui.opened_now("cache-report"):
    st.session_state["doctor_source"] = OPENED_SOURCE
sources = [SCENARIO_SOURCE, MODEL_SOURCE, ROW_SOURCE, *([OPENED_SOURCE] if opened_report is not None else [])]
source = st.radio(_("Check"), sources, horizontal=True, key="doctor_source", format_func=_)
max_new = st.slider(_("New tokens"), 2, 16, 6, key="doctor_max_new_tokens")


def sidebar_model() -> tuple[str | None, str]:
    """The sidebar's model (a name or a checkpoint folder) and prompt; stops the page without a model."""
    name = st.session_state.get("model")
    if name == ui.LOCAL_FOLDER:
        name = st.session_state.get("folder")
    if not name:
        st.info(
            _("Pick a model and a prompt in the app's sidebar (`streamlit run app.py`), then come back here.")
        )
        st.stop()
    return name, st.session_state.get("prompt", "")


def run_when_asked(key: tuple, button: str, button_key: str, hint: str, check):
    """The report under `key` once this session pressed `button` (a model runs only when asked)."""
    asked: set = st.session_state.setdefault("doctor_asked", set())
    if st.button(button, type="primary", key=button_key):
        asked.add(key)
    if key not in asked:
        st.info(hint)
        st.stop()
    try:
        return ui.FIGURES.get(key, check)
    except ValueError as exc:  # bad prompt, model that cannot be loaded or traced
        asked.discard(key)  # a failed check is not kept: pressing the button tries again
        st.error(ui.error_text(exc))
        st.stop()


scenario = None
report = None
if source == SCENARIO_SOURCE:
    by_title = {s.title: s for s in scenarios.all_scenarios()}
    title = st.selectbox(_("Scenario"), list(by_title), format_func=_, key="doctor_scenario")
    scenario = by_title[title]
    variant = st.radio(
        _("Variant"),
        scenario.variants,
        format_func=lambda v: _(VARIANT_WORDS[v]),
        horizontal=True,
        key=f"doctor_variant_{scenario.name}",
    )
    st.markdown(_(scenario.description))
    if max_new < scenario.min_new_tokens:
        st.caption(
            _("This scenario needs at least {n} new tokens to show its bug: it runs with {n}.").format(
                n=scenario.min_new_tokens
            )
        )
    scenario_tokens = max(max_new, scenario.min_new_tokens)
    running = (
        _("Generating the batch and the prompt alone…")
        if scenario.comparison == "row-vs-alone"
        else _("Generating with the cache on and off…")
    )

    def check_scenario():
        with st.spinner(running):
            return scenarios.check(scenario.name, variant, scenario_tokens)

    report = ui.FIGURES.get(
        ("cache-report", "scenario", scenario.name, variant, scenario_tokens), check_scenario
    )
elif source == OPENED_SOURCE:
    st.markdown(_("Opened from **{name}** (no model needed).").format(name=opened_name))
    report = opened_report
elif source == ROW_SOURCE:
    model_name, prompt = sidebar_model()
    st.markdown(_("Model **{model}**").format(model=model_name))
    if (
        "doctor_batch_prompts" not in st.session_state
    ):  # the sidebar's prompt and a shorter one: padding shows
        words = prompt.split()
        st.session_state["doctor_batch_prompts"] = f"{prompt}\n{' '.join(words[: max(len(words) // 2, 1)])}"
    text = st.text_area(_("The batch: one prompt per line"), key="doctor_batch_prompts", height=100)
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    row_column, side_column, beams_column = st.columns(3)
    last_row = max(len(prompts) - 1, 0)
    st.session_state["doctor_row"] = min(
        int(st.session_state.get("doctor_row", 1 if last_row else 0)), last_row
    )
    row = row_column.number_input(_("Row"), 0, last_row, key="doctor_row")
    side = side_column.radio(
        _("Padding"),
        list(PADDING_SIDES),
        format_func=lambda s: _(PADDING_SIDES[s]),
        key="doctor_padding_side",
    )
    beams = beams_column.selectbox(_("Number of beams"), [1, 2, 4], key="doctor_beams")
    key = ("cache-report", "row", model_name, tuple(prompts), int(row), side, beams, max_new)

    def check_row():
        with st.spinner(_("Generating the batch and the prompt alone…")):
            model, tok = ui.load_model(model_name)
            return tracer.compare_row_with_alone(
                model,
                tok,
                prompts,
                int(row),
                padding_side=side,
                num_beams=beams,
                max_new_tokens=max_new,
                model_name=model_name,
            )

    report = run_when_asked(
        key,
        _("Compare the row with its prompt alone"),
        "doctor_run_row",
        _("Press **Compare the row with its prompt alone** to generate the batch and that prompt alone."),
        check_row,
    )
else:
    model_name, prompt = sidebar_model()
    st.markdown(_("Model **{model}**, prompt: `{prompt}`").format(model=model_name, prompt=prompt))
    key = ("cache-report", "model", model_name, prompt, max_new)

    def check_model():
        with st.spinner(_("Generating with the cache on and off…")):
            model, tok = ui.load_model(model_name)
            return tracer.check_cache(model, tok, prompt, max_new_tokens=max_new, model_name=model_name)

    # The checks this session asked for (a model runs only when asked); the reports are in ui.FIGURES.
    report = run_when_asked(
        key,
        _("Check the cache"),
        "doctor_run",
        _("Press **Check the cache** to compare generation with the cache on and off."),
        check_model,
    )

if report.comparison == "row-vs-alone":
    what_is_compared.caption(
        _(
            "Generates a batch and one of its prompts alone, and compares row {row} of the batch with the "
            "prompt alone step by step: the logits, every decoder layer's output at the newest position, and "
            "the chosen tokens."
        ).format(row=report.row)
    )
else:
    what_is_compared.caption(
        _(
            "Runs greedy generation with the KV cache on and off and compares them step by step: the "
            "logits, every decoder layer's output at the newest position, and the chosen tokens."
        )
    )

# -- the verdict ---------------------------------------------------------------------------
kind, headline = ui.view(d.verdict, record=report)
(st.success if kind == "success" else st.error)(f"**{headline}**")
if source != OPENED_SOURCE:
    ui.download_record(report, key="doctor_download")


def _short(text: str, sentences: int = 2) -> tuple[str, str]:
    """The first `sentences` sentences of `text`, and the rest: long blocks of text lost the class."""
    # English sentences end in ". " before a capital; Chinese ones in "。" (no space follows).
    parts = re.split(r"(?<=[.!?])\s+(?=[A-Z`])|(?<=[。！？])", text.strip())
    parts = [p for p in parts if p]
    glue = "" if "。" in text else " "
    return glue.join(parts[:sentences]), glue.join(parts[sentences:])


summary, more = _short(ui.view(d.summary_text, record=report))
st.markdown(summary)
if more:
    with st.expander(_("The whole account")):
        st.markdown(more)

left, middle, right = st.columns(3)
step = report.first_divergent_step
left.metric(_("First divergent step"), "-" if step is None else step)
middle.metric(
    _("First divergent layer"), "-" if report.first_divergent_layer is None else report.first_divergent_layer
)
right.metric(_("Largest logit difference"), ui.view(d.largest_logit_diff, record=report))
reference = _("the uncached run") if report.comparison == "cache" else tracer.doctor.side_names(report, _)[1]
st.caption(
    _(
        "Compared: {compared}. Tolerance for {dtype}: |a - b| ≤ {atol:g} + {rtol:g} · max|b|, "
        "b being {reference}."
    ).format(
        compared=ui.view(d.compared_text, record=report),
        dtype=report.dtype,
        atol=report.tolerance.atol,
        rtol=report.tolerance.rtol,
        reference=reference,
    )
)
if report.rows_compared > 1:
    parted = ", ".join(tracer.doctor.sequence_name(report, r, _) for r in report.divergent_rows) or _("none")
    st.caption(
        _("{n} sequences (rows, beams) compared one by one; those that part: {parted}.").format(
            n=report.rows_compared, parted=parted
        )
    )

st.plotly_chart(
    ui.view(d.logit_diff_figure, record=report), config={"displayModeBar": False}, key="doctor_logit_diff"
)
if any(r.layer_diffs for r in report.steps):
    st.plotly_chart(
        ui.view(d.layer_diff_figure, record=report), config={"displayModeBar": False}, key="doctor_layer_diff"
    )

if report.num_beams > 1:
    st.subheader(_("Beam reorders: did every cache layer follow the beams?"))
    st.dataframe(ui.view(d.reorder_table, record=report), hide_index=True, width="stretch")

# -- the two runs side by side ------------------------------------------------------------------
st.subheader(_("The two runs, step by step"))
table = ui.view(d.steps_table, record=report)
bad = {_(status) for status in ("diverged", "error", "both-failed")}  # as the table shows them


def _highlight(row):
    color = "background-color: rgba(214, 39, 40, 0.18)" if row[_("status")] in bad else ""
    return [color] * len(row)


st.dataframe(table.style.apply(_highlight, axis=1), hide_index=True, width="stretch")

if step is not None:
    st.subheader(_("What was fed at step {step}").format(step=step))
    for line in ui.view(d.errors_text, record=report):
        st.code(line, language=None)
    st.dataframe(ui.view(d.fed_at_step_table, step, record=report), hide_index=True, width="stretch")
    if report.suspects:
        st.markdown(_("**Shapes and values that do not fit**"))
        for reason in ui.view(d.suspect_reasons, record=report):
            st.warning(reason)

# -- the explanation and the fix --------------------------------------------------------------
if scenario is not None:
    st.subheader(_("Why"))
    why, more = _short(_(scenario.explanation))
    st.markdown(why)
    if more:
        with st.expander(_("More on why")):
            st.markdown(more)
    st.subheader(_("The code"))
    shown = [v for v in ("broken", "fixed", "tempting") if v in scenario.code]
    for tab, v in zip(st.tabs([_(VARIANT_WORDS[v]) for v in shown]), shown, strict=True):
        with tab:
            st.caption(_(scenario.notes[v]) if v in scenario.notes else "")
            st.code(scenario.code[v], language="python")
    if "model" in scenario.code:
        with st.expander(_("The model both variants share")):
            st.code(scenario.code["model"], language="python")
elif report.suspects:
    st.subheader(_("The usual fix"))
    for kind in dict.fromkeys(s.kind for s in report.suspects):
        st.markdown(_(tracer.doctor.USUAL_FIX[kind]))
