"""Cache doctor: cached vs uncached generation side by side, where they part, why, and the fix.

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
OPENED_SOURCE = N_("The report opened from a file")
VARIANT_WORDS = {"broken": N_("broken"), "fixed": N_("fixed"), "tempting": N_("tempting fix (wrong)")}

st.title(_("Cache doctor"))
st.caption(
    _(
        "Runs greedy generation with the KV cache on and off and compares them step by step: the logits, "
        "every decoder layer's output at the newest position, and the chosen tokens."
    )
)

# A report opened from a file (the sidebar's upload) is one more source; it is shown once opened.
opened_name, opened_report = ui.opened("cache-report")
if ui.opened_now("cache-report"):
    st.session_state["doctor_source"] = OPENED_SOURCE
sources = [SCENARIO_SOURCE, MODEL_SOURCE, *([OPENED_SOURCE] if opened_report is not None else [])]
source = st.radio(_("Check"), sources, format_func=_, horizontal=True, key="doctor_source")
max_new = st.slider(_("New tokens"), 2, 16, 6, key="doctor_max_new_tokens")

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

    def check_scenario():
        with st.spinner(_("Generating with the cache on and off…")):
            return scenarios.check(scenario.name, variant, max_new)

    report = ui.FIGURES.get(("cache-report", "scenario", scenario.name, variant, max_new), check_scenario)
elif source == OPENED_SOURCE:
    st.markdown(_("Opened from **{name}** (no model needed).").format(name=opened_name))
    report = opened_report
else:
    model_name = st.session_state.get("model")
    if model_name == ui.LOCAL_FOLDER:
        model_name = st.session_state.get("folder")
    prompt = st.session_state.get("prompt", "")
    if not model_name:
        st.info(
            _("Pick a model and a prompt in the app's sidebar (`streamlit run app.py`), then come back here.")
        )
        st.stop()
    st.markdown(_("Model **{model}**, prompt: `{prompt}`").format(model=model_name, prompt=prompt))
    key = ("cache-report", "model", model_name, prompt, max_new)
    # The checks this session asked for (a model runs only when asked); the reports are in ui.FIGURES.
    asked: set = st.session_state.setdefault("doctor_asked", set())
    if st.button(_("Check the cache"), type="primary", key="doctor_run"):
        asked.add(key)
    if key not in asked:
        st.info(_("Press **Check the cache** to compare generation with the cache on and off."))
        st.stop()

    def check_model():
        with st.spinner(_("Generating with the cache on and off…")):
            model, tok = ui.load_model(model_name)
            return tracer.check_cache(model, tok, prompt, max_new_tokens=max_new, model_name=model_name)

    try:
        report = ui.FIGURES.get(key, check_model)
    except ValueError as exc:  # bad prompt, model that cannot be loaded or traced
        asked.discard(key)  # a failed check is not kept: pressing the button tries again
        st.error(ui.error_text(exc))
        st.stop()

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
st.caption(
    _(
        "Compared: {compared}. Tolerance for {dtype}: |a - b| ≤ {atol:g} + {rtol:g} · max|b|, "
        "b being the uncached run."
    ).format(
        compared=ui.view(d.compared_text, record=report),
        dtype=report.dtype,
        atol=report.tolerance.atol,
        rtol=report.tolerance.rtol,
    )
)

st.plotly_chart(
    ui.view(d.logit_diff_figure, record=report), config={"displayModeBar": False}, key="doctor_logit_diff"
)
if any(r.layer_diffs for r in report.steps):
    st.plotly_chart(
        ui.view(d.layer_diff_figure, record=report), config={"displayModeBar": False}, key="doctor_layer_diff"
    )

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
