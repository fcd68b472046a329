"""The app on a padded batch and on beam search, through AppTest: the sidebar's batch toggle and
beam settings reach trace_generation, every page renders with a row (hypothesis) picker, the
pages that show all rows show them, masked keys are drawn as masked, and the link keeps &row=."""

from __future__ import annotations

import json

import pytest

from tests.test_app import assert_clean, charts, messages, navigation_app, new_app, on_page  # noqa: F401
from tests.test_app_links import open_link

ROW_PAGES = ("pages/overview.py", "pages/step_replay.py", "pages/attention.py", "pages/kv_cache.py")
ALL_PAGES = (*ROW_PAGES, "pages/beams.py")


def run_batch(at, model: str, *, beams: int | None = None, tokens: int = 3, side: str | None = None):
    at.sidebar.selectbox(key="model").set_value(model).run()
    at.sidebar.toggle(key="batch").set_value(True).run()  # a second example joins the prompt
    if side is not None:
        at.sidebar.radio(key="padding_side").set_value(side).run()
    if beams is not None:
        at.sidebar.radio(key="decoding").set_value("beam search").run()
        at.sidebar.number_input(key="num_beams").set_value(beams).run()
        at.sidebar.number_input(key="num_return_sequences").set_value(2).run()
    at.sidebar.slider(key="max_new_tokens").set_value(tokens)
    return at.sidebar.button(key="run").click().run()


def trace(at):
    return at.session_state["traces"][at.session_state["trace_id"]]


def link(at) -> dict[str, str]:
    return {name: str(value) for name, value in at.query_params.items()}


def masked_cells(at) -> int:
    """How many cells the page's charts draw as masked (the grey layer over the heatmaps)."""
    total = 0
    for chart in charts(at):
        for data in chart["data"]:
            if data.get("name") == "masked":
                total += sum(v is not None for row in data["z"] for v in row)
    return total


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-bart"])
def test_a_batch_with_beams_shows_on_every_page_with_a_row_picker(model):
    at = run_batch(new_app(), model, beams=2)
    assert_clean(at)
    tr = trace(at)
    assert tr.batch_size == 2 and tr.num_beams == 2 and tr.num_returned == 4
    assert tr.batch.prompt_texts == at.sidebar.text_area(key="prompt").value.splitlines()
    for page in ALL_PAGES:
        on_page(at, page)
        assert_clean(at)
        assert not at.error, messages(at.error)
        picker = at.selectbox(key="_w_row")
        assert len(picker.options) == 4 and "hypothesis" in picker.options[0]
    # Every attention kind of the picked hypothesis draws (BART's encoder ran once per prompt).
    on_page(at, "pages/attention.py")
    at.selectbox(key="_w_row").set_value(3).run()
    for kind in ("self", "cross", "encoder") if tr.encoder_decoder else ("self",):
        at.radio(key="_w_kind").set_value(kind).run()
        assert_clean(at)
        assert charts(at)
    # The step replay of a hypothesis that is not its prompt's best: its beam's continuations.
    on_page(at, "pages/step_replay.py")
    assert_clean(at)
    topk = next(c for c in charts(at) if "next-token distribution" in str(c["layout"].get("title")))
    hyp = tr.hypothesis(3)
    step = hyp.steps[at.session_state["step"]]
    assert topk["data"][0]["x"] == [t.prob for t in step.topk] and step.topk
    on_page(at, "pages/beams.py")
    # The Beams page follows the picked hypothesis: prompt 1's tree, its second hypothesis.
    at.selectbox(key="_w_row").set_value(3).run()
    assert_clean(at)
    assert link(at)["row"] == "3"
    tree = next(c for c in charts(at) if "Beam tree" in c["layout"]["title"]["text"])
    stars = next(d for d in tree["data"] if d.get("name") == "returned")
    assert len(stars["x"]) == 2  # both of the prompt's returned hypotheses end in the tree
    hypotheses = at.dataframe[0].value
    expected = [round(s, 4) for s in tr.beam_result.sequences_scores[2:]]
    assert hypotheses.iloc[:, -1].tolist() == expected


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-bart"])
def test_a_padded_batch_shows_its_rows_side_by_side_and_its_pads_as_masked_keys(model):
    side = "left" if model == "tiny-llama" else "right"
    at = run_batch(new_app(), model, side=side)
    assert_clean(at)
    tr = trace(at)
    assert tr.batch.padding_side == side and tr.beam_result is None
    padded_row = next(r for r in range(2) if 0 in tr.batch.attention_mask[r])

    on_page(at, "pages/overview.py")
    names = [json.dumps(c["layout"]["title"]) for c in charts(at)]
    assert any("side by side" in n for n in names)
    assert len(at.selectbox(key="_w_row").options) == 2

    on_page(at, "pages/step_replay.py")
    rows = at.dataframe[0].value  # every row at this step, before the step's own tables
    assert len(rows) == 2 and "position_ids" in rows.columns

    on_page(at, "pages/attention.py")
    kind = "self" if model == "tiny-llama" else "encoder"
    at.radio(key="_w_kind").set_value(kind).run()
    at.selectbox(key="_w_row").set_value(padded_row).run()
    assert_clean(at)
    assert masked_cells(at) > 0
    if model == "tiny-bart":
        assert "cross-attention" in messages(at.markdown)
        assert any(c["layout"]["title"]["text"].endswith("masked keys in both") for c in charts(at))
    at.selectbox(key="_w_row").set_value(1 - padded_row).run()
    assert masked_cells(at) == 0  # the longest row has no pad

    # A reload (or a student's link) comes back to the same row, and to the whole batch's prompts.
    student = open_link(link(at))
    on_page(student, "pages/attention.py")
    assert_clean(student)
    assert student.selectbox(key="_w_row").value == 1 - padded_row
    assert student.sidebar.toggle(key="batch").value
    assert student.sidebar.text_area(key="prompt").value.splitlines() == tr.batch.prompt_texts


def test_one_prompt_shows_as_before_and_the_beams_page_says_how_to_get_beams():
    at = new_app()
    at.sidebar.slider(key="max_new_tokens").set_value(2)
    at = at.sidebar.button(key="run").click().run()
    for page in ROW_PAGES:
        on_page(at, page)
        assert_clean(at)
        assert not [s for s in at.selectbox if s.key == "_w_row"]
    on_page(at, "pages/beams.py")
    assert "not a beam search" in messages(at.info)
    assert "row" not in link(at)


def test_the_beam_settings_default_to_the_checkpoints_generation_config(tmp_path):
    from stepwise_app import ui

    (tmp_path / "generation_config.json").write_text(
        json.dumps({"num_beams": 4, "length_penalty": 2.0, "early_stopping": "never"})
    )
    at = new_app()
    at.sidebar.radio(key="decoding").set_value("beam search").run()
    assert at.sidebar.number_input(key="num_beams").value == 2  # tiny-llama's config has no beams
    assert at.sidebar.number_input(key="length_penalty").value == 1.0
    at.sidebar.selectbox(key="model").set_value(ui.LOCAL_FOLDER).run()
    at.sidebar.text_input(key="folder").input(str(tmp_path)).run()
    assert at.sidebar.number_input(key="num_beams").value == 4
    assert at.sidebar.number_input(key="length_penalty").value == 2.0
    assert at.sidebar.selectbox(key="early_stopping").value == "never"


def test_the_batch_and_beam_views_speak_chinese():
    at = open_link({"lang": "zh_CN"})
    assert at.sidebar.toggle(key="batch").label == "批次：多个提示"
    at.sidebar.radio(key="decoding").set_value("beam search").run()
    at.sidebar.slider(key="max_new_tokens").set_value(2)
    at = at.sidebar.button(key="run").click().run()
    assert_clean(at)
    on_page(at, "pages/beams.py")
    assert_clean(at)
    assert at.title[0].value == "束搜索"
    assert "束搜索树" in json.dumps([c["layout"]["title"] for c in charts(at)], ensure_ascii=False)
    assert "对数概率之和" in " ".join(at.dataframe[1].value.columns)  # the step's candidates
