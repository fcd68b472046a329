"""The app through streamlit.testing.v1.AppTest: every page, the sidebar, steps, layers and heads,
BART, uploaded and failed traces, each kind of bad input, and two traces at once on one model."""

from __future__ import annotations

import json
import threading

import pytest
from streamlit.runtime.pages_manager import PagesManager
from streamlit.testing.v1 import AppTest

import models
import tracer
from models import scenarios
from stepwise_app import ui
from tests.tracefactory import make_trace
from tracer.plots import training as training_plots

PAGES = ("pages/overview.py", "pages/step_replay.py", "pages/attention.py", "pages/kv_cache.py")


@pytest.fixture(autouse=True)
def navigation_app(monkeypatch):
    # AppTest resets PagesManager.uses_pages_directory before every run; with a pages/ folder
    # next to app.py it then runs the page file alone (Streamlit's old multipage mode) from the
    # second run on, skipping app.py's st.navigation and sidebar. The real server keeps the flag
    # False once st.navigation has run (tests/test_browser.py checks the real thing).
    original = PagesManager.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", init)


def new_app() -> AppTest:
    return AppTest.from_file("../stepwise_app/app.py", default_timeout=120).run()


def run_trace(
    at: AppTest, model: str = "random-llama", prompt: str | None = None, tokens: int = 3
) -> AppTest:
    at.sidebar.selectbox(key="model").set_value(model).run()
    if prompt is not None:
        at.sidebar.text_area(key="prompt").input(prompt)
    at.sidebar.slider(key="max_new_tokens").set_value(tokens)
    return at.sidebar.button(key="run").click().run()


def upload(at: AppTest, name: str, data: bytes) -> AppTest:
    at.sidebar.file_uploader(key="upload").upload(name, data)
    return at.run()


def on_page(at: AppTest, page: str) -> AppTest:
    return at.switch_page(page).run()


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def charts(at: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def chart_titles(at: AppTest) -> list[str]:
    return [(c["layout"].get("title") or {}).get("text", "") for c in charts(at)]


def messages(elements) -> str:
    return " ".join(str(e.value) for e in elements)


# ---------------------------------------------------------------------------------------------
# Pages and the sidebar


def test_every_page_without_a_trace_says_how_to_get_one():
    at = new_app()
    assert at.sidebar.selectbox(key="model").value == ui.default_model()
    for page in PAGES:
        on_page(at, page)
        assert_clean(at)
        assert "No trace yet" in messages(at.info)


def test_a_trace_run_through_the_sidebar_shows_on_every_page():
    at = run_trace(new_app())
    assert_clean(at)
    assert "Traced 3 steps." in messages(at.sidebar.success)
    overview = at.dataframe[0].value
    assert overview["step"].tolist() == [0, 1, 2] and overview["fed shape"].tolist()[1] == "[1, 1]"
    for page in PAGES:
        on_page(at, page)
        assert_clean(at)
        assert not at.error
        assert charts(at) or page == "pages/overview.py"


def test_moving_between_steps_redraws_the_step():
    at = on_page(run_trace(new_app(), tokens=4), "pages/step_replay.py")
    assert "prefill" in at.markdown[0].value
    at.button(key="next_step").click().run()
    assert at.session_state["step"] == 1
    assert "so only the new token" in messages(at.markdown)
    assert "input_ids [1, 7] → [1, 1]" in messages(at.markdown)
    at.slider(key="_w_step").set_value(3).run()
    assert at.session_state["step"] == 3 and "generate() stops here" in messages(at.markdown)
    at.button(key="prev_step").click().run()
    assert at.session_state["step"] == 2
    assert "Step 2: next-token distribution (top 10)" in chart_titles(at)
    # The step is shared: the attention page opens on it.
    on_page(at, "pages/attention.py")
    assert at.slider(key="_w_step").value == 2
    assert_clean(at)


def test_changing_layer_and_head_on_the_attention_page():
    at = on_page(run_trace(new_app()), "pages/attention.py")
    assert chart_titles(at)[0] == "Step 0, layer 0, all heads: decoder self-attention"
    at.selectbox(key="_w_layer").set_value(1).run()
    at.selectbox(key="_w_head").set_value(2).run()
    titles = chart_titles(at)
    assert titles[0] == "Step 0, layer 1, head 2: decoder self-attention"
    assert titles[1].startswith("Layer 1, head 2: decoder self-attention over the whole run")
    heatmap = charts(at)[0]["data"][0]
    assert heatmap["type"] == "heatmap" and heatmap["z"]["shape"] == "7, 7"  # step 0: the prompt's 7 queries
    assert_clean(at)


def test_a_bart_trace_has_cross_and_encoder_attention_and_a_fixed_cross_cache():
    at = on_page(run_trace(new_app(), model="random-bart"), "pages/attention.py")
    assert at.radio(key="_w_kind").options == [
        "decoder self-attention",
        "cross-attention (decoder → encoder)",
        "encoder self-attention",
    ]
    at.radio(key="_w_kind").set_value("cross").run()
    assert "cross-attention" in chart_titles(at)[0]
    at.radio(key="_w_kind").set_value("encoder").run()
    assert "encoder self-attention" in chart_titles(at)[0]
    on_page(at, "pages/step_replay.py")
    assert "encoder** read the" in at.markdown[0].value
    on_page(at, "pages/kv_cache.py")
    assert "fixed after" in messages(at.caption)
    assert_clean(at)


def test_cache_on_vs_off_uses_both_traces_when_the_session_has_them():
    at = run_trace(new_app(), tokens=3)
    at.sidebar.toggle(key="use_cache").set_value(False)
    at.sidebar.button(key="run").click().run()
    on_page(at, "pages/kv_cache.py")
    assert "Both columns were recorded" in messages(at.caption)
    assert "Nothing is cached after this step" in messages(at.info)
    assert "10 with it off" not in messages(at.markdown)  # 7 prompt tokens, 3 steps: 7+8+9 = 24
    assert "fed 9 tokens with the cache on and 24 with it off" in messages(at.markdown)
    assert_clean(at)


# ---------------------------------------------------------------------------------------------
# Trace files


def test_an_uploaded_trace_replays_without_a_model():
    tr = make_trace("encoder-decoder", steps=3)
    at = upload(new_app(), "mine.trace", tr.to_bytes())
    assert "Opened mine.trace: 3 steps of hand-made encoder-decoder." in messages(at.sidebar.success)
    assert "hand-made encoder-decoder" in messages(at.caption)
    for page in PAGES:
        on_page(at, page)
        assert_clean(at)
    assert at.sidebar.get("download_button")


def test_a_trace_that_ended_in_a_model_error_shows_its_steps_then_the_error():
    tr = make_trace(steps=4, error_at=2)
    at = upload(new_app(), "failed.trace", tr.to_bytes())
    assert "model raised at step 2" in messages(at.error)
    assert at.dataframe[0].value["status"].tolist() == ["ok", "ok", "failed: RuntimeError"]
    on_page(at, "pages/step_replay.py")
    at.slider(key="_w_step").set_value(2).run()
    assert "**This step failed** in `decoder.layers.1.self_attn`: RuntimeError: boom" in messages(at.markdown)
    on_page(at, "pages/attention.py")
    at.selectbox(key="_w_layer").set_value(1).run()
    assert_clean(at)


def test_a_trace_of_a_model_that_raises_is_kept_by_the_app(monkeypatch):
    model, _ = ui.load_model("random-llama")
    calls = {"n": 0}

    def fail_on_third_call(module, args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("mlp exploded")

    handle = model.model.layers[1].mlp.register_forward_pre_hook(fail_on_third_call)
    try:
        at = run_trace(new_app(), tokens=4)
    finally:
        handle.remove()
    assert "raised at step 2" in messages(at.sidebar.warning)
    assert "mlp exploded" in messages(at.error)
    assert len(at.dataframe[0].value) == 3
    assert_clean(at)


def test_a_damaged_trace_file_is_a_clear_error():
    at = upload(new_app(), "broken.trace", b"this is not a trace at all")
    assert "broken.trace is not a Stepwise trace file" in messages(at.sidebar.error)
    good = make_trace().to_bytes()
    at = upload(new_app(), "cut.trace", good[: len(good) // 2])
    assert "cut.trace" in messages(at.sidebar.error)
    assert_clean(at)


def test_an_uploaded_training_trace_and_trainer_step_show_on_the_training_page():
    model, tok = models.load("random-bart")
    tt = tracer.trace_training_step(model, tok, "two red birds", "the owl", model_name="random-bart")
    at = upload(new_app(), "learn.trace", tt.to_bytes())
    assert_clean(at)
    assert "Opened learn.trace: a training trace of random-bart." in messages(at.sidebar.success)
    assert "Showing learn.trace, opened from a file" in messages(at.info)
    assert training_plots.loss_summary(tt) in messages(at.markdown)
    shift = at.dataframe[0].value
    assert shift.loc["decoder_input_ids (ids)"].tolist() == [str(i) for i in tt.decoder_input_ids]
    ts = tracer.trace_trainer_step(*models.load("random-llama"), [("the cat", "sat")])
    at = upload(at, "step.trace", ts.to_bytes())
    assert "Showing learn.trace, step.trace" in messages(at.info)
    trainer = next(df.value for df in at.dataframe if "seen at" in df.value.columns)
    assert trainer["event"].tolist() == ts.names
    at.button(key="close-opened-training").click().run()  # back to the live page, on the sidebar's model
    assert "opened from a file" not in messages(at.info)
    assert "picked in the sidebar" in messages(at.caption)
    assert_clean(at)


def test_an_uploaded_doctor_report_shows_on_the_cache_doctor_page():
    report = scenarios.check("side-inputs", "broken", max_new_tokens=4)
    at = upload(new_app(), "doctor.trace", report.to_bytes())
    assert_clean(at)
    assert "Opened doctor.trace: a cache doctor report of" in messages(at.sidebar.success)
    assert at.radio(key="doctor_source").value == "The report opened from a file"
    assert "Opened from **doctor.trace**" in messages(at.markdown)
    assert report.summary.split(".")[0] in messages(at.markdown)
    statuses = at.dataframe[0].value["status"].tolist()
    assert statuses == [s.status for s in report.steps]


def test_a_record_of_an_unknown_kind_is_a_clear_error():
    data = make_trace().to_bytes().replace(b'"kind":"trace"', b'"kind":"beams"')
    at = upload(new_app(), "beams.trace", data)
    assert "beams.trace holds a record of kind 'beams'" in messages(at.sidebar.error)
    assert_clean(at)


# ---------------------------------------------------------------------------------------------
# Bad input


def test_an_empty_prompt_is_a_clear_error():
    at = run_trace(new_app(), prompt="   ")
    assert "The prompt is empty" in messages(at.sidebar.error)
    assert_clean(at)


def test_a_prompt_too_long_for_the_model_is_a_clear_error():
    at = run_trace(new_app(), prompt=" ".join(["the cat sat"] * 60))
    assert "shorten the prompt" in messages(at.sidebar.error) or "positions" in messages(at.sidebar.error)
    assert_clean(at)


def test_unknown_words_are_named_and_the_trace_still_runs():
    at = run_trace(new_app(), prompt="the zorblax sat on the quuxly mat")
    warning = messages(at.sidebar.warning)
    assert "'zorblax'" in warning and "'quuxly'" in warning and "<unk>" in warning
    assert len(at.dataframe[0].value) == 3
    assert_clean(at)


def test_a_missing_folder_is_a_clear_error(tmp_path):
    at = new_app()
    at.sidebar.selectbox(key="model").set_value(ui.LOCAL_FOLDER).run()
    at.sidebar.text_input(key="folder").input(str(tmp_path / "nowhere"))
    at.sidebar.button(key="run").click().run()
    assert "No model folder at" in messages(at.sidebar.error)
    assert_clean(at)


def test_a_folder_that_is_not_a_supported_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    at = new_app()
    at.sidebar.selectbox(key="model").set_value(ui.LOCAL_FOLDER).run()
    at.sidebar.text_input(key="folder").input(str(tmp_path))
    at.sidebar.button(key="run").click().run()
    assert "has no config.json" in messages(at.sidebar.error)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    at.sidebar.button(key="run").click().run()
    assert "does not trace the model family 'gpt2'" in messages(at.sidebar.error)
    assert_clean(at)


# ---------------------------------------------------------------------------------------------
# Several sessions at once


def test_the_model_is_shared_between_sessions():
    assert ui.load_model("random-llama") is ui.load_model("random-llama")


def test_two_traces_at_once_on_the_shared_model_keep_their_own_records():
    model, tok = ui.load_model("random-llama")
    prompts = ["the cat sat on the mat", "a small bird sat in the old tree and the dog ran"]
    expected = {p: tracer.trace_generation(model, tok, p, max_new_tokens=5) for p in prompts}
    barrier = threading.Barrier(len(prompts))
    results: dict[str, tracer.Trace] = {}
    errors: list[BaseException] = []

    def trace(prompt: str) -> None:
        try:
            barrier.wait(timeout=30)
            results[prompt] = ui.run_trace("random-llama", prompt, max_new_tokens=5)
        except BaseException as exc:  # surfaced below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=trace, args=(p,)) for p in prompts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    for prompt in prompts:
        tr, want = results[prompt], expected[prompt]
        assert tr.prompt_text == prompt
        assert tr.sequence_ids == want.sequence_ids
        assert len(tr.steps) == 5
        assert tr.steps[0].fed_ids == tok(prompt)["input_ids"]
        assert [s.cache_seq_len() for s in tr.steps] == [len(want.prompt_ids) + i for i in range(5)]
    assert not model._forward_hooks and not model._forward_pre_hooks  # every hook removed


def test_two_app_sessions_each_keep_their_own_trace():
    first = run_trace(new_app(), prompt="the cat sat on the mat")
    second = run_trace(new_app(), model="random-bart", prompt="a small bird sat in the old tree")
    first.run()
    assert "LlamaForCausalLM" in messages(first.caption)
    assert "BartForConditionalGeneration" in messages(second.caption)
    assert first.session_state["trace_id"] != second.session_state["trace_id"]


def test_the_default_model_is_tiny_llama_when_shipped(monkeypatch):
    assert ui.default_model() in models.available()
    monkeypatch.setattr(
        models, "available", lambda: ["tiny-llama", "tiny-bart", "random-llama", "random-bart"]
    )
    assert ui.default_model() == "tiny-llama"
    monkeypatch.setattr(models, "available", lambda: ["tiny-bart", "random-llama", "random-bart"])
    assert ui.default_model() == "random-llama"


def test_an_example_prompt_fills_the_prompt_and_a_one_step_trace_replays():
    at = new_app()
    at.sidebar.selectbox(key="model").set_value("random-bart").run()
    at.sidebar.selectbox(key="example").set_value(ui.EXAMPLES["random-bart"][1]).run()
    assert at.sidebar.text_area(key="prompt").value == ui.EXAMPLES["random-bart"][1]
    at.sidebar.slider(key="max_new_tokens").set_value(1)
    at.sidebar.button(key="run").click().run()
    for page in PAGES:
        on_page(at, page)
        assert_clean(at)
    assert "the only step" in messages(at.caption)


def test_sampling_with_a_seed_is_recorded_and_replays_the_same_tokens():
    at = new_app()
    at.sidebar.radio(key="decoding").set_value("sampling").run()
    at.sidebar.slider(key="temperature").set_value(1.5)
    at.sidebar.number_input(key="seed").set_value(42)
    at = run_trace(at, tokens=4)
    assert "sampling (temperature 1.5, seed 42)" in messages(at.caption)
    first = at.dataframe[0].value["chosen token"].tolist()
    at.sidebar.button(key="run").click().run()
    assert at.dataframe[0].value["chosen token"].tolist() == first
    on_page(at, "pages/step_replay.py")
    assert "Sampling at temperature 1.5 (seed 42) drew" in messages(at.markdown)
