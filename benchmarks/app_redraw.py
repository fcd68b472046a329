"""How long the app takes to redraw after moving to another step, for a 64-step trace.

    .venv/bin/python benchmarks/app_redraw.py [--model tiny-llama] [--steps 64]

Records a trace of the shipped model (tiny-llama, else random-llama), opens it in the app
through streamlit.testing.v1.AppTest (the real scripts, no browser), and times a step change on
the step replay, attention and KV cache pages: the first visit of each step (figures built) and
a second visit (figures from the cache). Also times the figure builders alone. Prints
milliseconds; it passes or fails nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamlit.runtime.pages_manager import PagesManager  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

import models  # noqa: E402
import tracer  # noqa: E402
from stepwise_app import ui  # noqa: E402
from tracer.plots import generation as g  # noqa: E402

# See tests/test_app.py: keep AppTest in st.navigation mode although a pages/ folder exists.
_original_init = PagesManager.__init__


def _init(self, *args, **kwargs):
    _original_init(self, *args, **kwargs)
    PagesManager.uses_pages_directory = False


PagesManager.__init__ = _init


def ms(seconds: list[float]) -> str:
    values = [s * 1000 for s in seconds]
    return f"median {statistics.median(values):6.1f} ms, max {max(values):6.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=ui.default_model())
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--visits", type=int, default=12, help="step changes timed per page")
    args = parser.parse_args()

    model, tok = models.load(args.model)
    prompt = ui.EXAMPLES.get(args.model, ui.GENERIC_EXAMPLES)[0]
    # Keep going past an end-of-sequence token: the point is a trace of `steps` steps.
    model.generation_config.eos_token_id = None
    start = time.perf_counter()
    tr = tracer.trace_generation(model, tok, prompt, max_new_tokens=args.steps, model_name=args.model)
    print(f"{args.model}: traced {len(tr.steps)} steps in {time.perf_counter() - start:.1f} s")

    at = AppTest.from_file(str(ROOT / "stepwise_app" / "app.py"), default_timeout=120).run()
    at.sidebar.file_uploader(key="upload").upload("bench.trace", tr.to_bytes())
    at.run()
    steps = [int(i * (len(tr.steps) - 1) / (args.visits - 1)) for i in range(args.visits)]
    for page in ("pages/step_replay.py", "pages/attention.py", "pages/kv_cache.py"):
        at.switch_page(page).run()
        for label in ("first visit", "cached"):
            times = []
            for step in steps:
                t0 = time.perf_counter()
                at.slider(key="_w_step").set_value(step).run()
                times.append(time.perf_counter() - t0)
                assert not at.exception, at.exception
            print(f"{page:24s} step change, {label:11s}: {ms(times)}")

    print("figure builders alone (no cache):")
    last = len(tr.steps) - 1
    builders = {
        "call_flow_html": lambda: g.call_flow_html(tr, last),
        "topk_figure": lambda: g.topk_figure(tr, last),
        "prepare_inputs_table": lambda: g.prepare_inputs_table(tr, last),
        "attention_heads_figure": lambda: g.attention_heads_figure(tr, last, "self", 0),
        "stitched_attention_figure": lambda: g.stitched_attention_figure(tr, "self", 0, 0, last),
        "cache_growth_figure": lambda: g.cache_growth_figure(tr),
    }
    for name, build in builders.items():
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            build()
            times.append(time.perf_counter() - t0)
        print(f"  {name:26s}: {ms(times)}")


if __name__ == "__main__":
    main()
