"""The app in Simplified Chinese in a real browser: a link with ?lang=zh_CN opens it in Chinese,
a trace runs from the Chinese sidebar, and every page of the app shows its Chinese title with
nothing wider than the window, at a projector's 1280x720 and on a phone's 390x844. Screenshots
(Chinese drawn with Debian's fonts-noto-cjk) go to artifacts/screenshots/i18n-*.png. Reuses
conftest's server and browser, and test_browser_layout's helpers."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest

from tests import test_browser_layout as layout
from tests.conftest import SHOTS
from tests.test_browser_layout import PHONE, PROJECTOR, _idle, _in_viewport, _not_cut
from tracer import i18n

pytestmark = [pytest.mark.browser, pytest.mark.slow]

_ = i18n.gettext_for("zh_CN")
open_app = layout.open_app  # the fixture: a page at a size, no request leaving localhost

# (page path, its title msgid), every page of app.py.
PAGES = [
    ("", "Overview"),
    ("lesson", "Lesson"),
    ("step_replay", "Step replay"),
    ("attention", "Attention"),
    ("kv_cache", "KV cache"),
    ("beams", "Beams"),
    ("cache_doctor", "Cache doctor"),
    ("training_step", "Training step"),
]


def _run_in_chinese(page, app_url: str, phone: bool) -> str:
    """Open the app through a Chinese link and run the default trace; the link's query after it."""
    from playwright.sync_api import expect

    page.goto(f"{app_url}/?lang=zh_CN")
    sidebar = page.locator('[data-testid="stSidebar"]')
    if phone:
        page.get_by_test_id("stExpandSidebarButton").click()
    run = sidebar.get_by_role("button", name=_("Run trace"), exact=True)
    expect(run).to_be_visible()
    _in_viewport(page, run, _("Run trace"))
    run.click()
    expect(sidebar.get_by_text(re.compile(r"^已追踪 \d+ 步。$"))).to_be_visible()
    expect(page).to_have_url(re.compile(r"lang=zh_CN"))
    _idle(page)
    if phone:
        page.get_by_test_id("stSidebarCollapseButton").click()
    return urlsplit(page.url).query


def _page_in_chinese(page, app_url: str, path: str, title: str, query: str, width: int) -> None:
    """A page through a link that keeps the trace and the language: its Chinese title, no overflow."""
    from playwright.sync_api import expect

    page.goto(f"{app_url}/{path}?{query}")
    main = page.locator('[data-testid="stMain"]')
    if path == "lesson":  # the lesson's heading is its slide's; the page title is in the navigation
        heading = page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=_(title), exact=True)
        expect(heading).to_be_attached()
        expect(main.locator(".st-key-lesson_slide")).to_be_visible()
    else:
        heading = main.get_by_role("heading", name=_(title), exact=True)
        expect(heading).to_be_visible()
        _not_cut(heading, _(title))
    expect(page).to_have_url(re.compile(r"lang=zh_CN"))
    _idle(page)
    # Drawn, not still placeholders: every element in place, the figures' SVG (or the call flow) there.
    expect(main.locator('[data-testid="stSkeleton"]')).to_have_count(0)
    if path not in ("", "beams"):  # the overview has none, nor Beams after a greedy run
        expect(main.locator(".js-plotly-plot .main-svg, .sw-flow").first).to_be_visible()
    # Nothing wider than the window: no sideways scrolling, no element running out at the right.
    wide = page.evaluate(
        """width => [...document.querySelectorAll('[data-testid="stMain"] *')]
            .filter(e => { const b = e.getBoundingClientRect(); return b.width > 0 && b.right > width + 1
                && !e.closest('[data-testid="stDataFrame"], .js-plotly-plot, pre, [data-testid="stCode"]'); })
            .map(e => e.tagName + ' ' + (e.textContent || '').slice(0, 40))""",
        width,
    )
    assert wide == [], f"{path or 'overview'}: elements wider than the {width}-px window: {wide[:5]}"
    assert page.evaluate("document.documentElement.scrollWidth") <= width


def test_every_page_in_chinese_on_a_projector(open_app, app_url):
    page = open_app(PROJECTOR)
    query = _run_in_chinese(page, app_url, phone=False)
    for path, title in PAGES:
        _page_in_chinese(page, app_url, path, title, query, width=1280)
        if path == "step_replay":  # Chinese is twice as wide per character: the boxes still hold it
            layout._check_step_replay(page)
        page.screenshot(path=SHOTS / f"i18n-zh-{path or 'overview'}-1280.png")
        page.mouse.move(800, 400)
        page.mouse.wheel(0, 900)  # the page's middle: figures and tables with their Chinese titles
        _idle(page)
        page.screenshot(path=SHOTS / f"i18n-zh-{path or 'overview'}-1280-lower.png")


def test_pages_in_chinese_on_a_phone(open_app, app_url):
    page = open_app(PHONE)
    query = _run_in_chinese(page, app_url, phone=True)
    for path, title in [PAGES[0], PAGES[2], PAGES[5]]:
        _page_in_chinese(page, app_url, path, title, query, width=390)
        page.screenshot(path=SHOTS / f"i18n-zh-{path or 'overview'}-390.png", full_page=True)
