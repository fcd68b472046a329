"""Stepwise, the app: `stepwise app`, or `streamlit run app.py` in a checkout (the root app.py runs it).

The sidebar (ui.sidebar) picks a model, a prompt and the settings and runs a trace into the
session; the pages replay it. Pages written by other issues join the navigation once their file
exists, so the app runs whether or not they have landed.
"""

from pathlib import Path

import streamlit as st

from stepwise_app import ui

ROOT = Path(__file__).resolve().parent

st.set_page_config(page_title="Stepwise", page_icon=":material/stairs:", layout="wide")

pages = [
    st.Page(ROOT / "pages/overview.py", title="Overview", icon=":material/list_alt:", default=True),
    st.Page(ROOT / "pages/step_replay.py", title="Step replay", icon=":material/play_circle:"),
    st.Page(ROOT / "pages/attention.py", title="Attention", icon=":material/grid_on:"),
    st.Page(ROOT / "pages/kv_cache.py", title="KV cache", icon=":material/storage:"),
]
for file, title, icon in (
    ("pages/cache_doctor.py", "Cache doctor", ":material/stethoscope:"),
    ("pages/training_step.py", "Training step", ":material/fitness_center:"),
):
    if (ROOT / file).is_file():
        pages.append(st.Page(ROOT / file, title=title, icon=icon))

page = st.navigation(pages)
ui.sidebar()
page.run()
