"""The whole app in Simplified Chinese and in English (AppTest): every page of app.py, for both
shipped models after a trace, shows no English sentence in Chinese and no Chinese in English;
the language survives in the link; the doctor's translated summary says in English exactly what
the command line prints.

What "visible text" means here: titles, headers, captions, markdown, messages, widget labels and
the options of widgets whose options are words of the app, expander, tab and metric labels, table
headers, and plotly titles, axis titles, annotations (subplot titles) and legend names. Data is
not checked: token texts, prompts, model names, code (`...` spans, st.code) and numbers.

Two checks in Chinese, so that neither a forgotten `_()` nor a string never marked slips by:
- no text holds an English msgid of the catalog whose translation differs (whole, or for a
  msgid with {fields} any literal piece of four words or more between its fields);
- no text holds English prose: three English words in a row, one of them a function word
  ("the", "of", "is", ...), once code, tokens and the trace's own text are taken out.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from babel.messages.pofile import read_po
from streamlit.testing.v1 import AppTest

from stepwise_app import ui
from tests.test_app import assert_clean, charts, navigation_app, new_app, on_page, run_trace  # noqa: F401
from tracer import doctor, i18n
from tracer.plots import doctor as doctor_plots

# Every page of app.py, in its navigation order (read from app.py: a new page is checked too).
ALL_PAGES = tuple(
    re.findall(r'st\.Page\(ROOT / "(pages/\w+\.py)"', (Path(ui.__file__).parent / "app.py").read_text())
)
# Widgets whose options are data, not the app's words (model names, example prompts, numbers).
DATA_OPTIONS = {"model", "example", "training_model", "_w_layer", "_w_head", "_w_lang"}
CJK = re.compile(r"[\u3400-\u9fff\u3000-\u303f\uff00-\uffef]")
FUNCTION_WORDS = {
    "the", "a", "an", "of", "to", "is", "are", "was", "in", "on", "and", "or", "with", "for", "at",
    "by", "from", "this", "that", "its", "it", "be", "each", "per", "not", "no", "as", "every",
    "what", "which", "one", "has", "have", "into", "after", "before", "here", "there",
}  # fmt: skip


def _catalog() -> dict[str, str]:
    with i18n.catalog_path("zh_CN").open("rb") as po:
        return {m.id: m.string for m in read_po(po) if m.id}


CATALOG = _catalog()
# The English texts that must not be seen in Chinese: msgids translated to something else.
TRANSLATED = {msgid: text for msgid, text in CATALOG.items() if text != msgid}


# ---------------------------------------------------------------------------------------------
# What a page shows


def visible_texts(at: AppTest) -> Iterator[str]:
    """Every word of the app the page shows (see the module docstring), one text at a time."""
    for kind in (
        "title",
        "header",
        "subheader",
        "caption",
        "markdown",
        "info",
        "warning",
        "error",
        "success",
    ):
        for element in at.get(kind):
            yield str(element.value)
    widgets = (
        "selectbox", "radio", "slider", "button", "toggle", "checkbox", "text_input", "text_area",
        "number_input", "expander", "tab", "metric", "download_button", "file_uploader",
    )  # fmt: skip
    for kind in widgets:
        for element in at.get(kind):
            label = getattr(element, "label", None) or getattr(element.proto, "label", "")
            yield str(label)
            key = getattr(element, "key", None) or ""
            options = getattr(element, "options", None)
            if options and key.removeprefix("_w_") not in DATA_OPTIONS and key not in DATA_OPTIONS:
                yield from (str(option) for option in options if not str(option).isdigit())
    for frame in at.dataframe:
        yield from (str(column) for column in frame.value.columns)
    for element in at.get("html"):  # the call flow, the token strip: their text, not their markup
        body = re.sub(r"<style>.*?</style>", "", element.proto.body, flags=re.S)
        yield from (html.unescape(text) for text in re.split(r"<[^>]*>", body) if text.strip())
    for chart in charts(at):
        layout = chart.get("layout", {})
        for name, value in layout.items():
            if name == "title" or name.startswith(("xaxis", "yaxis")):
                title = value.get("title") if name != "title" else value
                if isinstance(title, dict):
                    yield str(title.get("text", ""))
        for note in layout.get("annotations", []):
            yield str(note.get("text", ""))
        for trace in chart.get("data", []):
            if trace.get("showlegend", True) is not False and trace.get("name"):
                yield str(trace["name"])


def data_of(at: AppTest) -> set[str]:
    """The run's own words, which stay as they are in any language: the prompt, the example
    prompts, every token text of the session's traces and the doctor's reports, model names, and
    the messages of exceptions a model raised (torch's words, not the app's)."""
    words: set[str] = set()
    for element in at.sidebar.get("selectbox"):
        words.update(str(o) for o in element.options)
    words.add(str(at.session_state["prompt"]) if "prompt" in at.session_state else "")
    traces = list(at.session_state["traces"].values()) if "traces" in at.session_state else []
    for built in list(ui.FIGURES._built.values()):  # the doctor's reports, kept with the figures
        if isinstance(built, doctor.CacheReport):
            traces += [built.cached, built.uncached]
    for tr in traces:
        prompts = [tr.prompt_text, *(tr.batch.prompt_texts if tr.batch is not None else [])]
        words.update(prompts)
        words.update(word for prompt in prompts for word in prompt.split())  # a prompt shown shortened
        words.update(tr.token_text(t) for t in {*tr.prompt_ids, *tr.sequence_ids})
        if tr.error is not None:
            words.add(tr.error.message)
    return {w for w in words if w.strip()}


def report_data(report: doctor.CacheReport) -> set[str]:
    """A report's exception messages: the model's words, not the app's."""
    return {tr.error.message for tr in (report.cached, report.uncached) if tr.error is not None}


def without_data(text: str, data: set[str]) -> str:
    """`text` without what is not the app's own words: data first, then code and expressions."""
    for item in sorted(data, key=len, reverse=True):
        item = item.strip()
        # Whole words only, and never a function word on its own (tiny-llama has "the" as a token):
        # removing those would take the words the prose check looks for out of every sentence.
        if len(item) > 1 and item.lower() not in FUNCTION_WORDS:
            text = re.sub(rf"(?<![A-Za-z]){re.escape(item)}(?![A-Za-z])", " ", text)
    text = re.sub(r"`[^`]*`", " ", text)  # code
    text = re.sub(r"<[^>]+>", " ", text)  # html in plotly text (<b>, <br>)
    text = re.sub(r"\S*[_.()\[\]=/|<>]\S*", " ", text)  # identifiers, shapes, paths, expressions
    text = re.sub(r"'[^']*'", " ", text)  # quoted tokens ('mat')
    return text


def untranslated_msgids(text: str) -> list[str]:
    """The translated msgids that `text` still holds in English."""
    found = []
    plain = text.replace("**", "").strip()
    for msgid, translation in TRANSLATED.items():
        if "{" not in msgid:
            if plain == msgid or (len(msgid.split()) >= 4 and msgid in text):
                found.append(msgid)
            continue
        for piece in re.split(r"\{[^}]*\}", msgid):
            piece = piece.strip(" ,.;:()")
            if len(piece.split()) >= 4 and piece in text and piece not in translation:
                found.append(msgid)
                break
    return found


def english_prose(text: str) -> list[str]:
    """Runs of three or more English words with a function word among them."""
    runs = re.finditer(r"[A-Za-z][A-Za-z'-]*(?:[ ,]+[A-Za-z][A-Za-z'-]*){2,}", text)
    return [
        run.group(0) for run in runs if FUNCTION_WORDS & set(run.group(0).replace(",", " ").lower().split())
    ]


def page_problems(at: AppTest, lang: str) -> list[str]:
    problems = []
    data = data_of(at)
    for text in visible_texts(at):
        if lang == "zh_CN":
            problems += [f"untranslated msgid {m!r} in {text!r}" for m in untranslated_msgids(text)]
            problems += [f"English prose {p!r} in {text!r}" for p in english_prose(without_data(text, data))]
        elif CJK.search(without_data(text, data)):
            problems.append(f"Chinese in the English app: {text!r}")
    return problems


def in_language(lang: str) -> AppTest:
    at = new_app()
    at.sidebar.selectbox(key="_w_lang").set_value(lang).run()
    return at


def visit_every_page(at: AppTest, lang: str) -> dict[str, list[str]]:
    """Each page of app.py after the trace, plus the Trainer step; the problems found per page."""
    found: dict[str, list[str]] = {}
    for page in ALL_PAGES:
        on_page(at, page)
        assert_clean(at)
        assert len(list(visible_texts(at))) > 5, page  # the page drew, and the collection found it
        found[page] = page_problems(at, lang)
    at.button(key="run-trainer").click().run()  # the Trainer step's views (still the training page)
    assert_clean(at)
    found["pages/training_step.py (Trainer step)"] = page_problems(at, lang)
    return {page: problems for page, problems in found.items() if problems}


# ---------------------------------------------------------------------------------------------
# The checks themselves, on texts made up for them: each would catch what it is there for


def test_the_checks_catch_a_forgotten_translation_and_unmarked_english():
    assert untranslated_msgids("Call flow") == ["Call flow"]
    assert untranslated_msgids("调用流程") == []
    # A msgid with fields is caught by its longer literal pieces.
    assert "Traced {done} of up to {count} steps" not in untranslated_msgids("已追踪 3 步（最多 8 步）")
    shown = "The cache is **off**, so all 7 tokens so far were fed again"
    assert any("The cache is **off**" in m for m in untranslated_msgids(shown))
    assert english_prose(without_data("缓存 is kept for the next step", set())) == [
        "is kept for the next step"
    ]
    assert english_prose(without_data("第 2 步选了 **the cat** `past_key_values is None`", {"the cat"})) == []
    assert english_prose("temperature 1.0") == []  # two words are no sentence


# ---------------------------------------------------------------------------------------------
# The app


@pytest.mark.slow
@pytest.mark.parametrize("model", ["tiny-llama", "tiny-bart"])
def test_every_page_in_chinese_shows_no_english_sentence(model):
    at = run_trace(in_language("zh_CN"), model=model, tokens=4)
    assert_clean(at)
    assert "已追踪 4 步。" in " ".join(str(s.value) for s in at.sidebar.success)
    problems = visit_every_page(at, "zh_CN")
    assert not problems, problems


@pytest.mark.slow
@pytest.mark.parametrize("model", ["tiny-llama", "tiny-bart"])
def test_every_page_in_english_shows_no_chinese(model):
    at = run_trace(in_language("en"), model=model, tokens=4)
    problems = visit_every_page(at, "en")
    assert not problems, problems


@pytest.mark.slow
def test_a_batch_and_beam_search_in_chinese_show_no_english_sentence():
    at = in_language("zh_CN")
    at.sidebar.selectbox(key="model").set_value("tiny-llama").run()
    at.sidebar.toggle(key="batch").set_value(True).run()
    at.sidebar.text_area(key="prompt").input(
        "tom has red balls .\nann wants blue hats . what does ann want ?"
    )
    at.sidebar.radio(key="padding_side").set_value("right")
    at.sidebar.slider(key="max_new_tokens").set_value(3)
    at.sidebar.button(key="run").click().run()
    assert_clean(at)
    problems = {}
    for page in ("pages/overview.py", "pages/step_replay.py", "pages/attention.py", "pages/kv_cache.py"):
        on_page(at, page)
        assert_clean(at)
        problems[page] = page_problems(at, "zh_CN")
    at.sidebar.toggle(key="batch").set_value(False).run()
    at.sidebar.text_area(key="prompt").input("tom has red balls . what does tom have ?")
    at.sidebar.radio(key="decoding").set_value(ui.BEAMS).run()
    at.sidebar.button(key="run").click().run()
    assert_clean(at)
    for page in ("pages/beams.py", "pages/overview.py", "pages/step_replay.py"):
        on_page(at, page)
        assert_clean(at)
        assert page != "pages/beams.py" or charts(at)  # the beam tree, not "no beam search here"
        problems[f"{page} (beams)"] = page_problems(at, "zh_CN")
    problems = {page: found for page, found in problems.items() if found}
    assert not problems, problems


def test_the_language_is_in_the_link_and_a_new_session_opens_in_it():
    at = run_trace(in_language("zh_CN"), model="random-llama", tokens=2)
    assert at.query_params["lang"] == "zh_CN"
    on_page(at, "pages/kv_cache.py")
    assert at.title[0].value == "KV 缓存" and at.query_params["lang"] == "zh_CN"
    # A new browser session opening that link: Chinese from the first page on.
    linked = AppTest.from_file("../stepwise_app/app.py", default_timeout=120)
    linked.query_params.update({"lang": "zh_CN"})
    linked.run()
    assert linked.title[0].value == "概览"
    assert linked.sidebar.selectbox(key="_w_lang").value == "zh_CN"
    # Back to English: the link says nothing of a language, the default.
    linked.sidebar.selectbox(key="_w_lang").set_value("en").run()
    assert linked.title[0].value == "Overview" and "lang" not in linked.query_params


def test_a_bad_input_is_told_in_the_sessions_language():
    at = in_language("zh_CN")
    at.sidebar.text_area(key="prompt").input("   ")
    at.sidebar.button(key="run").click().run()
    assert [e.value for e in at.sidebar.error] == ["提示为空：输入几个词让模型接着写。"]
    at.sidebar.file_uploader(key="upload").upload("notes.trace", b"not a trace at all")
    at.run()
    assert [e.value for e in at.sidebar.error] == [
        "notes.trace 不是 Stepwise 追踪文件（文件已损坏，或者是别的类型的文件）。"
    ]
    at.sidebar.selectbox(key="model").set_value(ui.LOCAL_FOLDER).run()
    at.sidebar.text_input(key="folder").input("/no/such/checkpoint")
    at.sidebar.button(key="run").click().run()
    assert [e.value for e in at.sidebar.error] == [
        "/no/such/checkpoint 处没有模型文件夹。请给出内置模型名，或本地检查点文件夹的路径。"
    ]
    assert_clean(at)


# ---------------------------------------------------------------------------------------------
# The doctor's words: translated in the app, the English ones unchanged


@pytest.fixture(scope="module")
def side_input_reports():
    from models import scenarios

    return {
        variant: scenarios.check("side-inputs", variant, 4) for variant in ("broken", "tempting", "fixed")
    }


def test_the_doctors_summary_in_english_is_the_one_the_command_line_prints(side_input_reports):
    for report in side_input_reports.values():
        assert doctor.summary_in(report, i18n.untranslated) == report.summary
        assert [s.reason for s in doctor.suspects_in(report, i18n.untranslated)] == [
            s.reason for s in report.suspects
        ]


def test_the_doctors_verdict_summary_and_suspects_in_chinese(side_input_reports):
    _ = i18n.gettext_for("zh_CN")
    for variant, report in side_input_reports.items():
        kind, headline = doctor_plots.verdict(report, _=_)
        summary = doctor_plots.summary_text(report, _=_)
        reasons = doctor_plots.suspect_reasons(report, _=_)
        assert kind == ("success" if report.consistent else "error")
        assert CJK.search(headline) and CJK.search(summary), variant
        assert len(reasons) == len(report.suspects)
        for text in (headline, summary, *reasons):
            assert not english_prose(without_data(text, report_data(report))), (variant, text)
