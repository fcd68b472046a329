"""Notebook output in a real browser with the network off: the figures `tracer.notebook` renders draw
from the plotly.js embedded in the first of them, and the page asks no server for anything."""

from __future__ import annotations

import re

import plotly.io as pio
import pytest
from playwright.sync_api import expect

import tracer.notebook
from tests.conftest import SHOTS
from tests.tracefactory import make_trace
from tracer.plots import generation as g

pytestmark = pytest.mark.browser


def test_figures_draw_offline_from_the_embedded_plotly_js(browser, monkeypatch, tmp_path):
    monkeypatch.setattr(pio.renderers, "default", pio.renderers.default)  # restored after the test
    tracer.notebook.offline_figures()
    tr = make_trace(steps=4)
    # What a notebook shows, in order: a trace summary, then two figures (plotly.js in the first).
    outputs = [tr._repr_html_()] + [
        fig._repr_mimebundle_(include=None, exclude=None)["text/html"]
        for fig in (g.attention_figure(tr, 2, "self", 0, 0), g.cache_growth_figure(tr))
    ]
    notebook = tmp_path / "notebook.html"
    notebook.write_text("<html><body>" + "".join(outputs) + "</body></html>")
    figure_ids = [re.search(r'<div id="([^"]+)" class="plotly-graph-div"', page)[1] for page in outputs[1:]]

    context = browser.new_context(offline=True, viewport={"width": 1280, "height": 1400})
    requests: list[str] = []
    context.on("request", lambda request: requests.append(request.url))
    page = context.new_page()
    try:
        page.goto(notebook.as_uri())
        for figure_id in figure_ids:
            expect(page.locator(f"[id='{figure_id}'] g.cartesianlayer")).to_have_count(1)
        expect(page.locator(f"[id='{figure_ids[0]}'] g.hm image")).to_have_count(1)  # the heatmap, drawn
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "notebook-offline.png"), full_page=True)
    finally:
        context.close()
    assert [url for url in requests if not url.startswith(("file:", "data:"))] == []
