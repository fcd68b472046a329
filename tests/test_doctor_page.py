"""The Cache doctor page through AppTest: scenarios broken and fixed, the current model, the fix as code."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from models import scenarios

PAGE = str(Path(__file__).resolve().parents[1] / "stepwise_app" / "pages" / "cache_doctor.py")
TIMEOUT = 60  # the first run imports transformers and builds a model


def page(**state) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    for key, value in state.items():
        at.session_state[key] = value  # what the app's sidebar would have chosen
    return at.run()


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_default_scenario_shows_the_crash_the_shapes_and_the_fix():
    at = page()
    assert not at.exception, at.exception
    assert at.selectbox(key="doctor_scenario").value == scenarios.get("side-inputs").title
    assert "crashes at step 1" in at.error[0].value
    assert metrics(at)["First divergent step"] == "1"
    assert metrics(at)["First divergent layer"] == "-"
    # The error with the shapes that caused it, and the suspect inputs.
    code = [c.value for c in at.code]
    assert any("shape mismatch" in c and "[3, 64]" in c for c in code)
    assert any("pixel_values [3, 48]" in w.value for w in at.warning)
    # The two runs side by side, the failing step marked.
    steps = at.dataframe[0].value
    assert list(steps["status"])[:2] == ["same", "error"]
    assert (
        steps.loc[1, "cached token"] == "(crashed)"
        and "pixel_values [3, 48]" in steps.loc[1, "cached inputs"]
    )
    assert steps.loc[1, "cached fed"].startswith("[1, 1] ")  # only the new token, with the cache
    assert steps.loc[1, "uncached fed"] == "[1, 11]"  # the whole sequence, placeholders included
    fed = at.dataframe[1].value.set_index("input")
    assert "fed again" in fed.loc["pixel_values", "suspect"]
    # The logit difference chart, the explanation and the code of every variant.
    assert len(at.get("plotly_chart")) >= 1
    assert any("class BrokenPatchLlama" in c for c in code)
    assert any("class FixedPatchLlama" in c for c in code)
    assert any("class TemptingPatchLlama" in c for c in code)


def test_fixed_variant_is_consistent():
    at = page()
    at.radio(key="doctor_variant_side-inputs").set_value("fixed").run()
    assert not at.exception, at.exception
    assert not at.error
    assert "Consistent" in at.success[0].value
    assert metrics(at)["First divergent step"] == "-"


@pytest.mark.parametrize("name", ["stale-positions", "loop-mask", "bart-reused-cache"])
def test_silent_divergences_are_shown_at_their_step_and_layer(name):
    scenario = scenarios.get(name)
    at = page()
    at.selectbox(key="doctor_scenario").set_value(scenario.title).run()
    assert not at.exception, at.exception
    expected = scenario.expected["broken"]
    assert metrics(at)["First divergent step"] == str(expected.step)
    assert metrics(at)["First divergent layer"] == str(expected.layer)
    assert f"at step {expected.step}" in at.error[0].value
    assert at.warning, "the suspect inputs are shown"
    assert len(at.get("plotly_chart")) == 2  # the logit difference and the per-layer heatmap


def test_current_model_and_prompt():
    at = page(model="random-llama", prompt="the cat sat on the mat")
    at.radio(key="doctor_source").set_value("The current model and prompt").run()
    assert not at.exception, at.exception
    assert "Check the cache" in at.info[0].value  # nothing runs before the button is pressed
    at.button(key="doctor_run").click().run()
    assert not at.exception, at.exception
    assert "Consistent" in at.success[0].value
    assert at.dataframe[0].value["status"].eq("same").all()


def test_current_model_without_a_sidebar_choice():
    at = page()
    at.radio(key="doctor_source").set_value("The current model and prompt").run()
    assert not at.exception, at.exception
    assert "sidebar" in at.info[0].value


def test_current_model_with_a_bad_prompt_says_so():
    at = page(model="random-llama", prompt="   ")
    at.radio(key="doctor_source").set_value("The current model and prompt").run()
    at.button(key="doctor_run").click().run()
    assert not at.exception, at.exception
    assert "empty" in at.error[0].value
