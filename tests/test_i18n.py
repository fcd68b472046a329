"""Translations: every marked string has a translation, and a language is per caller, not global."""

from __future__ import annotations

import runpy
import threading
from pathlib import Path

import pytest
from babel.messages.pofile import read_po

from tracer import i18n

ROOT = Path(__file__).resolve().parents[1]
catalog_tool = runpy.run_path(str(ROOT / "scripts" / "i18n_catalog.py"), run_name="catalog")


def test_every_marked_string_has_a_translation_in_every_catalog():
    marked = {msgid for msgid, _path, _line in catalog_tool["messages"]()}
    assert "The KV cache" in marked  # the extraction found the lesson's strings
    for lang in i18n.LANGUAGES:
        if lang == i18n.DEFAULT:
            continue
        with i18n.catalog_path(lang).open("rb") as po:
            translated = {m.id: m.string for m in read_po(po) if m.id}
        missing = sorted(m for m in marked if not translated.get(m))
        assert not missing, f"{lang}: untranslated (run scripts/i18n_catalog.py and translate): {missing}"


def test_brace_fields_survive_translation():
    _ = i18n.gettext_for("zh_CN")
    with i18n.catalog_path("zh_CN").open("rb") as po:
        for message in read_po(po):
            if message.id and "{" in message.id:
                fields = {f.split("}")[0].split(":")[0] for f in message.id.split("{")[1:]}
                for field in fields:
                    assert "{" + field in _(message.id), (message.id, _(message.id))


def test_two_threads_keep_their_own_language():
    seen: dict[str, str] = {}

    def speak(lang: str) -> None:
        _ = i18n.gettext_for(lang)
        for _round in range(200):
            seen[lang] = _("The KV cache")

    threads = [threading.Thread(target=speak, args=(lang,)) for lang in ("en", "zh_CN")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {"en": "The KV cache", "zh_CN": "KV 缓存"}


def test_an_unknown_language_falls_back_to_english():
    assert i18n.language("xx") == "en"
    assert i18n.language("zh_CN") == "zh_CN"
    assert i18n.gettext_for("xx")("Lesson") == "Lesson"


def test_an_error_raised_from_a_template_is_english_and_says_itself_in_another_language():
    from tracer.errors import StepwiseInputError

    template = i18n.N_("Prompt {number} of the batch is empty: type a few words for the model to continue.")
    exc = i18n.templated(StepwiseInputError, template, number=2)
    assert str(exc) == "Prompt 2 of the batch is empty: type a few words for the model to continue."
    assert (
        i18n.error_message(exc, i18n.gettext_for("zh_CN"))
        == "批中的第 2 个提示为空：输入几个词让模型接着写。"
    )
    assert i18n.error_message(ValueError("plain"), i18n.gettext_for("zh_CN")) == "plain"  # no template


def test_a_kept_english_text_is_reworded_from_its_template():
    from tracer.trace import STOP_DETAILS

    _ = i18n.gettext_for("zh_CN")
    said = i18n.reword(
        "end-of-sequence id 2 chosen (also the last of max_new_tokens=8)", STOP_DETAILS.values(), _
    )
    assert said == "选中了序列结束 id 2（同时也是 max_new_tokens=8 的最后一个）"
    assert i18n.reword("max_new_tokens=8 reached", STOP_DETAILS.values(), _) == "达到了 max_new_tokens=8"
    assert i18n.reword("something else ended it", STOP_DETAILS.values(), _) == "something else ended it"


def test_an_errors_words_inside_its_fields_are_said_in_the_same_language():
    from tracer.errors import TracingNotSupported
    from tracer.generation_settings import ResolvedSettings, refuse_untraceable

    settings = ResolvedSettings({"num_beam_groups": 2, "num_beams": 4}, {"num_beam_groups": "checkpoint"})
    with pytest.raises(TracingNotSupported) as refused:
        refuse_untraceable(settings)
    exc = refused.value
    english = (
        "Group beam search is not traced yet (Stepwise traces one token per row per step, or beams): "
        "num_beam_groups=2 from the checkpoint's generation_config.json; pass num_beam_groups=1 to trace "
        "one group."
    )
    assert str(exc) == i18n.error_message(exc, i18n.untranslated) == english
    assert i18n.error_message(exc, i18n.gettext_for("zh_CN")) == (
        "还不能追踪分组束搜索（Stepwise 追踪的是每行每步一个 token，或者束）："
        "num_beam_groups=2，来自检查点的 generation_config.json；传入 num_beam_groups=1，即可追踪一个分组。"
    )


def test_a_model_stepwise_cannot_trace_is_said_in_the_users_language():
    from torch import nn

    from tracer.errors import SUPPORTED_LAYOUTS, TracingNotSupported
    from tracer.record import detect_layout

    with pytest.raises(TracingNotSupported) as raised:
        detect_layout(nn.Linear(2, 2))  # no decoder, no lm_head
    english = str(raised.value)
    assert english.startswith("Stepwise cannot trace Linear") and english.endswith(SUPPORTED_LAYOUTS + ".")
    assert i18n.error_message(raised.value, i18n.untranslated) == english
    chinese = i18n.error_message(raised.value, i18n.gettext_for("zh_CN"))
    assert chinese.startswith("Stepwise 无法追踪 Linear") and "Llama 布局" in chinese
