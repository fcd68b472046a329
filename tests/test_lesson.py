"""The lesson: computed answers checked against the traces, and every slide in the app for both
shipped models in both languages (AppTest)."""

from __future__ import annotations

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

import models
import tracer
from models.scenarios import check as check_scenario
from tests.test_app import assert_clean, navigation_app, new_app, on_page, run_trace  # noqa: F401
from tracer import i18n, lesson

TOKENS = 5


@pytest.fixture(scope="module")
def runs() -> lesson.Runs:
    llama, llama_tok = models.load("tiny-llama")
    bart, bart_tok = models.load("tiny-bart")
    source, target = models.EXAMPLES["tiny-bart"][0]
    return lesson.Runs(
        generation=tracer.trace_generation(
            llama, llama_tok, models.EXAMPLES["tiny-llama"][0][0], max_new_tokens=TOKENS
        ),
        bart=tracer.trace_generation(bart, bart_tok, source, max_new_tokens=TOKENS),
        doctor={v: check_scenario("side-inputs", v, TOKENS) for v in ("broken", "tempting", "fixed")},
        training=tracer.trace_training_step(bart, bart_tok, source, target),
        trainer=tracer.trace_trainer_step(llama, llama_tok),
    )


def slide(chapters, title: str) -> lesson.Slide:
    return next(s for chapter in chapters for s in chapter if s.title == title)


def test_chapters_follow_the_notes_and_each_has_slides(runs):
    chapters = lesson.build_lesson(i18n.gettext_for("en"), runs)
    assert [key for key, _ in lesson.CHAPTERS] == [
        "loop",
        "cache",
        "attention",
        "bart",
        "doctor",
        "training",
        "trainer",
    ]
    assert [c[0].chapter for c in chapters] == [key for key, _ in lesson.CHAPTERS]
    assert all(c and all(s.figure is not None for s in c) for c in chapters)


def test_computed_answers_match_the_traces(runs):
    chapters = lesson.build_lesson(i18n.gettext_for("en"), runs)
    tr, bart = runs.generation, runs.bart
    assert slide(chapters, "One step, in call order").question.value == len(tr.steps)
    # input_ids at step 3: what prepare_inputs_for_generation returned, and [1, 1] with the cache on
    fed = slide(chapters, "What is fed each step").question
    assert fed.value == tuple(tr.steps[3].prepare_inputs["input_ids"].shape) == (1, 1)
    assert fed.answer == "[1, 1]"
    cached = slide(chapters, "past_key_values grows per layer").question.value
    assert cached == tr.steps[-1].cache[0].key_shape[2] == len(tr.sequence_ids) - 1
    look = slide(chapters, "One head").question.value
    assert look == int(np.argmax(tr.steps[-1].attention("self", 0)[0, -1]))
    assert slide(chapters, "The encoder runs once").question.value == [0]
    # The cross-attention question asks where the step that writes the month looks: "march".
    aligned = slide(chapters, "Self-attention vs cross-attention").question
    month_step = bart.tokens(bart.generated_ids).index("03")
    assert f"step {month_step} " in aligned.text and aligned.figure_shows_answer
    cross = bart.steps[month_step].attention("cross", 0)  # [heads, q, src]
    assert aligned.value == int(np.argmax(cross[:, -1].mean(0)[1:-1])) + 1  # <s> and </s> left out
    assert bart.tokens(bart.prompt_ids)[aligned.value] == "march"
    assert (
        slide(chapters, "lm_head + final_logits_bias").question.value
        == bart.sequence_ids[len(bart.sequence_ids) - len(bart.steps)]
    )
    doctor = runs.doctor
    assert (
        slide(chapters, "The bug: side inputs on every step").question.value
        == doctor["broken"].first_divergent_step
    )
    assert slide(chapters, "The real fix").question.value is None and doctor["fixed"].consistent
    tt = runs.training
    start = slide(chapters, "Labels and shift_tokens_right").question.value
    assert start == tt.decoder_input_ids[0] and tt.decoder_input_ids[1:] == tt.labels[:-1]  # shifted right
    worst = slide(chapters, "The per-token loss").question.value
    assert not tt.ignored[worst] and tt.per_token_loss[worst] == tt.per_token_loss[~tt.ignored].max()
    assert slide(chapters, "One Trainer step, in order").question.value == pytest.approx(runs.trainer.loss)
    assert slide(chapters, "The events").question.value == len(runs.trainer.events)


def test_the_same_lesson_in_chinese_translates_the_text_not_the_answers(runs):
    en = lesson.build_lesson(i18n.gettext_for("en"), runs)
    zh = lesson.build_lesson(i18n.gettext_for("zh_CN"), runs)
    for chapter_en, chapter_zh in zip(en, zh, strict=True):
        for a, b in zip(chapter_en, chapter_zh, strict=True):
            assert a.idea != b.idea
            assert (a.question and a.question.value) == (b.question and b.question.value)


def every_slide(at):
    """Walk the lesson with the Next button; yield after each slide is shown."""
    while True:
        assert_clean(at)
        yield at
        nxt = at.button(key="lesson_next")
        if nxt.disabled:
            return
        nxt.click().run()


@pytest.mark.slow
@pytest.mark.parametrize("lang", ["en", "zh_CN"])
@pytest.mark.parametrize("model", ["tiny-llama", "tiny-bart"])
def test_every_slide_renders_for_both_models_in_both_languages(model, lang):
    at = new_app()
    at.sidebar.selectbox(key="_w_lang").set_value(lang).run()
    run_trace(at, model, tokens=4)
    at = on_page(at, "pages/lesson.py")
    shown = []
    for shown_at in every_slide(at):
        at = shown_at
        assert at.subheader, "a slide without a title"
        shown.append(at.subheader[0].value)
        reveal = [b for b in at.button if b.key == "lesson_reveal"]
        if reveal:
            reveal[0].click().run()
            assert_clean(at)
            assert at.success, "the answer is shown on reveal"
    _ = i18n.gettext_for(lang)
    assert len(shown) >= 14
    assert _("The encoder runs once") in shown and _("One Trainer step, in order") in shown


def test_a_link_opens_a_chapter_and_slide_and_the_chapter_list_moves():
    at = AppTest.from_file("../stepwise_app/app.py", default_timeout=120)
    at.query_params.update(chapter="cache", slide="2", lang="zh_CN")  # as in a shared link
    at.switch_page("pages/lesson.py").run()
    assert_clean(at)
    assert at.subheader[0].value == i18n.gettext_for("zh_CN")("past_key_values grows per layer")
    at.button(key="lesson_back").click().run()
    assert at.subheader[0].value == i18n.gettext_for("zh_CN")("What is fed each step")
    at.selectbox(key="_w_lesson_chapter").set_value(3).run()
    assert at.subheader[0].value == i18n.gettext_for("zh_CN")("The encoder runs once")
