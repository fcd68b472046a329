"""The app's layout on a projector (1280x720) and a phone (390x844), checked with bounding boxes.

Each test opens its own browser context at one size (the phone with a phone's user agent, as a
real phone sends), fails on any request that leaves localhost, runs a trace through the sidebar
and then visits the pages through links (the URL keeps the trace, the page and the step). What
is checked is geometry, not pixels: Run visible without scrolling, nothing cut or overflowing,
labels that do not lie on each other or on a neighbour's heatmap, charts that do not overlap.
Screenshots go to artifacts/screenshots/layout-*.png.
"""

from __future__ import annotations

import itertools
import re
from urllib.parse import urlsplit

import pytest

from tests.conftest import BROWSER_TIMEOUT_MS, SHOTS

pytestmark = pytest.mark.browser

PROJECTOR = {"viewport": {"width": 1280, "height": 720}}
PHONE = {
    "viewport": {"width": 390, "height": 844},
    "is_mobile": True,
    "has_touch": True,
    "user_agent": (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
    ),
}
LOCAL_HOSTS = {"127.0.0.1", "localhost"}


@pytest.fixture
def open_app(browser, app_url):
    """open_app(size) -> a page on the app at that size; on teardown, no request left localhost."""
    contexts, outside = [], []

    def route(route):
        url = route.request.url
        if urlsplit(url).hostname in LOCAL_HOSTS or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            outside.append(url)
            route.abort()

    def open_at(size: dict):
        context = browser.new_context(**size)
        context.route("**/*", route)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(BROWSER_TIMEOUT_MS)
        page.goto(app_url)
        return page

    yield open_at
    for context in contexts:
        context.close()
    assert outside == [], f"requests that left localhost: {outside}"


# ---------------------------------------------------------------------------------------------
# Geometry


def _box(locator) -> dict:
    box = locator.bounding_box()
    assert box is not None, f"{locator} is not drawn"
    return box


def _boxes(locator) -> list[dict]:
    return [b for b in (locator.nth(i).bounding_box() for i in range(locator.count())) if b]


def _overlap(a: dict, b: dict, slack: float = 1.0) -> bool:
    return (
        a["x"] + a["width"] - slack > b["x"]
        and b["x"] + b["width"] - slack > a["x"]
        and a["y"] + a["height"] - slack > b["y"]
        and b["y"] + b["height"] - slack > a["y"]
    )


def _inside(inner: dict, outer: dict, slack: float = 1.0) -> bool:
    return (
        inner["x"] >= outer["x"] - slack
        and inner["y"] >= outer["y"] - slack
        and inner["x"] + inner["width"] <= outer["x"] + outer["width"] + slack
        and inner["y"] + inner["height"] <= outer["y"] + outer["height"] + slack
    )


def _no_two_overlap(boxes: list[dict], what: str) -> None:
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert not _overlap(a, b), f"{what} overlap: {a} and {b}"


def _not_piled(boxes: list[dict], min_gap: float, what: str) -> None:
    """Labels along an axis (maybe slanted, whose boxes overlap by geometry) at least `min_gap` apart."""
    centres = sorted(b["x"] + b["width"] / 2 for b in boxes)
    gaps = [b - a for a, b in itertools.pairwise(centres)]
    assert not gaps or min(gaps) >= min_gap, f"{what} piled up: {min(gaps):.1f} px apart"


def _in_viewport(page, locator, what: str) -> None:
    box, view = _box(locator), page.viewport_size
    assert box["y"] >= 0 and box["y"] + box["height"] <= view["height"], f"{what} is below the fold: {box}"
    assert box["x"] >= 0 and box["x"] + box["width"] <= view["width"], f"{what} is cut at the side: {box}"


def _not_cut(locator, what: str) -> None:
    """No element inside `locator` is wider than its box (CSS ellipsis cuts such a label)."""
    cut = locator.evaluate(
        "e => [e, ...e.querySelectorAll('*')].filter(x => x.scrollWidth > x.clientWidth + 1).length"
    )
    assert cut == 0, f"{what}: its text is cut"


# ---------------------------------------------------------------------------------------------
# The app


def _idle(page) -> None:
    from playwright.sync_api import expect

    expect(page.locator('[data-testid="stStatusWidget"]')).to_have_count(0)


def _figure(page, key: str):
    from playwright.sync_api import expect

    figure = page.locator(f".st-key-{key} .js-plotly-plot")
    expect(figure).to_be_visible()
    expect(figure.locator(".main-svg").first).to_be_attached()
    return figure


def _run_a_trace(page, phone: bool) -> str:
    """Run the default trace from the sidebar, checking that Run shows without scrolling; the link."""
    from playwright.sync_api import expect

    sidebar = page.locator('[data-testid="stSidebar"]')
    if phone:  # the sidebar is a drawer on a phone
        page.get_by_test_id("stExpandSidebarButton").click()
    run = sidebar.get_by_role("button", name="Run trace", exact=True)
    expect(run).to_be_visible()
    # The real navigation, not Streamlit's raw list of page files ("app", "attention", ...).
    nav = page.locator('[data-testid="stSidebarNav"]')
    expect(nav.get_by_role("link", name="Step replay", exact=True)).to_be_visible()
    expect(nav.get_by_role("link", name=re.compile(r"^app$"))).to_have_count(0)
    _in_viewport(page, run, "Run trace")
    page.screenshot(path=SHOTS / f"layout-{'phone' if phone else 'projector'}-landing.png")
    run.click()
    expect(sidebar.get_by_text(re.compile(r"^Traced \d+ steps\.$"))).to_be_visible()
    expect(page).to_have_url(re.compile(r"trace=[0-9a-f]+"))
    _idle(page)
    if phone:
        page.get_by_test_id("stSidebarCollapseButton").click()
    return urlsplit(page.url).query


def _visit(page, app_url: str, path: str, query: str, **view) -> None:
    """Open a page through a link: the trace and the view come from the URL."""
    from playwright.sync_api import expect

    extra = "".join(f"&{k}={v}" for k, v in view.items())
    query = re.sub(r"&step=\d+", "", query)
    page.goto(f"{app_url}/{path}?{query}{extra}")
    expect(page.locator('[data-testid="stSidebar"]').get_by_text("Opened the linked trace")).to_be_attached()
    _idle(page)


def _step_picker(page, width: float) -> None:
    picker = page.locator(".st-key-step_picker")
    prev = picker.get_by_role("button", name="◀ Prev", exact=True)
    nxt = picker.get_by_role("button", name="Next ▶", exact=True)
    slider = picker.get_by_test_id("stSlider")
    boxes = [_box(prev), _box(slider), _box(nxt)]
    _no_two_overlap(boxes, "Prev, the step slider and Next")
    assert boxes[0]["x"] < boxes[1]["x"] < boxes[2]["x"], "Prev, slider, Next are not in one row"
    middle = [b["y"] + b["height"] / 2 for b in (boxes[0], boxes[2])]
    assert boxes[1]["y"] <= min(middle) and max(middle) <= boxes[1]["y"] + boxes[1]["height"] + 1
    assert boxes[2]["x"] + boxes[2]["width"] <= width, "Next runs off the screen"
    _not_cut(prev, "◀ Prev")
    _not_cut(nxt, "Next ▶")


def _call_flow(page):
    """Step replay's call flow (HTML boxes), once it is drawn."""
    from playwright.sync_api import expect

    flow = page.locator(".st-key-call_flow .sw-flow")
    expect(flow).to_be_visible()
    return flow


def _check_step_replay(page) -> None:
    flow = _call_flow(page)
    frame, width = _box(flow), page.viewport_size["width"]
    assert frame["x"] >= 0 and frame["x"] + frame["width"] <= width + 1, f"the call flow overflows: {frame}"
    calls = flow.locator(".sw-call")
    boxes = _boxes(calls)
    assert len(boxes) > 5, "the call flow drew no calls"
    for box in boxes:
        assert _inside(box, frame), f"a call-flow box runs out of the flow: {box} in {frame}"
    # The text of each box wraps inside it: nothing is cut or scrolls sideways.
    overflowing = calls.evaluate_all("cs => cs.filter(c => c.scrollWidth > c.clientWidth + 1).length")
    assert overflowing == 0, f"{overflowing} call-flow boxes cut their text"
    topk = _figure(page, "topk")
    sizes = topk.locator(".ytick text").evaluate_all(
        "ts => ts.map(t => parseFloat(getComputedStyle(t).fontSize))"
    )
    assert sizes and min(sizes) >= 15, f"top-10 labels too small for a projector: {sizes}"
    # Each bar's percentage, "100.0%" included, whole inside the figure and not clipped at the axis.
    frame, percentages = _box(topk), topk.locator("text.bartext")
    assert percentages.count() == 10
    for box in _boxes(percentages):
        assert _inside(box, frame), f"a top-10 percentage runs out of its figure: {box} in {frame}"
    assert topk.evaluate("e => e.data[0].cliponaxis") is False, "a percentage past the axis would be cut"
    assert page.locator(".modebar").count() == 0, "a plotly toolbar is drawn over the figures"


def _check_heads(page, key: str) -> None:
    """Tick labels of the heads figure: none on another, none on a heatmap."""
    figure = _figure(page, key)
    images = _boxes(figure.locator("g.hm image"))
    assert images, "no heatmap drawn"
    y_labels = _boxes(figure.locator(".ytick text"))
    for label in y_labels:
        for image in images:
            assert not _overlap(label, image), f"a row label lies on a heatmap: {label} on {image}"
    for axis in figure.locator(".xaxislayer-above").all():
        _not_piled(_boxes(axis.locator(".xtick text")), 12, "key labels")
    _no_two_overlap(y_labels, "row labels")


def _check_kv_cache(page) -> None:
    growth, on_off = _figure(page, "cache_growth"), _figure(page, "cache_on_off")
    assert not _overlap(_box(growth), _box(on_off)), "the KV cache charts run into each other"
    for figure in (growth, on_off):
        frame = _box(figure)
        texts = _boxes(figure.locator(".annotation-text, .g-xtitle text, .g-ytitle text, .g-x2title text"))
        for box in texts:
            assert _inside(box, frame), f"a title runs out of its chart: {box}"
        _no_two_overlap(texts, "chart titles")
    # Every legend entry has a line, and the memory chart uses the legend's colours.
    traces = growth.evaluate("e => e.data.map(t => [t.name, t.line.color, t.showlegend !== false])")
    legend = {color for _, color, shown in traces if shown}
    assert {color for _, color, _ in traces} == legend
    assert len(legend) == growth.locator(".legend .traces").count()


def _screens(page, name: str) -> None:
    page.screenshot(path=SHOTS / f"layout-{name}.png", full_page=True)


def test_a_projector_shows_run_prev_next_and_readable_figures(open_app, app_url):
    page = open_app(PROJECTOR)
    query = _run_a_trace(page, phone=False)

    _visit(page, app_url, "step_replay", query, step=1)
    _step_picker(page, 1280)
    _check_step_replay(page)
    _screens(page, "projector-step-replay")

    _visit(page, app_url, "attention", query, step=2)  # a cached decode step: one query row
    _check_heads(page, "attention_heads")
    _check_heads(page, "attention_run")
    _screens(page, "projector-attention-decode")
    _visit(page, app_url, "attention", query, step=0)  # the prefill: a heatmap per head
    _check_heads(page, "attention_heads")
    _screens(page, "projector-attention-prefill")

    _visit(page, app_url, "kv_cache", query, step=1)
    _check_kv_cache(page)
    _screens(page, "projector-kv-cache")


def test_a_phone_shows_run_in_its_drawer_and_figures_that_fit(open_app, app_url):
    page = open_app(PHONE)
    query = _run_a_trace(page, phone=True)

    _visit(page, app_url, "step_replay", query, step=1)
    _step_picker(page, 390)
    _check_step_replay(page)
    _screens(page, "phone-step-replay")

    _visit(page, app_url, "attention", query, step=2)
    _check_heads(page, "attention_heads")
    _check_heads(page, "attention_run")
    _visit(page, app_url, "attention", query, step=0)
    _check_heads(page, "attention_heads")
    _screens(page, "phone-attention-prefill")

    _visit(page, app_url, "kv_cache", query, step=1)
    _check_kv_cache(page)
    _screens(page, "phone-kv-cache")


def test_a_reload_keeps_the_trace_the_page_and_the_step(open_app, app_url):
    from playwright.sync_api import expect

    page = open_app(PROJECTOR)
    _run_a_trace(page, phone=False)
    page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name="Step replay", exact=True).click()
    page.get_by_role("button", name="Next ▶", exact=True).click()
    expect(page).to_have_url(re.compile(r"/step_replay\?.*step=1"))
    _idle(page)
    page.reload()
    expect(page.get_by_role("heading", name="Step replay", exact=True, level=1)).to_be_visible()
    expect(page.locator(".st-key-step_picker").get_by_role("slider")).to_have_value("1")
    expect(page.locator('[data-testid="stSidebar"]').get_by_text("Opened the linked trace")).to_be_visible()


def test_the_doctor_and_training_pages_on_a_projector(open_app, app_url):
    from playwright.sync_api import expect

    page = open_app(PROJECTOR)
    page.goto(f"{app_url}/cache_doctor")
    # The default scenario crashes at step 1: its noise limit has one compared step, drawn as a mark.
    chart = _figure(page, "doctor_logit_diff")
    limit = chart.locator(".scatterlayer .trace").nth(1)
    expect(limit.locator(".point").first).to_be_attached()
    assert _box(limit.locator(".point").first)["width"] > 0
    assert page.locator(".modebar").count() == 0
    _screens(page, "projector-cache-doctor")

    page.goto(f"{app_url}/training_step")
    expect(page.get_by_role("heading", name="Training step", exact=True, level=1)).to_be_visible()
    shift = _figure(page, "shift-figure")
    expect(page.get_by_text(re.compile("vocabulary"))).to_have_count(0)  # the example is in it
    sizes = shift.locator(".textpoint text, .ytick text").evaluate_all(
        "ts => ts.map(t => parseFloat(getComputedStyle(t).fontSize))"
    )
    assert sizes and min(sizes) >= 14, f"training-diagram labels too small for a projector: {sizes}"
    _screens(page, "projector-training")
