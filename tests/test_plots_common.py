"""The pieces every plot module shares (tracer/plots/common.py): token labels, shape text, heatmaps."""

from __future__ import annotations

import numpy as np
import pytest

from tracer.plots import common
from tracer.plots import doctor as d
from tracer.plots import generation as g
from tracer.plots import training as t
from tracer.trace import TensorInfo


class Vocab:
    """A record's token texts, the only thing token_label reads."""

    def token_text(self, token_id: int) -> str:
        return {1: "<s>", 2: " the", 3: ""}.get(token_id, f"w{token_id}")


def test_tokens_are_made_visible_and_safe_for_plotly():
    assert common.show_token("cat") == "cat"
    assert common.show_token(" the") == "' the'"  # a leading space shows
    assert common.show_token("") == "''"
    assert [common.token_label(Vocab(), i) for i in (1, 2, 3, 7)] == ["<s>", "' the'", "''", "w7"]
    assert common.plot_text("0:<s>") == "0:&lt;s&gt;"  # "<s>" would strike the rest through


def test_shapes_and_values_as_text():
    ids = TensorInfo((1, 2), "int64", (5, 6))
    hidden = TensorInfo((1, 7, 16), "float32", None)
    assert common.shape_text((1, 7)) == "[1, 7]"
    assert common.shape_text(None) == "" and common.shape_text(None, "-") == "-"
    assert common.shape_of(hidden) == "[1, 7, 16]" and common.shape_of(None) == "None"
    assert common.value_text(hidden) == "float32[1, 7, 16]"
    assert common.value_text(None) == "None" and common.value_text(None, missing="—") == "—"
    assert common.value_text(ids, numbers=8) == "[1, 2] [5, 6]"  # few enough values: show them
    assert common.value_text(ids, numbers=1) == "int64[1, 2]"
    assert common.value_text(hidden, numbers=8, spaced=True) == "float32 [1, 7, 16]"
    assert common.value_text("a text") == "a text"


def test_the_heatmap_escapes_its_labels_and_keeps_numeric_axes():
    heat = common.attention_heatmap(np.eye(2), ["0:<s>", "1: a"], ["0:<s>", "1: a"])
    assert list(heat.x) == [0, 1] and list(heat.y) == [0, 1]  # two equal labels stay two rows
    assert heat.customdata[1][0].tolist() == ["1: a", "0:&lt;s&gt;"]
    assert (heat.zmin, heat.zmax, heat.hoverongaps) == (0, 1, False)


@pytest.mark.parametrize(
    ("max_ticks", "shown"), [(None, [0, 1, 2, 3, 4]), (2, [0, 3]), (40, [0, 1, 2, 3, 4])]
)
def test_tick_labels_show_every_label_or_every_nth(max_ticks, shown):
    ticks = common.tick_labels(["<a>", "b", "c", "d", "e"], max_ticks)
    assert ticks["tickvals"] == shown
    assert ticks["ticktext"][0] == "&lt;a&gt;"


def test_the_message_figure_says_why_and_is_escaped():
    fig = common.message_figure("no <s> here", height=150)
    assert fig.layout.annotations[0].text == "no &lt;s&gt; here"
    assert fig.layout.height == 150 and fig.layout.xaxis.visible is False


def test_every_plot_module_uses_the_one_copy():
    # The pages call these through their own module; each is the shared function, not a copy.
    assert g.show_token is common.show_token and t.token_label is common.token_label
    assert g.attention_kinds is t.attention_kinds is common.attention_kinds
    assert g.KIND_TITLES is common.KIND_TITLES and g.OTHER_COLOR == t.OTHER_COLOR == common.OTHER_COLOR
    assert t.KIND_TITLES["cross"] == common.KIND_TITLES["cross"]
    copies = {"_esc", "_heatmap", "_axis", "_axis_ticks", "_empty_figure", "_message_figure", "_shape_of"}
    for module in (g, t, d):
        assert not copies & set(vars(module)), module.__name__
