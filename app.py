"""Stepwise, the app: `streamlit run app.py`.

The sidebar (ui.sidebar) picks a model, a prompt and the settings and runs a trace into the
session; the pages replay it. Pages written by other issues join the navigation once their file
exists, so the app runs whether or not they have landed.
"""

from pathlib import Path

import streamlit as st

import ui
from tracer.i18n import N_

ROOT = Path(__file__).resolve().parent

_ = ui._
st.set_page_config(
    page_title="Stepwise",
    page_icon=":material/stairs:",
    layout="wide",
    initial_sidebar_state="collapsed" if ui.presenting() else "auto",
)

pages = [
    st.Page("pages/overview.py", title=_("Overview"), icon=":material/list_alt:", default=True),
    st.Page("pages/lesson.py", title=_("Lesson"), icon=":material/school:"),
    st.Page("pages/step_replay.py", title=_("Step replay"), icon=":material/play_circle:"),
    st.Page("pages/attention.py", title=_("Attention"), icon=":material/grid_on:"),
    st.Page("pages/kv_cache.py", title=_("KV cache"), icon=":material/storage:"),
]
for file, title, icon in (
    ("pages/cache_doctor.py", N_("Cache doctor"), ":material/stethoscope:"),
    ("pages/training_step.py", N_("Training step"), ":material/fitness_center:"),
):
    if (ROOT / file).is_file():
        pages.append(st.Page(file, title=_(title), icon=icon))

page = st.navigation(pages)
ui.remember_in_link()
ui.presenter_style()
ui.sidebar()
page.run()
