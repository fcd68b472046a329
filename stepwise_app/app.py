"""Stepwise, the app: `stepwise app`, or `streamlit run app.py` in a checkout (the root app.py runs it).

The sidebar (ui.sidebar) picks a model, a prompt and the settings and runs a trace into the
session; the pages replay it. Every page is listed here, in the order of the navigation.
"""

from pathlib import Path

import streamlit as st

from stepwise_app import ui

ROOT = Path(__file__).resolve().parent

# An emoji favicon is drawn by the browser; a :material/…: one is fetched from an outside font host.
_ = ui._
st.set_page_config(
    page_title="Stepwise",
    page_icon="🪜",
    layout="wide",
    initial_sidebar_state="collapsed" if ui.presenting() else "auto",
)

pages = [
    st.Page(ROOT / "pages/overview.py", title=_("Overview"), icon=":material/list_alt:", default=True),
    st.Page(ROOT / "pages/lesson.py", title=_("Lesson"), icon=":material/school:"),
    st.Page(ROOT / "pages/step_replay.py", title=_("Step replay"), icon=":material/play_circle:"),
    st.Page(ROOT / "pages/attention.py", title=_("Attention"), icon=":material/grid_on:"),
    st.Page(ROOT / "pages/kv_cache.py", title=_("KV cache"), icon=":material/storage:"),
    st.Page(ROOT / "pages/beams.py", title=_("Beams"), icon=":material/account_tree:"),
    st.Page(ROOT / "pages/cache_doctor.py", title=_("Cache doctor"), icon=":material/stethoscope:"),
    st.Page(ROOT / "pages/training_step.py", title=_("Training step"), icon=":material/fitness_center:"),
]

page = st.navigation(pages)
ui.follow_link()
ui.presenter_style()
ui.sidebar()
ui.update_link(keep=("chapter", "slide") if page.url_path == "lesson" else ())
if page.url_path in (
    "cache_doctor",
    "training_step",
    "lesson",
):  # they run models: torch and transformers first
    ui.import_the_tracer()
page.run()
