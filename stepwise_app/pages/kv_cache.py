"""KV cache: its length and memory per layer over the steps, the shapes per step, cache on vs off."""

import streamlit as st

from stepwise_app import ui
from tracer.plots import generation as g

_ = ui.gettext()  # this run's language, bound now (format_funcs run later too)

st.title(_("KV cache"))
tr = ui.row_picker(ui.require_trace())  # a batch's row or a beam hypothesis
ui.show_trace_error(tr)

st.subheader(_("Growth"))
if tr.encoder_decoder:
    st.caption(
        _(
            "Solid: each decoder layer's self-attention cache, one position longer per step. Dashed: the "
            "cross-attention cache, each decoder layer's own key and value projections of the encoder "
            "output, filled at step 0 and fixed after."
        )
    )
st.plotly_chart(ui.view(g.cache_growth_figure), config={"displayModeBar": False}, key="cache_growth")


# A fragment: a step change reruns only the shapes, not the sidebar and the figures around them.
@st.fragment
def shapes_view() -> None:
    st.subheader(_("Key and value shapes after a step"))
    step = ui.step_picker(tr)
    ui.update_link()  # the app updates the link on a full run only
    shapes = ui.view(g.cache_shapes_table, step)
    if shapes.num_rows == 0:
        st.info(_("Nothing is cached after this step: the cache is off in this trace."))
    else:
        st.caption(
            _(
                "Shapes are [batch, kv_heads, seq, head_dim]; *seq_len* counts the positions a layer keeps, "
                "*positions seen* all it has seen (more on a sliding-window layer, which keeps only the last "
                "W-1); *grew by* counts positions added to what it keeps by this step."
            )
        )
        st.dataframe(shapes, hide_index=True, width="stretch")


shapes_view()

st.subheader(_("Cache on vs off"))
other = ui.counterpart(tr)
st.markdown(ui.view(g.cache_on_off_summary, other=other))
st.plotly_chart(
    ui.view(g.cache_on_off_figure, other=other), config={"displayModeBar": False}, key="cache_on_off"
)
if other is None:
    if tr.settings.get("use_cache", True):
        st.caption(
            _(
                "The cache-off column is computed from this trace. Run the same prompt with the cache "
                "off to compare with a recorded run."
            )
        )
    else:
        st.caption(
            _(
                "The cache-on column is computed from this trace. Run the same prompt with the cache "
                "on to compare with a recorded run."
            )
        )
else:
    st.caption(_("Both columns were recorded: this trace and the same run with the other cache setting."))
with st.expander(_("Tokens fed per step, as a table")):
    st.dataframe(ui.view(g.cache_on_off_table, other=other), hide_index=True, width="stretch")
