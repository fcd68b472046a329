"""The app in a real browser: `streamlit run app.py` driven by Debian's Chromium through Playwright.

Runs a trace through the sidebar, visits every page, checks that each figure is drawn and that
no exception is shown, and saves screenshots under artifacts/screenshots/.

Every locator matches exactly one element (Playwright's strict mode fails a test otherwise): a
role with its exact name, or an element inside one keyed figure (`.st-key-<key>`, the class
Streamlit gives an element created with `key=`). Every wait is for the state that is asserted,
so the tests hold on a slow, busy machine.
"""

from __future__ import annotations

import json
import re

import pytest

from models import EXAMPLES
from tests.conftest import ROOT, SHOTS

pytestmark = pytest.mark.browser


def _no_exception(page) -> None:
    from playwright.sync_api import expect

    expect(page.locator('[data-testid="stException"]')).to_have_count(0)


def _idle(page) -> None:
    """Wait until the app has finished its current script run."""
    from playwright.sync_api import expect

    expect(page.locator('[data-testid="stStatusWidget"]')).to_have_count(0)


def _open(page, title: str) -> None:
    from playwright.sync_api import expect

    page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=title, exact=True).click()
    expect(page.get_by_role("heading", name=title, exact=True, level=1)).to_be_visible()


def _figure(page, key: str):
    """The one plotly figure a page shows under `key`, once plotly has drawn it.

    While Streamlit swaps a figure for a new one, the old and the new can both be in the page for
    a moment (seen on a busy machine): wait until exactly one is left.
    """
    from playwright.sync_api import expect

    figure = page.locator(f".st-key-{key} .js-plotly-plot")
    expect(figure).to_have_count(1)
    expect(figure).to_be_visible()
    return figure


def _expect_title(page, key: str, text: str) -> None:
    """The figure under `key` is titled with `text` (and is the only figure there)."""
    from playwright.sync_api import expect

    expect(page.locator(f".st-key-{key} .gtitle").filter(has_text=text)).to_have_count(1)
    _figure(page, key)


def _heads(model: str) -> int:
    config = json.loads((ROOT / "models" / "checkpoints" / model / "config.json").read_text())
    return int(config.get("decoder_attention_heads") or config["num_attention_heads"])


def test_run_a_trace_and_replay_it_in_the_browser(page):
    from playwright.sync_api import expect

    sidebar = page.locator('[data-testid="stSidebar"]')
    expect(sidebar.get_by_role("combobox", name="Model")).to_have_value("tiny-llama")
    sidebar.get_by_role("button", name="Run trace", exact=True).click()
    expect(sidebar.get_by_text(re.compile(r"^Traced \d+ steps\.$"))).to_be_visible()
    expect(page.locator(".st-key-steps_table")).to_be_visible()
    expect(page.locator(".st-key-settings_table")).to_be_visible()
    _idle(page)
    _no_exception(page)
    page.screenshot(path=SHOTS / "overview.png", full_page=True)

    _open(page, "Step replay")
    page.get_by_role("button", name="Next ▶", exact=True).click()
    expect(page.get_by_text(re.compile(r"so only the new token"))).to_be_visible()
    # Both figures show step 1 (the fragment redraws them one after the other).
    expect(page.locator(".st-key-call_flow").get_by_text(re.compile(r"^step 1 \(decode\)"))).to_have_count(1)
    _expect_title(page, "topk", "Step 1: next-token distribution")
    _idle(page)
    _no_exception(page)
    page.screenshot(path=SHOTS / "step_replay.png", full_page=True)

    _open(page, "Attention")
    # Plotly draws a heatmap as an <image> in its heatmap layer. Step 1 is a cached decode step: all
    # heads in one matrix, a row per head; then the whole run.
    heads = _figure(page, "attention_heads")
    expect(heads.locator("g.hm image")).to_have_count(1)
    expect(heads.locator(".ytick text")).to_have_count(_heads("tiny-llama"))
    expect(_figure(page, "attention_run").locator("g.hm image")).to_have_count(1)
    _idle(page)
    _no_exception(page)
    page.screenshot(path=SHOTS / "attention.png", full_page=True)

    _open(page, "KV cache")
    _figure(page, "cache_growth")
    _figure(page, "cache_on_off")
    _idle(page)
    _no_exception(page)
    page.screenshot(path=SHOTS / "kv_cache.png", full_page=True)


def test_a_bart_trace_shows_cross_attention_in_the_browser(page):
    from playwright.sync_api import expect

    sidebar = page.locator('[data-testid="stSidebar"]')
    model = sidebar.get_by_role("combobox", name="Model")
    model.click()
    page.get_by_role("option", name="tiny-bart", exact=True).click()
    expect(model).to_have_value("tiny-bart")
    # The model change reruns the script and puts BART's example in the prompt box; a click before
    # the box shows it would be lost, or send the tiny Llama's prompt back (<unk> to BART).
    prompt = sidebar.get_by_role("textbox", name="Prompt", exact=True)
    expect(prompt).to_have_value(EXAMPLES["tiny-bart"][0][0])
    _idle(page)
    sidebar.get_by_role("button", name="Run trace", exact=True).click()
    expect(sidebar.get_by_text(re.compile(r"^Traced \d+ steps\.$"))).to_be_visible()
    # Still on the KV cache page: it explains the cross-attention cache once the BART trace is in.
    expect(page.get_by_text(re.compile(r"Dashed: the cross-attention cache"))).to_be_visible()
    _idle(page)

    _open(page, "Attention")
    page.get_by_role("radiogroup", name="Attention").get_by_text(
        "cross-attention (decoder → encoder)", exact=True
    ).click()
    _idle(page)
    head = page.get_by_role("combobox", name="Head", exact=True)
    head.click()
    page.get_by_role("option", name="head 0", exact=True).click()
    expect(head).to_have_value("head 0")
    _expect_title(page, "attention_head", "head 0: cross-attention")
    expect(_figure(page, "attention_head").locator("g.hm image")).to_have_count(1)
    _expect_title(page, "attention_run", "head 0: cross-attention")
    _idle(page)
    _no_exception(page)
    page.screenshot(path=SHOTS / "attention_bart.png", full_page=True)

    _open(page, "Step replay")
    # The chosen step is shared by the pages (step 1, from the first test): go back to step 0,
    # where BART's encoder runs once, before the decoder's first step.
    prev = page.get_by_role("button", name="◀ Prev", exact=True)
    if prev.is_enabled():
        prev.click()
    expect(prev).to_be_disabled()
    expect(page.locator(".st-key-call_flow").get_by_text("encoder", exact=True)).to_have_count(1)
    _idle(page)
    _no_exception(page)
    page.screenshot(path=SHOTS / "step_replay_bart.png", full_page=True)


def test_the_cache_doctor_and_training_pages_in_the_browser(page):
    from playwright.sync_api import expect

    _open(page, "Cache doctor")
    # The default scenario's broken variant: the cached run crashes at step 1 with the shapes named.
    verdict = page.get_by_role("alert").filter(has_text=re.compile(r"^The cached run crashes"))
    expect(verdict).to_have_text("The cached run crashes at step 1.")
    summary = page.get_by_text(re.compile(r"^The cached run fails at step 1 .*cannot be broadcast"))
    expect(summary).to_be_visible()
    _figure(page, "doctor_logit_diff")
    _idle(page)
    _no_exception(page)
    page.screenshot(path=SHOTS / "cache_doctor.png", full_page=True)

    _open(page, "Training step")
    _figure(page, "shift-figure")
    _idle(page)
    _no_exception(page)
    page.screenshot(path=SHOTS / "training_step.png", full_page=True)
