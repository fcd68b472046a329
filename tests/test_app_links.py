"""Keeping what the user has: links (URL query parameters) that bring back the model, the trace
and the view; traces behind links kept on the server within bounds; a stale link says so; a
typed prompt survives a change of model. Through AppTest, as tests/test_app.py."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from stepwise_app import ui
from tests.test_app import PAGES, assert_clean, messages, navigation_app, new_app, on_page, run_trace  # noqa: F401
from tests.tracefactory import make_trace


def open_link(params: dict[str, str]) -> AppTest:
    """A new browser session opening the app at a URL with these query parameters."""
    at = AppTest.from_file("../stepwise_app/app.py", default_timeout=120)
    at.query_params.update(params)
    return at.run()


def test_the_url_keeps_the_model_the_trace_and_the_view_and_a_new_session_restores_them():
    at = run_trace(new_app(), model="random-bart", prompt="a small bird sat in the old tree", tokens=4)
    on_page(at, "pages/attention.py")
    at.slider(key="_w_step").set_value(2).run()
    at.selectbox(key="_w_layer").set_value(1).run()
    at.selectbox(key="_w_head").set_value(3).run()
    at.radio(key="_w_kind").set_value("cross").run()
    assert_clean(at)
    link = {name: str(value) for name, value in at.query_params.items()}
    trace_id = at.session_state["trace_id"]
    assert link == {
        "model": "random-bart",
        "trace": trace_id,
        "step": "2",
        "kind": "cross",
        "layer": "1",
        "head": "3",
    }

    student = open_link(link)  # a reload, or a student opening the teacher's link
    on_page(student, "pages/attention.py")
    assert_clean(student)
    assert student.session_state["trace_id"] == trace_id
    assert student.sidebar.selectbox(key="model").value == "random-bart"
    assert student.sidebar.text_area(key="prompt").value == "a small bird sat in the old tree"
    assert student.slider(key="_w_step").value == 2
    assert student.selectbox(key="_w_layer").value == 1
    assert student.selectbox(key="_w_head").value == 3
    assert student.radio(key="_w_kind").value == "cross"
    assert "Opened the linked trace" in messages(student.sidebar.success)


def test_a_link_to_a_trace_the_server_no_longer_keeps_says_so():
    at = open_link({"model": "random-llama", "trace": "0123456789ab", "step": "3"})
    assert_clean(at)
    assert "no longer on the server" in messages(at.sidebar.warning)
    assert at.sidebar.selectbox(key="model").value == "random-llama"
    assert "No trace yet" in messages(at.info)


def test_a_garbled_link_falls_back_to_the_defaults():
    at = open_link({"model": "no-such-model", "step": "x", "head": "many"})
    assert_clean(at)
    assert at.sidebar.selectbox(key="model").value == ui.default_model()


def test_the_trace_shelf_keeps_the_newest_traces_within_its_count_and_bytes():
    traces = [make_trace(steps=2) for _ in range(4)]
    size = ui.TraceShelf.size(traces[0])
    assert size > 0
    by_count = ui.TraceShelf(max_traces=2, max_bytes=100 * size)
    for i, tr in enumerate(traces):
        by_count.put(f"t{i}", tr)
    assert len(by_count) == 2 and by_count.get("t0") is None and by_count.get("t3") is traces[3]

    by_bytes = ui.TraceShelf(max_traces=100, max_bytes=3 * size)
    for i, tr in enumerate(traces[:3]):
        by_bytes.put(f"t{i}", tr)
    assert by_bytes.get("t0") is traces[0]  # used again: now the newest, kept longest
    by_bytes.put("t3", traces[3])
    assert len(by_bytes) == 3 and by_bytes.nbytes <= 3 * size
    assert by_bytes.get("t1") is None and by_bytes.get("t0") is traces[0]


def test_switching_model_keeps_a_typed_prompt_and_swaps_an_example():
    at = new_app()
    at.sidebar.text_area(key="prompt").input("my own words for the model").run()
    at.sidebar.selectbox(key="model").set_value("random-bart").run()
    assert at.sidebar.text_area(key="prompt").value == "my own words for the model"

    at.sidebar.text_area(key="prompt").input(ui.EXAMPLES["random-bart"][0]).run()
    at.sidebar.selectbox(key="model").set_value("random-llama").run()
    assert at.sidebar.text_area(key="prompt").value == ui.EXAMPLES["random-llama"][0]
