"""What recording generate() costs: Stepwise beside plain generate() and the peers, in one run.

    python benchmarks/overhead.py                # 15 rounds on both Llamas (long on 2 cores)
    python benchmarks/overhead.py --rounds 5     # fewer rounds
    python benchmarks/overhead.py --quick        # tiny sizes, one round: a smoke run

The peers (nnsight, TransformerLens) are not Stepwise's dependencies. To run beside them, use a
venv of their own with the same torch and transformers, and point it at this checkout:

    python3.11 -m venv ../peers-venv
    ../peers-venv/bin/pip install torch==2.13.0 transformers==5.23.0 tokenizers==0.23.3 \\
        safetensors==0.8.0 numpy==2.4.6 accelerate==1.15.0 babel==2.17.0 nnsight transformer-lens
    ../peers-venv/bin/python benchmarks/overhead.py

(pip may move torch or transformers for a peer: check `pip list` keeps the pins; a peer that
cannot run beside them, or is not installed, is printed as skipped with the reason.)

Contenders, on a random Llama of 8 layers x 512 hidden (prompt 128, 64 new tokens) and of
6 x 384 (prompt 96, 48 new tokens), where Python's cost per step weighs more; 2 threads:
- plain `generate()` with sdpa attention: the baseline of every ratio;
- `generate()` with eager attention, and `generate(output_attentions=True)` (eager);
- nnsight saving every layer's attention map at every step, and that plus each layer's output
  and lm_head's output;
- TransformerLens (a HookedTransformer built from the same weights) saving every `hook_pattern`;
- Stepwise `trace_generation` with attention captured (eager), and shapes only (sdpa).
The runs take turns, round after round, and each is the median of its rounds, printed in ms and
as ratios to plain sdpa and to eager `generate()`. After timing, every contender's tokens are checked
against plain `generate()` and its attention maps (layers x steps of them) against
`output_attentions`; the check is printed beside it. Last, the recorder's own cost: what a traced
run adds to the generate() it wraps, per step and per layer-step, in microseconds.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tracer
from models.random_models import build_random_llama
from tracer.trace import human_bytes

# Eager attention in float32 computes the same maps whoever watches; a peer that rebuilds the model
# (TransformerLens) sums in another order, so "equal" allows float32 rounding.
ATTENTION_ATOL = 1e-5


@dataclass(frozen=True)
class Size:
    layers: int
    hidden: int
    prompt: int
    new_tokens: int
    vocab: int = 32000


FULL_SIZES = (Size(8, 512, 128, 64), Size(6, 384, 96, 48))
QUICK_SIZES = (Size(2, 64, 16, 4, vocab=512),)


@dataclass
class Contender:
    """One way of running generate(): `run()` is timed; `tokens` and `attention` read its result."""

    name: str
    run: Callable[[], Any]
    tokens: Callable[[Any], list[int]]
    # result -> maps[step][layer], each [heads, q, k]; None when the contender records no maps
    attention: Callable[[Any], list[list[np.ndarray]]] | None = None
    skipped: str | None = None  # why the contender could not run here


def skipped(name: str, reason: str) -> Contender:
    return Contender(name, lambda: None, lambda _: [], skipped=reason)


def median_seconds(contenders: list[Contender], rounds: int) -> tuple[dict[str, float], dict[str, Any]]:
    """Median seconds of each contender, and its last result. The runs take turns, so a machine
    that slows down or speeds up during the benchmark (other jobs, clock changes) weighs on all
    of them alike."""
    results = {}
    for c in contenders:  # warm-up: first calls allocate and pick kernels
        try:
            results[c.name] = c.run()
        except Exception as exc:  # a peer that cannot run here is reported, not timed
            c.skipped = f"failed here: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
    contenders = [c for c in contenders if c.skipped is None]
    times: dict[str, list[float]] = {c.name: [] for c in contenders}
    for _ in range(rounds):
        for c in contenders:
            start = time.perf_counter()
            results[c.name] = c.run()
            times[c.name].append(time.perf_counter() - start)
    return {name: statistics.median(seconds) for name, seconds in times.items()}, results


# ---------------------------------------------------------------------------------------------
# The contenders


def transformers_contenders(model, input_ids: torch.Tensor, new_tokens: int) -> list[Contender]:
    kwargs = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False}

    def generate(attn: str, **extra):
        def run():
            model.set_attn_implementation(attn)
            return model.generate(input_ids=input_ids, **kwargs, **extra)

        return run

    def maps(out) -> list[list[np.ndarray]]:  # attentions: steps x layers of [1, heads, q, k]
        return [[layer[0].numpy() for layer in step] for step in out.attentions]

    return [
        Contender("generate, sdpa", generate("sdpa"), lambda ids: ids[0].tolist()),
        Contender("generate, eager", generate("eager"), lambda ids: ids[0].tolist()),
        Contender(
            "generate(output_attentions=True)",
            generate("eager", output_attentions=True, return_dict_in_generate=True),
            lambda out: out.sequences[0].tolist(),
            maps,
        ),
    ]


def stepwise_contenders(model, input_ids: torch.Tensor, new_tokens: int) -> list[Contender]:
    def trace(capture: bool):
        def run():
            model.set_attn_implementation("eager" if capture else "sdpa")
            return tracer.trace_generation(
                model, None, input_ids=input_ids, max_new_tokens=new_tokens, capture_attention=capture
            )

        return run

    def maps(tr) -> list[list[np.ndarray]]:
        return [[s.attention("self", i) for i in range(tr.num_layers)] for s in tr.steps]

    return [
        Contender("Stepwise, attention captured", trace(True), lambda tr: tr.sequence_ids, maps),
        Contender("Stepwise, shapes only", trace(False), lambda tr: tr.sequence_ids),
    ]


def nnsight_contenders(model, tok, input_ids: torch.Tensor, new_tokens: int) -> list[Contender]:
    names = ("nnsight, attention", "nnsight, attention + layer outputs + lm_head")
    try:
        import nnsight
        from nnsight import LanguageModel
    except ImportError as exc:
        return [skipped(name, f"nnsight is not installed here ({exc})") for name in names]
    lm = LanguageModel(model, tokenizer=tok)
    kwargs = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False}
    layers = lm.model.layers

    def run_saving(everything: bool):
        def run():
            model.set_attn_implementation("eager")
            with lm.generate(input_ids, **kwargs) as gen:
                attention = nnsight.save([])
                outputs = nnsight.save([])
                # Every step; a bounded range, so the code after the loop runs (after an open
                # gen.all() it never does). Reads go in the order the model computes them.
                for _ in gen.iter[:new_tokens]:
                    step_attention, step_outputs = [], []
                    for layer in layers:
                        step_attention.append(layer.self_attn.output[1])
                        if everything:
                            step_outputs.append(layer.output)
                    if everything:
                        step_outputs.append(lm.lm_head.output)
                    attention.append(step_attention)
                    outputs.append(step_outputs)
                tokens = gen.result.save()
            return tokens, attention, outputs

        return run

    def maps(result) -> list[list[np.ndarray]]:
        _, attention, _ = result
        return [[a[0].detach().numpy() for a in step] for step in attention]

    return [
        Contender(name, run_saving(everything), lambda r: r[0][0].tolist(), maps)
        for name, everything in zip(names, (False, True), strict=True)
    ]


def transformer_lens_contenders(model, tok, input_ids: torch.Tensor, new_tokens: int) -> list[Contender]:
    name = "TransformerLens, attention"
    try:
        from transformer_lens.model_bridge import TransformerBridge
    except ImportError as exc:
        return [skipped(name, f"transformer_lens is not installed here ({exc})")]
    # TransformerLens 4 wraps the Hugging Face model itself (HookedTransformer is gone). It reloads
    # the tokenizer from its folder, so the random one is saved to one first.
    from transformers import AutoTokenizer

    folder = tempfile.mkdtemp(prefix="stepwise-bench-tok-")
    tok.save_pretrained(folder)
    try:
        bridge = TransformerBridge.boot_transformers(
            "meta-llama/Llama-2-7b-hf", hf_model=model, tokenizer=AutoTokenizer.from_pretrained(folder)
        )
    except Exception as exc:  # reported, never faked
        return [skipped(name, f"cannot wrap this model: {type(exc).__name__}: {str(exc)[:160]}")]
    hook_names = [f"blocks.{i}.attn.hook_pattern" for i in range(model.config.num_hidden_layers)]

    def run():
        steps: list[list[torch.Tensor]] = []

        def save(pattern, hook):
            if hook.name == hook_names[0]:
                steps.append([])
            steps[-1].append(pattern.detach().clone())

        with bridge.hooks(fwd_hooks=[(n, save) for n in hook_names]):
            tokens = bridge.generate(
                input_ids, max_new_tokens=new_tokens, do_sample=False, stop_at_eos=False, verbose=False
            )
        return tokens, steps

    def maps(result) -> list[list[np.ndarray]]:
        return [[p[0].numpy() for p in step] for step in result[1]]

    return [Contender(name, run, lambda r: r[0][0].tolist(), maps)]


# ---------------------------------------------------------------------------------------------
# One size


def max_attention_diff(maps: list[list[np.ndarray]], reference: list[list[np.ndarray]]) -> float | None:
    """Largest |difference| over every map; None if the maps' number or shapes differ."""
    if len(maps) != len(reference) or any(len(a) != len(b) for a, b in zip(maps, reference, strict=True)):
        return None
    worst = 0.0
    for step, ref_step in zip(maps, reference, strict=True):
        for a, b in zip(step, ref_step, strict=True):
            if a.shape != b.shape:
                return None
            worst = max(worst, float(np.abs(a - b).max()))
    return worst


def check_text(c: Contender, result, plain_tokens: list[int], reference) -> str:
    tokens = "tokens equal" if c.tokens(result) == plain_tokens else "TOKENS DIFFER"
    if c.attention is None:
        return tokens
    maps = c.attention(result)
    count = sum(len(step) for step in maps)
    diff = max_attention_diff(maps, reference)
    if diff is None:
        return f"{tokens}; {count} maps, NOT THE SHAPES OF output_attentions"
    verdict = "equal" if diff <= ATTENTION_ATOL else "DIFFER"
    return f"{tokens}; {count} maps {verdict} (max diff {diff:.1e})"


def bench(size: Size, rounds: int) -> None:
    model, tok = build_random_llama(
        hidden_size=size.hidden,
        num_layers=size.layers,
        num_heads=8,
        num_kv_heads=2,
        max_positions=size.prompt + size.new_tokens + 8,
        vocab_size=size.vocab,
    )
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(4, model.config.vocab_size, (1, size.prompt), generator=generator)
    contenders = [
        *transformers_contenders(model, input_ids, size.new_tokens),
        # Each peer gets its own copy: TransformerLens rewires the model it wraps.
        *nnsight_contenders(copy.deepcopy(model), tok, input_ids, size.new_tokens),
        *transformer_lens_contenders(copy.deepcopy(model), tok, input_ids, size.new_tokens),
        *stepwise_contenders(model, input_ids, size.new_tokens),
    ]
    timings, results = median_seconds([c for c in contenders if c.skipped is None], rounds)

    base, eager = timings["generate, sdpa"], timings["generate, eager"]
    plain_tokens = results["generate, sdpa"][0].tolist()
    reference = contenders[2].attention(results[contenders[2].name])  # generate(output_attentions=True)
    print(
        f"\nrandom Llama, {size.layers} layers x {size.hidden} hidden, vocab {size.vocab}: "
        f"prompt {size.prompt}, {size.new_tokens} new tokens, median of {rounds} rounds"
    )
    for c in contenders:
        if c.skipped is not None:
            print(f"  {c.name:<46} skipped: {c.skipped}")
            continue
        seconds = timings[c.name]
        check = check_text(c, results[c.name], plain_tokens, reference)
        ratios = f"{seconds / base:5.2f}x sdpa {seconds / eager:5.2f}x eager"
        print(f"  {c.name:<46} {seconds * 1000:9.1f} ms  {ratios}   {check}")

    steps = size.new_tokens
    print("  the recorder's own cost (traced run minus the generate() it wraps):")
    for name, plain in (
        ("Stepwise, attention captured", "generate, eager"),
        ("Stepwise, shapes only", "generate, sdpa"),
    ):
        extra = timings[name] - timings[plain]
        print(
            f"    {name:<40} {extra / steps * 1e6:8.0f} us per step, "
            f"{extra / (steps * size.layers) * 1e6:6.0f} us per layer-step"
        )
    for name in ("Stepwise, attention captured", "Stepwise, shapes only"):
        tr = results[name]
        captured, on_disk = human_bytes(tr.capture.captured_bytes), human_bytes(len(tr.to_bytes()))
        print(f"  trace, {name.removeprefix('Stepwise, '):<20} captured arrays {captured}, file {on_disk}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds per contender (default 15)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--quick", action="store_true", help="one tiny Llama, one round: a smoke run")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    torch.set_num_threads(args.threads)
    sizes, rounds = (QUICK_SIZES, 1) if args.quick else (FULL_SIZES, args.rounds)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for size in sizes:
        bench(size, rounds)


if __name__ == "__main__":
    main()
