"""What a class relies on, without a browser: the figures built unchecked for speed are valid
plotly, the app traces on one torch thread, the cache doctor's numbers read as its chart shows
them, and the training page opens on an example the model knows (or the sidebar's prompt)."""

from __future__ import annotations

import gc
import json
import re

import plotly.graph_objects as go
import pytest
from streamlit.testing.v1 import AppTest

import models
import tracer
from models import scenarios
from stepwise_app import ui
from tests.test_app import navigation_app  # noqa: F401  (autouse: AppTest in st.navigation mode)
from tracer.plots import generation as g


@pytest.fixture(scope="module")
def llama_trace() -> tracer.Trace:
    model, tok = models.load("random-llama")
    return tracer.trace_generation(model, tok, "the cat sat on the mat", max_new_tokens=3)


@pytest.fixture(scope="module")
def uncached_llama_trace() -> tracer.Trace:
    model, tok = models.load("random-llama")
    return tracer.trace_generation(model, tok, "the cat sat on the mat", max_new_tokens=3, use_cache=False)


@pytest.fixture(scope="module")
def bart_trace() -> tracer.Trace:
    model, tok = models.load("random-bart")
    return tracer.trace_generation(model, tok, "the cat sat on the mat", max_new_tokens=3)


# The views a step change rebuilds, built unchecked (tracer.plots.common.unchecked_figure), as
# builder(trace, step) for each kind of attention and layout: one head, all heads as one row per
# head (a cached decode step) or a panel per head (prefill, cache off, encoder; narrow or wide).
UNCHECKED_VIEWS = {
    "top-10": g.topk_figure,
    **{
        f"{kind} heads{' narrow' if narrow else ''}": (
            lambda tr, step, kind=kind, narrow=narrow: g.attention_heads_figure(tr, step, kind, 0, narrow)
        )
        for kind in ("self", "cross", "encoder")
        for narrow in (False, True)
    },
    **{
        f"{kind} head 1": lambda tr, step, kind=kind: g.attention_figure(tr, step, kind, 0, 1)
        for kind in ("self", "cross", "encoder")
    },
    **{
        f"{kind} stitched": lambda tr, step, kind=kind: g.stitched_attention_figure(tr, kind, 0, 1, step)
        for kind in ("self", "cross", "encoder")
    },
}


def _spec(fig: go.Figure) -> dict:
    """The figure as the browser gets it (plotly's JSON; its arrays as lists or base64)."""
    return json.loads(fig.to_json())


@pytest.mark.parametrize("view", UNCHECKED_VIEWS, ids=str)
def test_figures_built_unchecked_pass_plotly_validation(llama_trace, uncached_llama_trace, bart_trace, view):
    for tr in (llama_trace, uncached_llama_trace, bart_trace):
        for step in range(len(tr.steps)):
            spec = _spec(UNCHECKED_VIEWS[view](tr, step))
            assert _spec(go.Figure(spec)) == spec  # the checking constructor accepts it unchanged


def test_a_heads_figure_keeps_its_axes_when_another_is_built_on_the_same_grid(
    llama_trace, uncached_llama_trace
):
    # Both draw a panel per head on the grid made once for that shape; each fills in its own copy.
    first = g.attention_heads_figure(llama_trace, 0, "self", 0)
    spec = _spec(first)
    longer = g.attention_heads_figure(uncached_llama_trace, len(uncached_llama_trace.steps) - 1, "self", 0)
    assert len(longer.layout.xaxis.tickvals) > len(first.layout.xaxis.tickvals)  # other labels, same grid
    assert _spec(first) == spec
    assert _spec(g.attention_heads_figure(llama_trace, 0, "self", 0)) == spec


def test_the_app_traces_on_one_torch_thread(monkeypatch):
    import torch

    seen = []
    monkeypatch.setattr(tracer, "trace_generation", lambda *a, **k: seen.append(torch.get_num_threads()))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        ui.run_trace("random-llama", "the cat sat", max_new_tokens=1)
    finally:
        torch.set_num_threads(threads)
    assert seen == [1]


# ---------------------------------------------------------------------------------------------
# The cache doctor's numbers as the class reads them


@pytest.fixture(scope="module")
def crashed_report():
    return scenarios.check("side-inputs", "broken", max_new_tokens=4)


def test_the_doctor_shows_whole_cache_lengths_and_the_metric_as_the_chart_does(crashed_report):
    from tracer.plots import doctor as d

    table = d.steps_table(crashed_report)
    assert str(table["cache after"].dtype) == "Int64"  # 10, not 10.000000; blank where nothing ran
    assert table["cache after"].iloc[0] == crashed_report.cached.steps[0].cache_seq_len()
    largest = max(x for x in crashed_report.max_logit_diff if x == x)
    shown = d.largest_logit_diff(crashed_report)
    assert shown == (f"< {d.LOG_FLOOR:.0e}" if largest < d.LOG_FLOOR else f"{largest:.2e}")
    # The chart plots the same floor: a difference of 0 sits at 1e-12, and the metric says < 1e-12.
    fig = d.logit_diff_figure(crashed_report)
    assert min(v for v in fig.data[0].y if v is not None) >= d.LOG_FLOOR


def test_the_noise_limit_of_a_crashed_run_draws_a_mark(crashed_report):
    from tracer.plots import doctor as d

    limit = next(t for t in d.logit_diff_figure(crashed_report).data if t.name.startswith("noise limit"))
    points = [y for y in limit.y if y is not None]
    assert len(points) >= 1 and "markers" in limit.mode  # one compared step still shows a mark


# ---------------------------------------------------------------------------------------------
# The training page inside the app: an example in the model's vocabulary, the sidebar's prompt


def _training_in_app(prompt: str | None = None) -> AppTest:
    at = AppTest.from_file("../stepwise_app/app.py", default_timeout=120).run()
    if prompt is not None:
        at.sidebar.text_area(key="prompt").input(prompt).run()
    return at.switch_page("pages/training_step.py").run()


def test_the_training_page_opens_on_tiny_llamas_example_without_unknown_words():
    at = _training_in_app()
    assert not at.exception and not at.warning, [w.value for w in at.warning]
    prompt, answer = models.EXAMPLES["tiny-llama"][0]
    assert [t.value for t in at.text_input][:2] == [prompt, answer]
    loss = float(re.search(r"loss = ([0-9.]+)", " ".join(m.value for m in at.markdown)).group(1))
    assert loss < 1.0  # the trained model knows its own example


def test_the_training_page_follows_the_sidebars_prompt():
    prompt, answer = models.EXAMPLES["tiny-llama"][1]
    at = _training_in_app(prompt)
    assert not at.exception
    assert [t.value for t in at.text_input][:2] == [prompt, answer]


# ---------------------------------------------------------------------------------------------
# The server's settings: offline, quiet, no collection after every run


def test_the_server_starts_without_an_outside_lookup_and_without_a_file_watcher(monkeypatch):
    from pathlib import Path

    from streamlit import config, net_util
    from streamlit.web import bootstrap

    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # .streamlit/config.toml is read from here
    config.get_config_options(force_reparse=True)
    try:
        assert config.get_option("server.fileWatcherType") == "none"  # no inotify flood from a .venv
        assert config.get_option("runner.postScriptGC") is False
        assert config.get_option("browser.gatherUsageStats") is False

        def outside(*_):
            raise AssertionError("Streamlit looked up the external IP")

        monkeypatch.setattr(net_util, "get_external_ip", outside)
        bootstrap._print_url(is_running_hello=False)  # what `streamlit run` prints at start
    finally:
        monkeypatch.undo()
        config.get_config_options(force_reparse=True)


def test_what_the_imports_made_is_frozen_once_out_of_the_collectors_way():
    ui.import_the_tracer()
    frozen = gc.get_freeze_count()
    assert frozen > 100_000  # torch and transformers: a full collection no longer walks them
    ui.import_the_tracer()  # a later Run freezes nothing more: what sessions make stays collectable
    assert gc.get_freeze_count() == frozen


def test_the_figure_cache_builds_each_view_once_and_keeps_the_newest():
    cache = ui.FigureCache(max_entries=2)
    builds = []

    def build(name):
        builds.append(name)
        return name.upper()

    assert cache.get(("a",), lambda: build("a")) == "A"
    assert cache.get(("a",), lambda: build("a")) == "A"  # a hit: not built again
    cache.get(("b",), lambda: build("b"))
    cache.get(("a",), lambda: build("a"))  # a is now the newest
    cache.get(("c",), lambda: build("c"))  # evicts b, the oldest
    assert len(cache) == 2
    cache.get(("b",), lambda: build("b"))
    assert builds == ["a", "b", "c", "b"]


def test_view_caches_the_views_of_any_record_by_its_identity():
    from tests.tracefactory import make_trace

    built = []

    def summary(record, *args):  # stands for any builder of tracer.plots
        built.append(args)  # not the record: the test lets it go below
        return len(built)

    training, generation = make_trace(), make_trace("encoder-decoder")  # any two records
    first = ui.view(summary, 3, record=training)
    assert ui.view(summary, 3, record=training) == first  # the same record: built once
    assert ui.view(summary, 4, record=training) != first  # other arguments
    assert ui.view(summary, 3, record=make_trace()) != first  # an equal record read again: its own views
    # A record among the arguments counts by its identity too (it cannot be hashed by content).
    beside = ui.view(summary, generation, record=training)
    assert ui.view(summary, generation, record=training) == beside and len(built) == 4
    # A collected record's id is forgotten: a new object at the same address is a new record.
    known = len(ui.record_id._ids)
    del training
    gc.collect()
    assert len(ui.record_id._ids) < known
