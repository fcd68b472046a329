"""Overview: the prompt and the generated tokens as a strip, and one row per step."""

import streamlit as st

from stepwise_app import ui
from tracer.plots import batch
from tracer.plots import generation as g

st.title("Overview")
whole = ui.require_trace()
tr = ui.row_picker(whole)  # a batch's row or a beam hypothesis: the page below shows it
st.caption(ui.view(g.trace_summary))
ui.show_trace_error(tr)

st.subheader("Tokens")
st.caption("Blue: the prompt (BART: the encoder's source). Orange: one token chosen per step. Hover for ids.")
st.html(ui.view(g.token_strip_html))

st.subheader("Steps")
st.caption(
    "Each step is one decoder forward pass: prepare_inputs_for_generation, the layers, lm_head, "
    "then the token choice. *fed* is what the model was given at that step."
)
with st.container(key="steps_table"):  # one keyed container per table: tests find each
    st.dataframe(
        ui.view(g.steps_table),
        hide_index=True,
        width="stretch",
        column_config={
            "probability": st.column_config.ProgressColumn(
                "probability", format="%.3f", min_value=0, max_value=1
            ),
            "cache length": st.column_config.NumberColumn(
                "cache length", help="positions in the cache after the step"
            ),
        },
    )
st.caption("Open **Step replay** to walk through one step's calls.")

if whole.batch is not None:  # every row side by side: its pads, mask and position_ids
    _ = ui._
    st.subheader(_("All rows of the batch"))
    st.caption(
        _(
            "The tokenizer padded the prompts to one length ({side} padding). Grey cells are pads: "
            "attention_mask is 0 there, and no real token attends to them. position_ids are what "
            "generate() fed: each row counts its own real tokens."
        ).format(side=_(whole.batch.padding_side))
    )
    narrow = ui.narrow_screen()  # a phone: positions down the screen
    if whole.encoder_decoder:
        st.plotly_chart(
            ui.view(batch.rows_figure, "source", narrow, record=whole),
            config={"displayModeBar": False},
            key="batch_source",
        )
    st.plotly_chart(
        ui.view(batch.rows_figure, "decoder", narrow, record=whole),
        config={"displayModeBar": False},
        key="batch_rows",
    )

st.subheader("Generation settings")
st.caption(
    "Every setting generate() ran with and where it came from: the model's generation_config "
    "(its generation_config.json), your choice in the sidebar, or transformers' default."
)
with st.container(key="settings_table"):
    st.dataframe(ui.view(g.settings_table), hide_index=True, width="stretch")
