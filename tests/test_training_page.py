"""The Training step page through AppTest: it renders, runs a Trainer step, and shows bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
PAGE = str(ROOT / "stepwise_app" / "pages" / "training_step.py")
TIMEOUT = 60  # the first run imports transformers' Trainer and loads a model


def page(model: str) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    at.session_state["model"] = model  # what the app's sidebar (ui.sidebar) would have chosen
    return at.run()


def markdown(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown)


@pytest.mark.parametrize("model", ["random-bart", "random-llama"])
def test_page_shows_shift_loss_attention_and_generation(model):
    at = page(model)
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert any(f"Model: **{model}**" in c.value for c in at.caption)
    assert "loss = " in markdown(at)
    tables = [df.value for df in at.dataframe]
    shift = tables[0]
    if model == "random-bart":
        assert "decoder_input_ids = shift_tokens_right(labels)" in shift.index
        assert shift.loc["decoder_input_ids (ids)"].iloc[0] == "2"  # the decoder start token
    else:
        assert "scored against (labels shifted left in the loss)" in shift.index
        assert shift.loc["labels (as passed)"].iloc[0] == "-100"  # the prompt is not learned
    loss = tables[1]
    assert loss["ignored (-100)"].any() or model == "random-bart"
    assert len(at.get("plotly_chart")) >= 4  # shift, loss, attention, teacher forcing vs generation
    # Teacher forcing beside generation: one row per target position, step 0 fed the same token.
    comparison = tables[-1]
    assert comparison["computed in"].eq("the one pass").all()
    assert comparison["generation: step"].tolist() == list(range(len(comparison)))


def test_page_runs_one_trainer_step():
    at = page("random-llama")
    at.button(key="run-trainer").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert any("= the loss the Trainer logged" in s.value for s in at.success)
    trainer = next(df.value for df in at.dataframe if "seen at" in df.value.columns)
    assert trainer["event"].tolist() == [
        "batch",
        "forward",
        "loss",
        "backward",
        "clip_grad_norm",
        "optimizer.step",
        "scheduler.step",
        "zero_grad",
        "log",
    ]


def test_page_shows_bad_input_as_an_error():
    at = page("random-bart")
    at.text_input(key="target-random-bart").set_value("   ").run()
    assert not at.exception, at.exception
    assert [e.value for e in at.error] == [
        "The target is empty: type the words the model should learn to produce."
    ]
    at.text_input(key="target-random-bart").set_value(" ".join(["cat"] * 200)).run()
    assert not at.exception
    assert "positions" in at.error[0].value and "shorten" in at.error[0].value


def test_page_on_its_own_asks_for_the_model():
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    picker = at.selectbox(key="training_model")
    picker.set_value("random-llama").run()
    assert not at.exception and not at.error
    assert "loss = " in markdown(at)


def test_page_inside_the_app():
    at = AppTest.from_file(str(ROOT / "stepwise_app" / "app.py"), default_timeout=TIMEOUT).run()
    at.switch_page("pages/training_step.py").run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert at.title[-1].value == "Training step"
    assert "loss = " in markdown(at)
