"""Fixtures the test files share.

Models: `llama` and `bart` are the random test models (random-llama, random-bart), built once per
test module; a module about the shipped models overrides them with tiny-llama and tiny-bart.

Browser: `app_url` starts one `streamlit run app.py` on a free localhost port per test module;
`page` drives Debian's /usr/bin/chromium against it through Playwright (never a downloaded
browser; with CI set, a missing Chromium fails instead of skipping).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

import models

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
SHOTS = ROOT / "artifacts" / "screenshots"
# Without the background-networking flags Chromium tries to reach outside hosts at every start.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def pytest_collection_modifyitems(items) -> None:
    # A browser test starts a server and a browser: always more than a few seconds.
    for item in items:
        if item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch on one thread for a module: on two shared CPU cores, tiny models run faster on one
    thread than fighting for two. (`pytestmark = pytest.mark.usefixtures("one_torch_thread")`)"""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def llama():
    return models.load("random-llama")


@pytest.fixture(scope="module")
def bart():
    return models.load("random-bart")


# ---------------------------------------------------------------------------------------------
# The browser

# Generous on purpose: a busy 2-core machine runs a trace and draws its figures far slower than an
# idle one. Every wait is for the asserted state, so a fast machine never waits this long.
BROWSER_TIMEOUT_MS = 90_000


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
        for _ in range(1200):  # up to two minutes: each round waits on the process, not a sleep
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
            pytest.fail("streamlit did not answer /_stcore/health within two minutes")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def browser(chromium):
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=BROWSER_TIMEOUT_MS)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def page(browser, app_url):
    """One tab on the app, kept across a module's tests (they build on each other's state)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1440, "height": 1600})
    page = context.new_page()
    page.set_default_timeout(BROWSER_TIMEOUT_MS)
    page.goto(app_url)
    yield page
    context.close()
