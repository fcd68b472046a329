"""How much slower is a traced generate() than a plain one, and how big does the trace get?

    python benchmarks/overhead.py            # the figures in the README (a few minutes on 2 cores)
    python benchmarks/overhead.py --quick    # tiny sizes, a smoke run

For a random Llama (8 layers x 512 hidden, prompt 128, 64 new tokens) and a random BART it times,
as medians over several repetitions:
- plain `generate()` with the model's default attention (sdpa),
- `generate(output_attentions=True)` with eager attention (what transformers offers),
- `trace_generation` capturing attention (eager),
- `trace_generation` recording shapes only (the model's own attention implementation),
and prints each as a ratio to plain generate, with the trace's size in memory and on disk.
Goal: full trace at most 1.3x plain generate, shapes only at most 1.1x.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tracer
from models.random_models import build_random_bart, build_random_llama
from tracer.trace import human_bytes


def median_seconds(runs: dict[str, object], repeats: int) -> dict[str, float]:
    """Median seconds of each run. The runs take turns, so a machine that slows down or speeds
    up during the benchmark (other jobs, clock changes) weighs on all of them alike."""
    for fn in runs.values():
        fn()  # warm-up: first calls allocate and pick kernels
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(seconds) for name, seconds in times.items()}


def bench(label: str, model, input_ids: torch.Tensor, new_tokens: int, repeats: int) -> None:
    generate_kwargs = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False}

    def plain():
        model.set_attn_implementation("sdpa")
        model.generate(input_ids=input_ids, **generate_kwargs)

    def with_attentions():
        model.set_attn_implementation("eager")
        model.generate(
            input_ids=input_ids, output_attentions=True, return_dict_in_generate=True, **generate_kwargs
        )

    traces = {}

    def traced(capture: bool):
        def run():
            model.set_attn_implementation("sdpa")
            traces[capture] = tracer.trace_generation(
                model, None, input_ids=input_ids, max_new_tokens=new_tokens, capture_attention=capture
            )

        return run

    runs = {
        "generate (sdpa)": plain,
        "generate(output_attentions) eager": with_attentions,
        "trace_generation, attention captured": traced(True),
        "trace_generation, shapes only": traced(False),
    }
    timings = median_seconds(runs, repeats)
    base = timings["generate (sdpa)"]
    print(f"\n{label}: prompt {input_ids.shape[1]}, {new_tokens} new tokens, median of {repeats}")
    for name, seconds in timings.items():
        print(f"  {name:<38} {seconds * 1000:9.1f} ms   {seconds / base:5.2f}x")
    for capture, tr in traces.items():
        kind = "attention captured" if capture else "shapes only"
        captured, on_disk = human_bytes(tr.capture.captured_bytes), human_bytes(len(tr.to_bytes()))
        print(f"  trace, {kind:<19} {len(tr.steps)} steps, captured arrays {captured}, file {on_disk}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repetition")
    args = parser.parse_args()
    if args.quick:
        hidden, layers, prompt_len, new_tokens, repeats, vocab = 64, 2, 16, 4, 1, 512
    else:
        hidden, layers, prompt_len, new_tokens, repeats, vocab = 512, 8, 128, 64, 9, 32000
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    llama, _ = build_random_llama(
        hidden_size=hidden,
        num_layers=layers,
        num_heads=8,
        num_kv_heads=2,
        max_positions=prompt_len + new_tokens + 8,
        vocab_size=vocab,
    )
    generator = torch.Generator().manual_seed(0)
    prompt = torch.randint(4, llama.config.vocab_size, (1, prompt_len), generator=generator)
    bench(
        f"random Llama, {layers} layers x {hidden} hidden, vocab {llama.config.vocab_size}",
        llama,
        prompt,
        new_tokens,
        repeats,
    )

    bart, _ = build_random_bart(
        d_model=hidden, num_layers=max(1, layers // 2), num_heads=8, max_positions=prompt_len + new_tokens + 8
    )
    source = torch.randint(4, bart.config.vocab_size, (1, prompt_len), generator=generator)
    bench(
        f"random BART, {max(1, layers // 2)}+{max(1, layers // 2)} layers x {hidden} hidden",
        bart,
        source,
        new_tokens,
        repeats,
    )


if __name__ == "__main__":
    main()
