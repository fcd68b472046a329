"""The app in a real browser: `streamlit run app.py` driven by Debian's Chromium through Playwright.

Runs a trace through the sidebar, visits every page, checks that a heatmap is drawn and that no
exception is shown, and saves screenshots under artifacts/screenshots/. Never downloads a
browser: it uses /usr/bin/chromium, and in CI (env CI set) a missing one is a failure.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
SHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 60_000

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def chromium() -> str:
    if not CHROMIUM.is_file():
        message = f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install chromium)."
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return str(CHROMIUM)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def app_url():
    port = _free_port()
    SHOTS.mkdir(parents=True, exist_ok=True)  # a fresh checkout has no artifacts/ yet
    log = open(ROOT / "artifacts" / "streamlit-browser-test.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "app.py",
            "--server.headless",
            "true",
            "--server.port",
            str(port),
            "--server.address",
            "127.0.0.1",
            "--browser.gatherUsageStats",
            "false",
            "--server.fileWatcherType",
            "none",
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):  # up to a minute: each round waits on the process, not a sleep
            if _healthy(url):
                break
            try:
                proc.wait(timeout=0.1)
                pytest.fail(
                    f"streamlit exited with {proc.returncode}; see artifacts/streamlit-browser-test.log"
                )
            except subprocess.TimeoutExpired:
                pass
        else:
            pytest.fail("streamlit did not answer /_stcore/health within a minute")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def page(chromium, app_url):
    from playwright.sync_api import expect, sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1600})
        page.set_default_timeout(TIMEOUT_MS)
        expect.set_options(timeout=TIMEOUT_MS)
        page.goto(app_url)
        yield page
        browser.close()


def _no_exception(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0, "the app shows an exception"


def _idle(page) -> None:
    """Wait until the app has finished its current script run."""
    from playwright.sync_api import expect

    expect(page.locator('[data-testid="stStatusWidget"]')).to_have_count(0)


def _open(page, title: str) -> None:
    page.get_by_role("link", name=title).click()
    page.get_by_role("heading", name=title).first.wait_for()


def test_run_a_trace_and_replay_it_in_the_browser(page):
    from playwright.sync_api import expect

    sidebar = page.locator('[data-testid="stSidebar"]')
    sidebar.get_by_role("button", name="Run trace").click()
    expect(sidebar.get_by_text(re.compile(r"Traced \d+ steps\."))).to_be_visible()
    expect(page.locator('[data-testid="stDataFrame"]').first).to_be_visible()
    _no_exception(page)
    page.screenshot(path=SHOTS / "overview.png", full_page=True)

    _open(page, "Step replay")
    page.get_by_role("button", name="Next ▶").click()
    expect(page.get_by_text("so only the new token")).to_be_visible()
    expect(page.locator(".js-plotly-plot").first).to_be_visible()
    _no_exception(page)
    page.screenshot(path=SHOTS / "step_replay.png", full_page=True)

    _open(page, "Attention")
    # Plotly draws a heatmap as an <image> inside its heatmap layer.
    heatmap = page.locator(".js-plotly-plot g.hm image")
    expect(heatmap.first).to_be_attached()
    assert heatmap.count() >= 2  # all heads of the layer, and the stitched matrix
    _no_exception(page)
    page.screenshot(path=SHOTS / "attention.png", full_page=True)

    _open(page, "KV cache")
    expect(page.locator(".js-plotly-plot").first).to_be_visible()
    _no_exception(page)
    page.screenshot(path=SHOTS / "kv_cache.png", full_page=True)


def test_a_bart_trace_shows_cross_attention_in_the_browser(page):
    from playwright.sync_api import expect

    import models

    bart = "tiny-bart" if "tiny-bart" in models.available() else "random-bart"
    sidebar = page.locator('[data-testid="stSidebar"]')
    sidebar.locator('[data-testid="stSelectbox"]').filter(has_text="Model").click()
    page.get_by_role("option", name=bart, exact=True).click()
    expect(sidebar.get_by_role("combobox", name="Model")).to_have_value(bart)
    _idle(page)  # the model change reruns the script; a click during that rerun would be lost
    sidebar.get_by_role("button", name="Run trace").click()
    # Still on the KV cache page: it explains the cross-attention cache once the BART trace is in.
    expect(page.get_by_text("the cross-attention cache, the encoder's keys and values")).to_be_visible()
    _idle(page)

    _open(page, "Attention")
    page.get_by_text("cross-attention (decoder → encoder)").click()
    page.locator('[data-testid="stSelectbox"]').filter(has_text="Head").click()
    page.get_by_role("option", name="head 0", exact=True).click()
    expect(page.get_by_text(re.compile(r"head 0: cross-attention"))).to_be_visible()
    expect(page.locator(".js-plotly-plot g.hm image").first).to_be_attached()
    _no_exception(page)
    page.screenshot(path=SHOTS / "attention_bart.png", full_page=True)

    _open(page, "Step replay")
    expect(page.get_by_text("encoder", exact=True).first).to_be_attached()
    _no_exception(page)
    page.screenshot(path=SHOTS / "step_replay_bart.png", full_page=True)


def test_the_cache_doctor_and_training_pages_in_the_browser(page):
    from playwright.sync_api import expect

    _open(page, "Cache doctor")
    # The default scenario's broken variant: the cached run crashes at step 1 with the shapes named.
    expect(page.get_by_text("cannot be broadcast").first).to_be_visible()
    expect(page.locator(".js-plotly-plot").first).to_be_visible()
    _idle(page)
    _no_exception(page)
    page.screenshot(path=SHOTS / "cache_doctor.png", full_page=True)

    _open(page, "Training step")
    expect(page.locator(".js-plotly-plot").first).to_be_visible()
    _idle(page)
    _no_exception(page)
    page.screenshot(path=SHOTS / "training_step.png", full_page=True)
