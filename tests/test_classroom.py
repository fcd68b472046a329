"""What a class on one server relies on, without a browser: the figures built unchecked for speed
are valid plotly, and the app's tracing runs torch on one thread."""

from __future__ import annotations

import plotly.graph_objects as go
import pytest

import models
import tracer
import ui
from tracer.plots import generation as g


@pytest.fixture(scope="module")
def llama_trace() -> tracer.Trace:
    model, tok = models.load("random-llama")
    return tracer.trace_generation(model, tok, "the cat sat on the mat", max_new_tokens=3)


@pytest.mark.parametrize("builder", [g.call_flow_figure, g.topk_figure])
def test_figures_built_unchecked_pass_plotly_validation(llama_trace, builder):
    for step in range(len(llama_trace.steps)):
        spec = builder(llama_trace, step).to_dict()
        assert go.Figure(spec).to_dict() == spec  # the checking constructor accepts it unchanged


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
