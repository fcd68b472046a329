"""A batch with beam search in a real browser, at 1280x720 (projector) and 390x844 (phone).

The sidebar's batch toggle and beam search settings run a batch of two prompts with two beams;
the Overview shows every row side by side, the Attention page a padded row's masked keys and the
Beams page the tree, the candidates and the reorder. Checked with bounding boxes: Run shows
without scrolling, nothing is wider than the screen, every figure lies inside it. Screenshots
go to artifacts/screenshots/batch-*.png.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest

from models import EXAMPLES
from tests.conftest import SHOTS
from tests.test_browser_layout import (  # noqa: F401
    PHONE,
    PROJECTOR,
    _box,
    _call_flow,
    _figure,
    _idle,
    _in_viewport,
    open_app,
)

pytestmark = pytest.mark.browser


def _run_batch_with_beams(page, phone: bool) -> str:
    """Switch on the batch and beam search in the sidebar, run, and return the link's query."""
    from playwright.sync_api import expect

    sidebar = page.locator('[data-testid="stSidebar"]')
    if phone:
        page.get_by_test_id("stExpandSidebarButton").click()
    sidebar.get_by_text("Batch: several prompts", exact=True).click()
    expect(sidebar.get_by_text("Prompts, one per line", exact=True)).to_be_visible()
    expect(sidebar.get_by_role("textbox", name="Prompts, one per line")).to_have_value(re.compile(r".+\n.+"))
    sidebar.get_by_text("beam search", exact=True).click()
    expect(sidebar.get_by_text("Beams (num_beams)", exact=True)).to_be_visible()
    _idle(page)
    run = sidebar.get_by_role("button", name="Run trace", exact=True)
    run.scroll_into_view_if_needed()
    page.evaluate("document.querySelector('[data-testid=\"stSidebarContent\"]').scrollTo(0, 0)")
    _in_viewport(page, run, "Run trace")  # under the taller prompt box, still without scrolling
    page.screenshot(path=SHOTS / f"batch-{'phone' if phone else 'projector'}-sidebar.png")
    run.click()
    expect(sidebar.get_by_text(re.compile(r"^Traced \d+ steps\.$"))).to_be_visible()
    expect(page).to_have_url(re.compile(r"trace=[0-9a-f]+"))
    _idle(page)
    if phone:
        page.get_by_test_id("stSidebarCollapseButton").click()
    return urlsplit(page.url).query


def _fits(page, keys: list[str], name: str) -> None:
    """Nothing wider than the screen: no side scroll, and every figure inside the viewport's width."""
    width = page.viewport_size["width"]
    scroll = page.evaluate("document.querySelector('[data-testid=\"stMain\"]').scrollWidth")
    assert scroll <= width, f"{name}: the page scrolls sideways ({scroll} > {width})"
    page.screenshot(path=SHOTS / f"batch-{name}.png")
    for key in keys:
        figure = _figure(page, key)
        box = _box(figure)
        assert box["x"] >= 0 and box["x"] + box["width"] <= width + 1, f"{name}: {key} overflows: {box}"
        figure.screenshot(path=SHOTS / f"batch-{name}-{key}.png")  # scrolled into view


def _open(page, app_url: str, path: str, query: str, **view) -> None:
    from playwright.sync_api import expect

    query = re.sub(r"&(step|row)=\d+", "", query)
    extra = "".join(f"&{k}={v}" for k, v in view.items())
    page.goto(f"{app_url}/{path}?{query}{extra}")
    expect(page.locator('[data-testid="stSidebar"]').get_by_text("Opened the linked trace")).to_be_attached()
    _idle(page)


@pytest.mark.parametrize("size", ["projector", "phone"])
def test_a_batch_with_beams_fits_the_screen_on_every_view(open_app, app_url, size):  # noqa: F811
    from playwright.sync_api import expect

    phone = size == "phone"
    page = open_app(PHONE if phone else PROJECTOR)
    query = _run_batch_with_beams(page, phone)

    _open(page, app_url, "beams", query, step=1, row=1)
    expect(page.get_by_role("heading", name="Beams", exact=True, level=1)).to_be_visible()
    picker = page.locator('[data-testid="stSelectbox"]').filter(has_text="Hypothesis")
    # one hypothesis per prompt (the checkpoint's num_return_sequences): row 1 is prompt 1's best
    expect(picker.get_by_role("combobox")).to_have_value(re.compile(r"^prompt 1, hypothesis 0 \(best\)"))
    tree = _figure(page, "beam_tree")
    expect(tree.locator(".scatterlayer .trace").first).to_be_attached()
    expect(page.locator(".st-key-candidates_table")).to_be_visible()
    _fits(page, ["beam_tree", "reorder"], f"{size}-beams")

    _open(page, app_url, "", query, row=0)  # the Overview: every row side by side
    _fits(page, ["batch_rows"], f"{size}-overview")

    _open(page, app_url, "attention", query, step=0, row=0)  # prompt 0 is the shorter: left pads
    heads = _figure(page, "attention_heads")
    expect(page.get_by_text(re.compile("Grey crossed cells are masked keys"))).to_be_visible()
    assert heads.evaluate("e => e.data.filter(t => t.name === 'masked').length") > 0
    _fits(page, ["attention_heads", "attention_run"], f"{size}-attention")

    _open(page, app_url, "step_replay", query, step=1, row=0)
    rows_table = page.locator(".st-key-step_rows_table [data-testid='stDataFrame']")
    expect(rows_table.locator("canvas").first).to_be_attached()
    rows_table.scroll_into_view_if_needed()
    assert _box(rows_table)["height"] > 150  # the header and a line for each beam of both prompts
    rows_table.screenshot(path=SHOTS / f"batch-{size}-step-rows.png")
    flow = _box(_call_flow(page))
    assert flow["x"] >= 0 and flow["x"] + flow["width"] <= page.viewport_size["width"] + 1, flow
    _fits(page, ["topk"], f"{size}-step-replay")


@pytest.mark.parametrize("size", ["projector", "phone"])
def test_a_bart_batch_shows_its_source_mask_in_the_encoder_and_cross_attention(open_app, app_url, size):  # noqa: F811
    from playwright.sync_api import expect

    phone = size == "phone"
    page = open_app(PHONE if phone else PROJECTOR)
    sidebar = page.locator('[data-testid="stSidebar"]')
    if phone:
        page.get_by_test_id("stExpandSidebarButton").click()
    sidebar.get_by_role("combobox", name=re.compile("Model")).click()
    page.get_by_role("option", name="tiny-bart", exact=True).click()
    # The model change puts BART's example in the prompt box. Toggling the batch before the box shows
    # it would send the box's old text back (the tiny Llama's prompt, <unk> to BART).
    prompt = sidebar.get_by_role("textbox", name="Prompt", exact=True)
    expect(prompt).to_have_value(EXAMPLES["tiny-bart"][0][0])
    _idle(page)
    sidebar.get_by_text("Batch: several prompts", exact=True).click()
    expect(sidebar.get_by_role("textbox", name="Prompts, one per line")).to_have_value(re.compile(r".+\n.+"))
    _idle(page)
    sidebar.get_by_role("button", name="Run trace", exact=True).click()
    expect(sidebar.get_by_text(re.compile(r"^Traced \d+ steps\.$"))).to_be_visible()
    expect(page).to_have_url(re.compile(r"trace=[0-9a-f]+"))
    _idle(page)
    if phone:
        page.get_by_test_id("stSidebarCollapseButton").click()
    query = urlsplit(page.url).query

    # Row 0, the shorter source, is padded on the right; its pads are masked keys in both figures.
    _open(page, app_url, "attention", query, step=1, row=0, kind="cross")
    expect(page.get_by_text("The source's padding mask, from the encoder to cross-attention")).to_be_visible()
    figure = _figure(page, "encoder_mask")
    assert figure.evaluate("e => e.data.filter(t => t.name === 'masked').map(t => t.xaxis)") == ["x", "x2"]
    _fits(page, ["encoder_mask", "attention_heads"], f"{size}-bart-attention")
    _open(page, app_url, "", query, row=0)
    _fits(page, ["batch_source", "batch_rows"], f"{size}-bart-overview")
