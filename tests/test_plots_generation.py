"""tracer.plots.generation on hand-made traces (every number known) and on real random-model traces."""

from __future__ import annotations

import html
import re

import numpy as np
import plotly.graph_objects as go
import pytest

import models
import tracer
from tests.tracefactory import make_trace
from tracer.plots import generation as g
from tracer.plots.common import Html

# ---------------------------------------------------------------------------------------------
# Overview


def test_steps_table_has_one_row_per_step_with_what_was_fed_and_chosen():
    tr = make_trace(prompt_len=3, steps=3)
    table = g.steps_table(tr).to_pandas()
    assert table["step"].tolist() == [0, 1, 2]
    assert table["phase"].tolist() == ["prefill", "decode", "decode"]
    assert table["fed"].tolist() == ["w4 w5 w6", "w10", "w11"]
    assert table["fed shape"].tolist() == ["[1, 3]", "[1, 1]", "[1, 1]"]
    assert table["cache length"].tolist() == [3, 4, 5]
    assert table["chosen token"].tolist() == ["w10", "w11", "w12"]
    assert table["probability"].tolist() == [0.5, 0.5, 0.5]


def test_steps_table_marks_the_failed_step():
    tr = make_trace(steps=4, error_at=2)
    table = g.steps_table(tr).to_pandas()
    assert len(table) == 3
    assert table["status"].tolist() == ["ok", "ok", "failed: RuntimeError"]
    assert table["chosen token"].iloc[2] == ""


def test_token_strip_escapes_token_text_and_shows_prompt_then_generated():
    tr = make_trace("encoder-decoder", steps=2)
    strip = g.token_strip_html(tr)
    assert "&lt;/s&gt;" in strip and "</s>" not in strip.replace("</span>", "").replace("</div>", "")
    assert strip.index("w4") < strip.index("w10") < strip.index("w11")


def test_trace_summary_names_the_settings_and_the_error():
    text = g.trace_summary(make_trace(steps=3, error_at=1, do_sample=True))
    assert "sampling (temperature 0.8, seed 7)" in text and "failed at step 1" in text


# ---------------------------------------------------------------------------------------------
# Step replay


def test_call_flow_of_a_decode_step_is_in_call_order_with_shapes():
    tr = make_trace(prompt_len=3, steps=3, layers=2)
    titles = [n.title for n in g.call_flow(tr, 1)]
    assert titles == [
        "generate()",
        "generate.prepare_inputs",
        "forward",
        "decoder.layers.0",
        "decoder.layers.0.self_attn",
        "decoder.layers.1",
        "decoder.layers.1.self_attn",
        "lm_head",
        "generate.choose_token",
        "append",
        "next step",
    ]
    flow = {n.title: n.detail for n in g.call_flow(tr, 1)}
    assert flow["generate.prepare_inputs"] == "sequence [1, 4] → feeds input_ids [1, 1]"
    assert flow["decoder.layers.0.self_attn"] == "hidden [1, 1, 8] → weights [1, 2, 1, 4]; cache 3 → 4"
    assert flow["append"] == "input_ids [1, 4] + w11 → [1, 5]"
    assert g.call_flow(tr, 2)[-1].title == "stop"


def test_call_flow_of_bart_step_0_has_the_encoder_first_then_self_and_cross_attention():
    tr = make_trace("encoder-decoder", layers=1)
    titles = [n.title for n in g.call_flow(tr, 0)]
    assert titles[:5] == [
        "generate()",
        "encoder",
        "encoder.layers.0.self_attn",
        "generate.prepare_inputs",
        "forward",
    ]
    assert titles.index("decoder.layers.0.self_attn") < titles.index("decoder.layers.0.cross_attn")
    assert "encoder" not in [n.title for n in g.call_flow(tr, 1)]


def test_call_flow_of_a_failed_step_ends_with_the_error():
    tr = make_trace(steps=3, error_at=1)
    nodes = g.call_flow(tr, 1)
    assert nodes[-1].title == "error" and nodes[-1].failed
    assert "RuntimeError: boom" in nodes[-1].detail
    assert [n.title for n in nodes if n.failed] == ["decoder.layers.1.self_attn", "error"]


def test_call_flow_html_draws_a_box_per_call_with_its_text_escaped():
    tr = make_trace()
    nodes = g.call_flow(tr, 1)
    page = g.call_flow_html(tr, 1)
    assert isinstance(page, Html)
    assert page.count('<div class="sw-call') == len(nodes)
    assert "<b>decoder.layers.0.self_attn</b>" in page
    assert [n.depth for n in nodes][:3] == [0, 1, 1]  # generate(), then prepare_inputs and forward
    # A box's hover text is its Hugging Face module path; a token such as "<s>" stays text.
    attention = next(n for n in nodes if n.title == "decoder.layers.0.self_attn")
    assert f'title="{html.escape(attention.module)}' in page
    # Every "<" left is one of the builder's own tags: recorded text (tokens such as "<s>") is escaped.
    body = page[page.index("</style>") + len("</style>") :]
    assert not re.sub(r"</?(div|b|span)( [^<>]*)?>", "", body).count("<")


def test_prepare_inputs_changes_show_the_input_shrinking_to_one_token():
    tr = make_trace(prompt_len=7, steps=3)
    assert g.prepare_inputs_changes(tr, 0) == []
    assert "input_ids [1, 7] → [1, 1]" in g.prepare_inputs_changes(tr, 1)
    table = g.prepare_inputs_table(tr, 1).to_pandas().set_index("argument")
    assert table.loc["input_ids", "previous step"] == "int64[1, 7]"
    assert table.loc["input_ids", "this step"] == "int64[1, 1]"
    assert bool(table.loc["input_ids", "changed"]) and not bool(table.loc["use_cache", "changed"])
    off = make_trace(prompt_len=7, steps=3, use_cache=False)
    assert "input_ids [1, 7] → [1, 8]" in g.prepare_inputs_changes(off, 1)


def test_topk_figure_highlights_the_chosen_token():
    tr = make_trace()
    bar = g.topk_figure(tr, 1).data[0]
    assert len(bar.y) == 10 and bar.y[0] == "1. w11"
    assert bar.marker.color[0] == g.CHOSEN_COLOR and set(bar.marker.color[1:]) == {g.OTHER_COLOR}


def test_step_story_explains_the_cache():
    on = make_trace(prompt_len=7, steps=3)
    assert "prefill" in g.step_story(on, 0)
    story = g.step_story(on, 1)
    assert "already holds 7 positions, so only the new token **w10** was fed" in story
    assert "attended to 8 keys" in story and "cache holds 8 positions" in story
    off = make_trace(prompt_len=7, steps=3, use_cache=False)
    assert "cache is **off**, so all 8 tokens" in g.step_story(off, 1)
    assert "generate() stops here: max_new_tokens=3 reached" in g.step_story(on, 2)


def test_step_story_of_bart_and_of_a_failed_step():
    bart = make_trace("encoder-decoder", prompt_len=5)
    story = g.step_story(bart, 0)
    assert "encoder** read the 5 source tokens once" in story and "stays fixed" in story
    failed = make_trace(steps=3, error_at=1)
    assert "**This step failed** in `decoder.layers.1.self_attn`: RuntimeError: boom" in g.step_story(
        failed, 1
    )


def test_step_story_of_sampling_says_seed_and_rank():
    tr = make_trace(do_sample=True)
    assert "temperature 0.8 (seed 7) drew **w10** (50.0%), the #1 most likely" in g.step_story(tr, 0)


# ---------------------------------------------------------------------------------------------
# Attention


def test_attention_figure_is_the_steps_rows_with_tokens_on_both_axes():
    tr = make_trace(prompt_len=3, steps=3, heads=2)
    fig = g.attention_figure(tr, 2, "self", 0, 1)
    heat = fig.data[0]
    assert isinstance(heat, go.Heatmap)
    np.testing.assert_array_equal(np.asarray(heat.z), tr.steps[2].attention("self", 0)[1])
    assert list(fig.layout.yaxis.ticktext) == ["4: w11 → w12"]  # decode step 2: fed w11, wrote w12
    assert list(fig.layout.xaxis.ticktext) == ["0: w4", "1: w5", "2: w6", "3: w10", "4: w11"]
    assert "weight %{z" in heat.hovertemplate and "customdata[0]" in heat.hovertemplate
    assert heat.customdata[0][3][1] == "3: w10"


def test_repeated_tokens_keep_their_own_column():
    tr = make_trace(prompt_len=3, steps=1)
    tr.token_texts.update({4: "the", 6: "the"})  # two "the": a categorical axis would merge them
    fig = g.attention_figure(tr, 0, "self", 0, 0)
    assert list(fig.data[0].x) == [0, 1, 2]
    assert list(fig.layout.xaxis.ticktext) == ["0: the", "1: w5", "2: the"]


def test_attention_heads_figure_has_one_heatmap_per_head():
    tr = make_trace(heads=6)
    fig = g.attention_heads_figure(tr, 0, "self", 1)
    assert len(fig.data) == 6
    assert [a.text for a in fig.layout.annotations][:6] == [f"head {h}" for h in range(6)]


def test_attention_figure_explains_what_is_missing():
    tr = make_trace("encoder-decoder")
    fig = g.attention_figure(tr, 1, "encoder", 0, 0)
    assert "choose step 0" in fig.layout.annotations[0].text
    failed = make_trace(steps=3, error_at=1)
    text = g.attention_figure(failed, 1, "self", 1, 0).layout.annotations[0].text
    assert "raised before returning weights" in text


@pytest.mark.parametrize("use_cache", [True, False])
def test_stitched_self_attention_is_lower_triangular_with_one_row_per_position(use_cache):
    tr = make_trace(prompt_len=3, steps=4, heads=2, use_cache=use_cache)
    matrix, queries, keys, row_step = g.stitched_attention(tr, "self", 0)
    t_len = 3 + 4 - 1  # the last chosen token is never fed
    assert matrix.shape == (2, t_len, t_len)
    assert np.isnan(matrix[:, np.triu_indices(t_len, 1)[0], np.triu_indices(t_len, 1)[1]]).all()
    lower = np.tril_indices(t_len)
    assert not np.isnan(matrix[:, lower[0], lower[1]]).any()
    np.testing.assert_allclose(np.nansum(matrix, axis=-1), 1.0, rtol=1e-6)
    # Keys are positions; a query row also says what it wrote (prompt rows 0-1 wrote nothing).
    assert queries[:2] == keys[:2] and keys[3] == "3: w10" and queries[3] == "3: w10 → w11"
    assert row_step == ([0, 0, 0, 1, 2, 3] if use_cache else [3] * t_len)


def test_stitched_cross_attention_has_the_source_on_the_key_axis():
    tr = make_trace("encoder-decoder", prompt_len=5, steps=3)
    matrix, queries, keys, row_step = g.stitched_attention(tr, "cross", 1)
    assert matrix.shape == (2, 3, 5)
    assert keys == [f"{i}: w{4 + i}" for i in range(5)]
    assert queries == ["0: </s> → w10", "1: w10 → w11", "2: w11 → w12"]
    assert row_step == [0, 1, 2]
    enc, eq, ek, _ = g.stitched_attention(tr, "encoder", 0)
    assert enc.shape == (2, 5, 5) and eq == ek


def test_stitched_figure_outlines_the_chosen_steps_rows():
    tr = make_trace(prompt_len=3, steps=3)
    fig = g.stitched_attention_figure(tr, "self", 0, 0, highlight_step=2)
    (rect,) = fig.layout.shapes
    assert (rect.y0, rect.y1) == (3.5, 4.5)
    fig0 = g.stitched_attention_figure(tr, "self", 0, 0, highlight_step=0)
    assert (fig0.layout.shapes[0].y0, fig0.layout.shapes[0].y1) == (-0.5, 2.5)


# ---------------------------------------------------------------------------------------------
# KV cache


def test_cache_growth_bart_cross_fixed_and_self_growing():
    tr = make_trace("encoder-decoder", prompt_len=5, steps=4, layers=2)
    table = g.cache_table(tr)
    self0 = table[(table.kind == "self") & (table.layer == 0)]
    cross0 = table[(table.kind == "cross") & (table.layer == 0)]
    assert self0["seq_len"].tolist() == [1, 2, 3, 4]
    assert cross0["seq_len"].tolist() == [5, 5, 5, 5]
    fig = g.cache_growth_figure(tr)
    # Both layers grew alike: one line per kind, named after both, the cross line below the top.
    legend = [t.name for t in fig.data if t.showlegend is not False]
    assert legend == ["layers 0, 1 cross", "layers 0, 1 self"]
    assert fig.layout.yaxis.range[1] > 5
    shapes = g.cache_shapes_table(tr, 2).to_pandas().set_index(["layer", "kind"])
    assert shapes.loc[(0, "self"), "key shape"] == "[1, 2, 3, 4]"
    assert shapes.loc[(0, "self"), "grew by"] == 1 and shapes.loc[(0, "cross"), "grew by"] == 0


def test_cache_growth_with_the_cache_off_says_so():
    fig = g.cache_growth_figure(make_trace(use_cache=False))
    assert "cache is off" in fig.layout.annotations[0].text


def test_cache_on_off_counts_one_token_vs_all_so_far():
    on = make_trace(prompt_len=7, steps=4)
    table = g.cache_on_off_table(on)
    assert table["cache on"].tolist() == [7, 1, 1, 1]
    assert table["cache off"].tolist() == [7, 8, 9, 10]
    assert table["cache on, total"].iloc[-1] == 10 and table["cache off, total"].iloc[-1] == 34
    off = make_trace(prompt_len=7, steps=4, use_cache=False)
    assert g.cache_on_off_table(off).equals(table)
    assert g.cache_on_off_table(on, other=off).equals(table)
    assert "10 tokens with the cache on and 34 with it off" in g.cache_on_off_summary(on)


# ---------------------------------------------------------------------------------------------
# Real traces of the random models


@pytest.fixture(scope="module")
def real_traces():
    out = {}
    for name in ("random-llama", "random-bart"):
        model, tok = models.load(name)
        for use_cache in (True, False):
            out[name, use_cache] = tracer.trace_generation(
                model, tok, "the cat sat on the mat", max_new_tokens=4, use_cache=use_cache
            )
    return out


def test_every_view_builds_for_real_traces(real_traces):
    for tr in real_traces.values():
        assert len(g.steps_table(tr)) == len(tr.steps)
        for i in range(len(tr.steps)):
            g.call_flow_html(tr, i)
            g.topk_figure(tr, i)
            g.prepare_inputs_table(tr, i)
            assert g.step_story(tr, i)
            for kind in g.attention_kinds(tr):
                g.attention_figure(tr, i, kind, 0, 0)
                g.attention_heads_figure(tr, i, kind, 0)
        g.cache_growth_figure(tr)
        g.cache_on_off_figure(tr)


@pytest.mark.parametrize("name", ["random-llama", "random-bart"])
def test_stitched_cached_attention_equals_the_uncached_full_matrix(real_traces, name):
    on, off = real_traces[name, True], real_traces[name, False]
    for kind in ("self", "cross") if name == "random-bart" else ("self",):
        stitched, *_ = g.stitched_attention(on, kind, 1)
        full = off.steps[-1].attention(kind, 1)  # the uncached last step recomputes every row
        np.testing.assert_allclose(np.nan_to_num(stitched), full, atol=1e-5)


def test_real_cache_on_off_table_uses_the_other_trace(real_traces):
    on, off = real_traces["random-llama", True], real_traces["random-llama", False]
    table = g.cache_on_off_table(on, off)
    assert table["cache on"].tolist() == [7, 1, 1, 1]
    assert table["cache off"].tolist() == [7, 8, 9, 10]
