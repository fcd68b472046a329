"""Beams: the beam tree over the steps, the hypotheses returned, each step's ranked continuations
and the cache reorder after it."""

import streamlit as st

from stepwise_app import ui
from tracer.plots import beams as b

_ = ui._
st.title(_("Beams"))
whole = ui.require_trace()
ui.show_trace_error(whole)
if whole.beam_result is None:
    st.info(ui.view(b.beam_summary, record=whole))
    st.stop()

ui.row_picker(whole)  # the hypothesis: its prompt's tree, its path drawn
returned = ui.shown_row(whole)
prompt = b.prompt_of(whole, returned)
picked = b.hypothesis_in_prompt(whole, returned)
narrow = ui.narrow_screen()
st.markdown(ui.view(b.beam_summary, record=whole))

st.subheader(_("Beam tree"))
st.plotly_chart(
    ui.view(b.beam_tree_figure, prompt, picked, narrow, record=whole),
    config={"displayModeBar": False},
    key="beam_tree",
)
st.caption(
    _(
        "Each column is a step, each node one of its ranked continuations (rank 0: the highest summed "
        "log-probability), with an edge from the beam it extends. Blue: kept, a beam of the next step. "
        "Green: finished, a hypothesis set aside. Grey: pruned. Orange: the best hypothesis's path; "
        "stars: where each returned hypothesis ends. Hover a node for its scores."
    )
)

st.subheader(_("Returned hypotheses"))
with st.container(key="hypotheses_table"):
    st.dataframe(ui.view(b.hypotheses_table, prompt, record=whole), hide_index=True, width="stretch")

st.subheader(_("One step"))
step = ui.step_picker(whole)
with st.container(key="candidates_table"):
    st.dataframe(ui.view(b.candidates_table, step, prompt, record=whole), hide_index=True, width="stretch")

st.subheader(_("The cache reorder after this step"))
st.caption(
    _(
        "Beam j of the next step continues some beam of this step, so generate() calls the cache's "
        "reorder_cache(beam_idx): every layer's keys and values take row beam_idx[j] as their row j."
    )
)
figure_col, table_col = st.columns([3, 2], gap="large")
with figure_col:
    st.plotly_chart(
        ui.view(b.reorder_figure, step, narrow, record=whole), config={"displayModeBar": False}, key="reorder"
    )
with table_col, st.container(key="reorder_table"):
    reorder = ui.view(b.reorder_table, step, record=whole)
    if not reorder.empty:
        st.dataframe(reorder, hide_index=True, width="stretch")
        st.dataframe(ui.view(b.reorder_layers_table, step, record=whole), hide_index=True, width="stretch")
