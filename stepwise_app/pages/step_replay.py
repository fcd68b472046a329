"""Step replay: one step's call flow with shapes, what prepare_inputs returned, and the token choice."""

import streamlit as st

from stepwise_app import ui
from tracer.plots import batch
from tracer.plots import generation as g

_ = ui.gettext()  # this run's language, bound now (format_funcs run later too)

st.title(_("Step replay"))
whole = ui.require_trace()
tr = ui.row_picker(whole)  # a batch's row or a beam hypothesis: the step below is its
ui.show_trace_error(tr)


# A fragment: Prev, Next and the slider rerun only the step's view, not the sidebar and the rest
# of the app, so a class stepping together keeps the server's work per click small.
@st.fragment
def step_view() -> None:
    step = ui.step_picker(tr)
    ui.update_link()  # the app updates the link on a full run only

    st.markdown(ui.view(g.step_story, step))

    flow_col, token_col = st.columns([3, 2], gap="large")
    with flow_col:
        st.subheader(_("Call flow"))
        st.caption(_("This step's calls in the order they happened, with the shapes that went in and out."))
        with st.container(key="call_flow"):
            st.html(ui.view(g.call_flow_html, step))
    with token_col:
        st.subheader(_("Next token"))
        st.plotly_chart(ui.view(g.topk_figure, step), config={"displayModeBar": False}, key="topk")
        st.caption(ui.view(g.eos_line))

    if whole.num_returned > 1:  # every row of the model's batch at this step, side by side
        st.subheader(_("Every row at this step"))
        st.caption(
            _(
                "The model runs all rows at once: each row's fed ids, its position_ids, its attention "
                "mask (pads are 0) and what it chose. Beam search: every beam is a row."
            )
        )
        with st.container(key="step_rows_table"):
            st.dataframe(ui.view(batch.step_rows_table, step, record=whole), hide_index=True, width="stretch")

    st.subheader(_("What prepare_inputs_for_generation returned"))
    changes = ui.view(g.prepare_inputs_changes, step)
    if changes:
        st.markdown(
            _("Changed since step {step}: ").format(step=step - 1) + ", ".join(f"`{c}`" for c in changes)
        )
    elif step > 0:
        st.markdown(_("Nothing changed shape since step {step}.").format(step=step - 1))
    st.dataframe(ui.view(g.prepare_inputs_table, step), hide_index=True, width="stretch")

    st.subheader(_("What transformers 5.x does here"))
    st.caption(
        _("Live values of this step, each with why; the lesson notes describe 4.x, where some differ.")
    )
    st.dataframe(ui.view(g.live_values_table, step), hide_index=True, width="stretch")

    # A toggle, not an expander: an expander's table is built and sent on every step change even
    # while it is closed, and this is the largest table of the page.
    if st.toggle(
        _("Every recorded call, exactly (hook point, Hugging Face module, inputs, outputs)"), key="all_calls"
    ):
        st.dataframe(ui.view(g.call_flow_table, step), hide_index=True, width="stretch")


step_view()
