"""The lesson in a real browser at a projector's 1280x720: a link opens a chapter and slide in
Chinese with the presenter setting, arrow keys move, the answer shows on reveal, and screenshots
(Chinese text drawn with Debian's CJK font) go to artifacts/screenshots/. Reuses conftest's server
and browser."""

from __future__ import annotations

import re

import pytest

from tests.conftest import SHOTS
from tracer import i18n

pytestmark = [pytest.mark.browser, pytest.mark.slow]

_ = i18n.gettext_for("zh_CN")


@pytest.fixture(scope="module")
def projector(browser, app_url):
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    page = context.new_page()
    yield page
    context.close()


def _slide_title(page, text: str):
    from playwright.sync_api import expect

    title = page.locator(".st-key-lesson_slide").get_by_role("heading", name=text, exact=True)
    expect(title).to_be_visible()
    return title


def _idle(page) -> None:
    from playwright.sync_api import expect

    expect(page.locator('[data-testid="stStatusWidget"]')).to_have_count(0)


def test_a_link_opens_a_slide_in_chinese_and_arrow_keys_move(projector, app_url):
    from playwright.sync_api import expect

    page = projector
    page.goto(f"{app_url}/lesson?chapter=cache&slide=2&lang=zh_CN&present=1")
    _slide_title(page, _("past_key_values grows per layer"))
    expect(
        page.get_by_text(
            _("Chapter {chapter} of {chapters} · slide {slide} of {slides}").format(
                chapter=2, chapters=7, slide=2, slides=3
            ),
            exact=True,
        )
    ).to_be_visible()
    expect(page.locator('[data-testid="stSidebar"]')).to_have_attribute("data-collapsed", "true")
    expect(page.locator(".st-key-lesson_figure .js-plotly-plot")).to_have_count(1)
    _idle(page)
    page.screenshot(path=SHOTS / "lesson_cache_zh_1280.png")

    page.locator("body").press("ArrowRight")
    _slide_title(page, _("The cost with and without the cache"))
    expect(page).to_have_url(re.compile(r"chapter=cache.*slide=3|slide=3.*chapter=cache"))
    page.locator("body").press("ArrowRight")  # the chapter's last slide: on to the next chapter
    _slide_title(page, _("One head"))
    page.locator("body").press("ArrowLeft")
    _slide_title(page, _("The cost with and without the cache"))
    _idle(page)


def test_reveal_an_answer_on_the_projector(projector, app_url):
    from playwright.sync_api import expect

    page = projector
    page.goto(f"{app_url}/lesson?chapter=bart&slide=2&lang=zh_CN&present=1")
    _slide_title(page, _("Self-attention vs cross-attention"))
    page.get_by_role("button", name=_("Reveal the answer"), exact=True).click()
    answer = page.locator(".st-key-lesson_answer")
    expect(answer).to_contain_text(_("Answer"))
    expect(page.locator(".st-key-lesson_figure .js-plotly-plot")).to_have_count(1)
    _idle(page)
    # Nothing cut off: the answer and the Next button lie inside the 1280-px-wide window.
    for box in (answer.bounding_box(), page.locator(".st-key-lesson_next").bounding_box()):
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 1280
    page.screenshot(path=SHOTS / "lesson_bart_zh_1280.png")
