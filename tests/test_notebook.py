"""Stepwise in Jupyter: the HTML a Trace, a Step and a CacheReport show, figures that need no
network, and the example notebook (docs/stepwise.ipynb) run top to bottom in a real kernel."""

from __future__ import annotations

import html
import re
from pathlib import Path

import plotly.io as pio
import pytest

import tracer
import tracer.notebook
from models import scenarios
from tests.tracefactory import make_trace
from tracer.plots import generation as g

ROOT = Path(__file__).resolve().parents[1]
# A script that loads anything from elsewhere: plotly.js or MathJax from a CDN, say.
REMOTE_SCRIPT = re.compile(r"<script[^>]*\bsrc\s*=", re.IGNORECASE)
PLOTLY_JS_BYTES = 1_000_000  # plotly.js itself is about 4.6 MB; a figure without it, a few KB


def test_a_trace_shows_its_summary_tokens_and_steps():
    tr = make_trace(steps=3)
    page = tr._repr_html_()
    assert html.escape(g.trace_summary(tr)) in page  # the summary names eos ids such as </s>
    assert page.count("</tr>") == 1 + len(tr.steps)  # the header and one row per step
    for step in tr.steps:
        assert f"<td>{tr.token_text(step.chosen_id)}</td>" in page
    assert "more steps" not in page


def test_a_long_trace_shows_its_first_and_last_steps_only():
    tr = make_trace(steps=20)
    page = tr._repr_html_()
    shown = tracer.notebook.HEAD_ROWS + tracer.notebook.TAIL_ROWS
    assert f"… {20 - shown} more steps" in page
    assert page.count("</tr>") == 2 + shown  # two tables, each with a header


def test_a_failed_trace_says_where_it_failed():
    tr = make_trace(steps=3, error_at=1)
    page = tr._repr_html_()
    assert "failed at step 1" in page


def test_a_step_shows_what_it_was_fed_the_cache_and_its_choice():
    tr = make_trace(steps=3, prompt_len=4)
    step = tr.steps[1]
    page = step._repr_html_()
    assert "<b>Step 1</b> (decode): fed input_ids [1×1], cache 5 positions after it" in page
    assert f"chose <code>{step.topk[0].text}</code>" in page
    assert f"{len(step.events)} recorded calls" in page
    failed = make_trace(steps=3, error_at=2).steps[2]
    assert "no token (the step failed)" in failed._repr_html_()


def test_a_cache_report_shows_the_verdict_the_runs_and_the_fix():
    broken = scenarios.check("side-inputs", "broken", max_new_tokens=3)
    page = broken._repr_html_()
    assert "The cached run crashes at step 1." in page
    assert "(crashed)" in page and "The usual fix" in page

    fixed = scenarios.check("side-inputs", "fixed", max_new_tokens=3)
    page = fixed._repr_html_()
    assert "Consistent" in page and "The usual fix" not in page


def figure_html(fig) -> str:
    """What Jupyter stores for a figure that ends a cell, as text/html."""
    return fig._repr_mimebundle_(include=None, exclude=None)["text/html"]


def test_figures_embed_plotly_js_once_and_load_nothing(monkeypatch):
    monkeypatch.setattr(pio.renderers, "default", pio.renderers.default)  # restored after the test
    tracer.notebook.offline_figures()
    tr = make_trace(steps=3)
    first = figure_html(g.attention_heads_figure(tr, 1, "self", 0))
    second = figure_html(g.cache_growth_figure(tr))
    assert len(first) > PLOTLY_JS_BYTES and "Plotly" in first
    assert len(second) < PLOTLY_JS_BYTES and "Plotly.newPlot" in second
    assert not REMOTE_SCRIPT.search(first) and not REMOTE_SCRIPT.search(second)
    bundle = g.cache_growth_figure(tr)._repr_mimebundle_(include=None, exclude=None)
    assert "application/vnd.plotly.v1+json" in bundle  # JupyterLab and VS Code draw this one

    tracer.notebook.offline_figures()  # called again (a notebook run anew): embedded again
    assert len(figure_html(g.cache_growth_figure(tr))) > PLOTLY_JS_BYTES


@pytest.mark.slow
def test_the_example_notebook_runs_top_to_bottom_offline(monkeypatch, tmp_path):
    import nbclient
    import nbformat

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the kernel imports tracer and models from here
    notebook = nbformat.read(ROOT / "docs" / "stepwise.ipynb", as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError naming the cell if any cell fails

    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    pages = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert any("<b>Trace</b> tiny-llama" in p for p in pages)
    assert any("<b>Step 2</b> (decode)" in p for p in pages)
    assert any("Consistent" in p for p in pages)
    assert any("The cached run crashes at step 1." in p for p in pages)
    figures = [p for p in pages if "Plotly.newPlot" in p]
    assert len(figures) == 2
    assert [len(p) > PLOTLY_JS_BYTES for p in figures] == [True, False]  # plotly.js once, inside
    assert not [p for p in pages if REMOTE_SCRIPT.search(p)]
