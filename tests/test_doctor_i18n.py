"""The cache doctor's reports on batches, beams and a row vs its prompt alone, in Chinese and in English.

In a Chinese session the doctor page says every word of these reports in Chinese (the verdict, the
summary, the suspects, captions, tables, figures), checked with test_app_i18n's detectors of English
left over; so are the errors its row comparison can meet. The English report (`report.summary`,
`report_text`, what the command line prints) stays word for word what it was before the reports
were translated.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from models import scenarios
from tests.test_app import assert_clean
from tests.test_app_i18n import CJK, english_prose, page_problems, report_data, without_data
from tracer import doctor, i18n
from tracer.plots import doctor as doctor_plots

PAGE = str(Path(__file__).resolve().parents[1] / "stepwise_app" / "pages" / "cache_doctor.py")
NEW_SCENARIOS = ("batch-right-padding", "bart-batch-mask", "beam-reorder")
ZH = i18n.gettext_for("zh_CN")


@pytest.fixture(scope="module")
def reports() -> dict[tuple[str, str], doctor.CacheReport]:
    return {
        (name, variant): scenarios.check(name, variant, 4)
        for name in NEW_SCENARIOS
        for variant in scenarios.get(name).variants
    }


# ---------------------------------------------------------------------------------------------
# The English report: unchanged

# The summaries (4 new tokens) as the doctor wrote them before they were translated, their measured
# differences and limits as # (rounding noise moves their last digit from one machine to another).
ENGLISH_SUMMARIES = {
    ("batch-right-padding", "broken"): (
        "Row 1 of the batch parts from the same prompt generated alone at step 0: decoder layer 0's "
        "output at the newest position differs by # (noise allows #). The batch row takes 'has', the "
        "prompt alone 'tom'. What does not fit: Row 1's prompt ends in 5 pad(s) (the batch is padded "
        "on the right): generate() appends each new token after the pads, so the first one is "
        "predicted at a pad position, not at the prompt's last word, and every later token sits "
        "behind the pads. The usual fix: Pad a decoder-only batch on the left: tokenizer(prompts, "
        'padding=True, padding_side="left", return_tensors="pt") (or tok.padding_side = "left"), and '
        "pass its attention_mask to generate(). Every row then ends in its own last token, the first "
        "new token is predicted from it, and generate() derives position_ids from the mask, so each "
        "row counts its positions from its first real token."
    ),
    ("batch-right-padding", "fixed"): (
        "Row 1 of the batch equals the same prompt generated alone: the same logits and layer outputs"
        " over 4 step(s) (largest logit difference #, within rtol #, atol # for float32)."
    ),
    ("bart-batch-mask", "tempting"): (
        "Row 1 of the batch parts from the same prompt generated alone at step 0: decoder layer 0's "
        "output at the newest position differs by # (noise allows #). The token is still the same "
        "there ('<s>'). What does not fit: Row 1's source holds 2 <pad> (id 1) position(s), and no "
        "attention_mask reached generate(): every decoder layer's cross-attention (the encoder "
        "outputs were given) read(s) the pads as if they were words of the source, from step 0 on. "
        "The usual fix: Pass the batch's attention_mask to generate() beside input_ids: "
        'model.generate(**tokenizer(prompts, padding=True, return_tensors="pt")). An encoder-decoder '
        "model does not infer it from the pad ids, and its decoder's cross-attention needs it on "
        "every step, also when the encoder outputs were computed (with the mask) beforehand."
    ),
    ("beam-reorder", "broken"): (
        "Cached generation parts from uncached generation at step 2 (fed input_ids [4, 1]): decoder "
        "layer 0's output at the newest position differs by # (noise allows #). The greedy token is "
        "still the same there ('has'), so the bug is silent at first. What does not fit: After step "
        "1, beam search kept the beams [0, 0, 1, 0] (each the row it continues) and called the "
        "cache's reorder_cache with them, but cache layer(s) 0, 1 did not move their rows so (keys "
        "and values compared): from step 2 each beam reads another beam's past. The usual fix: Make "
        "the cache follow the beams: its reorder_cache(beam_idx) must index_select(0, beam_idx) the "
        "keys and the values of every layer (DynamicLayer.reorder_cache does both), for it is called "
        "after every beam-search step with the beams generate() kept. Subclass DynamicCache, or call "
        "its reorder_cache. 4 beams were compared one by one; beam 1, beam 2, beam 3 part(s). The "
        "steps above are of beam 1, the first to part. Some cache layers did not apply the beam "
        "reorder after step(s) 1, 2."
    ),
    ("beam-reorder", "fixed"): (
        "Consistent: with and without the cache the model computes the same logits and layer outputs "
        "over 4 step(s) (largest logit difference #, within rtol #, atol # for float32). All 4 beams "
        "were compared one by one, and all agree. Every layer of the cache applied each of the 3 beam"
        " reorder(s)."
    ),
}


def _measured_as_hash(text: str) -> str:
    return re.sub(r"\d+\.\d+(?:e-?\d+)?|\d+e-?\d+", "#", text)


def test_the_english_summary_and_the_command_lines_text_are_the_ones_written_before(reports):
    for key, expected in ENGLISH_SUMMARIES.items():
        report = reports[key]
        assert _measured_as_hash(report.summary) == expected, key
        assert doctor.report_text(report).endswith(report.summary)
    for key, report in reports.items():  # the app's English views are the report's own words
        assert doctor_plots.summary_text(report) == report.summary, key
        assert doctor_plots.suspect_reasons(report) == [s.reason for s in report.suspects], key
        assert doctor_plots.compared_text(report) == report.compared, key


def test_said_again_in_english_the_report_is_the_same(reports):
    """summary_in and suspects_in find the suspects again from the traces: in English they give the
    report's own text, so the Chinese ones are said from the same facts."""
    english = i18n.gettext_for("en")  # a real gettext, not the `untranslated` shortcut
    for key, report in reports.items():
        assert doctor.summary_in(report, english) == report.summary, key
        assert doctor.suspects_in(report, english) == report.suspects, key


def test_the_reports_in_chinese_have_no_english_sentence(reports):
    for key, report in reports.items():
        kind, headline = doctor_plots.verdict(report, ZH)
        summary = doctor_plots.summary_text(report, ZH)
        reasons = doctor_plots.suspect_reasons(report, ZH)
        assert kind == ("success" if report.consistent else "error"), key
        assert CJK.search(headline) and CJK.search(summary), key
        assert len(reasons) == len(report.suspects) and all(CJK.search(r) for r in reasons), key
        for text in (headline, summary, *reasons, doctor_plots.compared_text(report, ZH)):
            assert not english_prose(without_data(text, report_data(report))), (key, text)
    beams = doctor_plots.summary_text(reports["beam-reorder", "fixed"], ZH)
    assert "逐一比较了全部 4 个束，全都一致。" in beams and "缓存的每一层都执行了全部 3 次束重排。" in beams


# ---------------------------------------------------------------------------------------------
# The doctor page in a Chinese session


def doctor_page_in_chinese(**state) -> AppTest:
    """The doctor page alone, as a Chinese session with `state` (the sidebar's model and prompt) opens it."""
    at = AppTest.from_file(PAGE, default_timeout=90)
    at.session_state["lang"] = "zh_CN"
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    assert_clean(at)
    assert at.title[0].value == "缓存医生"
    return at


@pytest.mark.parametrize("name", NEW_SCENARIOS)
def test_a_new_scenario_on_the_doctor_page_is_all_chinese(name):
    at = doctor_page_in_chinese()
    scenario = scenarios.get(name)
    at.selectbox(key="doctor_scenario").set_value(scenario.title).run()
    assert_clean(at)
    assert at.radio(key=f"doctor_variant_{name}").value == "broken"
    verdict = at.error[0].value
    assert CJK.search(verdict) and f"第 {scenario.expected['broken'].step} 步" in verdict
    suspects = [w.value for w in at.warning]
    assert suspects and all(CJK.search(w) for w in suspects)
    problems = page_problems(at, "zh_CN")
    assert not problems, problems


def test_a_row_vs_its_prompt_alone_with_beams_on_the_doctor_page_is_all_chinese():
    at = doctor_page_in_chinese(model="random-llama", prompt="the cat sat on the mat and")
    at.radio(key="doctor_source").set_value("A row of a batch vs its prompt alone").run()
    at.radio(key="doctor_padding_side").set_value("right").run()
    at.selectbox(key="doctor_beams").set_value(2).run()
    at.button(key="doctor_run_row").click().run()
    assert_clean(at)
    assert at.error[0].value.startswith("**批次的第 1 行在第 0 步")
    assert any("第 1 行、束" in c.value for c in at.caption)  # the sequences that part, by name
    assert at.warning and all(CJK.search(w.value) for w in at.warning)
    problems = page_problems(at, "zh_CN")
    assert not problems, problems


def test_a_row_comparison_without_a_batch_is_refused_in_chinese():
    at = doctor_page_in_chinese(model="random-llama", prompt="the cat sat on the mat and")
    at.radio(key="doctor_source").set_value("A row of a batch vs its prompt alone").run()
    at.text_area(key="doctor_batch_prompts").set_value("only one prompt").run()
    at.button(key="doctor_run_row").click().run()
    assert_clean(at)
    assert [e.value for e in at.error] == [
        "把一行与单独的提示比较需要一个批次：给出两个或更多提示"
        "（或者 batch >= 2 的 input_ids [batch, len]）。"
    ]
