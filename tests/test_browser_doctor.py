"""The cache doctor's batch scenarios in a real browser: pick one, read the verdict, projector and phone.

`streamlit run app.py` driven by Debian's Chromium through Playwright (fixtures in conftest.py).
Every locator matches exactly one element, and every wait is for the asserted state.
"""

from __future__ import annotations

import re

import pytest

from models import scenarios
from tests.conftest import BROWSER_TIMEOUT_MS, SHOTS

pytestmark = pytest.mark.browser

VIEWPORTS = {"projector": (1280, 720), "phone": (390, 844)}


@pytest.mark.parametrize("screen", list(VIEWPORTS))
def test_a_batch_scenario_on_the_doctor_page(browser, app_url, screen):
    from playwright.sync_api import expect

    width, height = VIEWPORTS[screen]
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.set_default_timeout(BROWSER_TIMEOUT_MS)
    try:
        page.goto(f"{app_url}/cache_doctor")
        expect(page.get_by_role("heading", name="Cache doctor", exact=True, level=1)).to_be_visible()
        # The first scenario's report drawn before another is picked: a pick that interrupts a
        # run still computing its report once left that run's chart beside the new one (seen on
        # a busy machine: two "doctor_logit_diff" charts, the old one never cleared).
        expect(page.locator(".st-key-doctor_logit_diff .gtitle")).to_have_text(
            re.compile(r"^Logit difference per step, cache on vs off$")
        )
        # The page's last section drawn: the run is over (Streamlit's status widget shows only after
        # a delay, so its absence alone can come before a slow run's end).
        expect(page.get_by_role("heading", name="The code", exact=True)).to_be_visible()
        expect(page.locator('[data-testid="stStatusWidget"]')).to_have_count(0)
        title = scenarios.get("batch-right-padding").title
        page.locator(".st-key-doctor_scenario").get_by_role("combobox").click()
        page.get_by_role("option", name=title, exact=True).click()
        verdict = page.get_by_role("alert").filter(has_text=re.compile(r"^Row 1 of the batch"))
        expect(verdict).to_have_text(
            "Row 1 of the batch parts from its prompt generated alone at step 0, from decoder layer 0 on."
        )
        expect(
            page.get_by_text(re.compile(r"^Generates a batch and one of its prompts alone"))
        ).to_be_visible()
        # Until the run ends, the last scenario's chart stays on the page as a stale element beside
        # the new one (a busy machine drew the verdict long before the run ended): one chart after.
        expect(page.locator('[data-testid="stStatusWidget"]')).to_have_count(0)
        expect(page.locator(".st-key-doctor_logit_diff .gtitle")).to_have_text(
            re.compile(r"^Logit difference per step,\s*row 1 of the batch vs the prompt alone$")
        )
        expect(page.locator('[data-testid="stException"]')).to_have_count(0)
        verdict.scroll_into_view_if_needed()
        page.screenshot(path=SHOTS / f"cache_doctor_batch_{screen}.png")
        page.screenshot(path=SHOTS / f"cache_doctor_batch_{screen}_full.png", full_page=True)
    finally:
        context.close()
