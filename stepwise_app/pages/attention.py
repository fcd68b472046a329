"""Attention: heatmaps of one head or all heads of a layer at a step, and the whole run stitched."""

import streamlit as st

from stepwise_app import ui
from tracer.plots import batch
from tracer.plots import generation as g

_ = ui.gettext()  # this run's language, bound now (format_funcs run later too)

st.title(_("Attention"))
whole = ui.require_trace()
tr = ui.row_picker(whole)  # a batch's row or a beam hypothesis
padded = tr.prompt_mask is not None and not all(tr.prompt_mask)  # pads: drawn as masked keys
ui.show_trace_error(tr)


# A fragment: the step picker and the attention pickers rerun only the views below, not the
# sidebar and the rest of the app, so a class stepping together keeps the server's work per click small.
@st.fragment
def attention_view() -> None:
    step = ui.step_picker(tr)
    ui.update_link()  # the app updates the link on a full run only

    kinds = g.attention_kinds(tr)
    kind_col, layer_col, head_col = st.columns([3, 1, 1])
    with kind_col:
        kind = ui.choice(
            st.radio,
            _("Attention"),
            kinds,
            "kind",
            format_func=lambda k: _(g.KIND_TITLES[k]),
            horizontal=True,
        )
    with layer_col:
        layer = ui.choice(st.selectbox, _("Layer"), list(range(g.kind_layers(tr, kind))), "layer")
    with head_col:
        head = ui.choice(
            st.selectbox,
            _("Head"),
            ["all", *range(g.num_heads(tr, kind))],
            "head",
            format_func=lambda h: _("all heads") if h == "all" else _("head {head}").format(head=h),
        )

    narrow = ui.narrow_screen()  # a phone: one head per row, fewer labels
    if padded:
        st.plotly_chart(
            ui.view(batch.attention_figure, step, kind, layer, head, narrow),
            config={"displayModeBar": False},
            key="attention_heads" if head == "all" else "attention_head",
        )
    elif head == "all":
        st.plotly_chart(
            ui.view(g.attention_heads_figure, step, kind, layer, narrow),
            config={"displayModeBar": False},
            key="attention_heads",
        )
    else:
        st.plotly_chart(
            ui.view(g.attention_figure, step, kind, layer, head),
            config={"displayModeBar": False},
            key="attention_head",
        )
    if head == "all" and kind != "encoder" and step > 0 and tr.settings.get("use_cache", True):
        st.caption(
            _(
                "One row per head: with the cache on, a decode step computes a single query, the newest "
                "token, and each row is the weight that head gives every key; each row sums to 1."
            )
        )
    else:
        st.caption(
            _(
                "Rows are the queries this step computed, columns the keys they attend to; each row sums "
                "to 1. With the cache on, a decode step computes a single row: the newest token looking back."
            )
        )

    st.subheader(_("The whole run"))
    stitched_head = 0 if head == "all" else head
    st.plotly_chart(
        ui.view(
            batch.stitched_attention_figure if padded else g.stitched_attention_figure,
            kind,
            layer,
            stitched_head,
            step,
            narrow,
        ),
        config={"displayModeBar": False},
        key="attention_run",
    )
    st.caption(
        _(
            "Head {head}: every step's rows in one matrix, the current step's outlined. Blank cells "
            "are masked keys: later tokens (computed, then given weight 0 by the causal mask) and, on a "
            "sliding-window layer, positions the window has left behind. Row labels say what each "
            "position's row wrote (fed → chosen)."
        ).format(head=stitched_head)
    )

    if padded:
        st.caption(
            _(
                "Grey crossed cells are masked keys: this row's pads. The attention mask is 0 there, so they "
                "get no weight at all (not a small one); hover one to see it."
            )
        )
        if tr.encoder_decoder:
            st.subheader(_("The source's padding mask, from the encoder to cross-attention"))
            st.markdown(ui.view(batch.encoder_mask_story, step, record=whole))
            st.plotly_chart(
                ui.view(batch.encoder_mask_figure, step, layer, stitched_head, narrow),
                config={"displayModeBar": False},
                key="encoder_mask",
            )


attention_view()
