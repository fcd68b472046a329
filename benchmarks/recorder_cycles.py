"""What the recorder costs per step, counted by valgrind: the same on a busy machine as on an idle one.

    python benchmarks/recorder_cycles.py                 # 8 x 512 Llama, shapes only and full capture
    python benchmarks/recorder_cycles.py --mode shapes   # one of them (about half the time)
    python benchmarks/recorder_cycles.py --quick         # a tiny Llama: a smoke run

Wall-clock ratios (benchmarks/overhead.py) swing by several percent between two runs on a shared
machine, as much as a change to the recorder moves them. This counts instead: each run is done in a
child process under `valgrind --tool=callgrind --cache-sim=yes`, which counts the instructions
executed and simulates the CPU caches, so two runs of the same code give the same numbers.

For each mode, one child builds a random Llama, warms up, then runs plain `generate()` and the
traced run, each for N and for 2N new tokens; a call of `os.getppid()` between two runs makes
callgrind write the counts so far (`--dump-before=getppid`), so each run is counted on its own.
The recorder's cost per step is (traced 2N - plain 2N) - (traced N - plain N), divided by N: what
one more step costs, with the prefill and the trace's packing, which do not grow with N, taken out.
Printed per step and per layer-step, and as a share of what plain `generate()` spends per step:
- instructions (Ir);
- estimated cycles, as KCachegrind estimates them: Ir + 10 x L1 misses + 100 x last-level misses,
  where the model's weights, streamed through the caches at every step, evict the recorder's code
  and data.

valgrind runs a child some 50-100 times slower than the CPU: the default takes about 15 minutes
(the two modes' children run side by side). Needs valgrind (Debian's `valgrind` package); without it,
the benchmark says so and stops.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WARM_UP_TOKENS = 2
RUNS = [(False, 1), (False, 2), (True, 1), (True, 2)]  # (traced, new tokens as a multiple of N), in order


@dataclass(frozen=True)
class Counts:
    instructions: int
    cycles: int  # estimated: Ir + 10 x L1 misses + 100 x last-level misses


def read_counts(callgrind_out: str) -> Counts:
    """The totals of a callgrind output file (`events:` names them, `summary:` or `totals:` counts them)."""
    names: list[str] = []
    totals: list[int] = []
    for line in callgrind_out.splitlines():
        if line.startswith("events:"):
            names = line.split()[1:]
        elif line.startswith(("summary:", "totals:")):
            totals = [int(x) for x in line.split()[1:]]
    counts = dict(zip(names, totals, strict=False))
    if "Ir" not in counts:
        raise ValueError("not a callgrind output: no Ir total")

    def get(*keys: str) -> int:
        return sum(counts.get(key, 0) for key in keys)

    l1_misses = get("I1mr", "D1mr", "D1mw")
    last_level_misses = get("ILmr", "DLmr", "DLmw")
    return Counts(counts["Ir"], counts["Ir"] + 10 * l1_misses + 100 * last_level_misses)


def per_step(
    plain_n: Counts, traced_n: Counts, plain_2n: Counts, traced_2n: Counts, n: int
) -> tuple[Counts, Counts]:
    """(the recorder's cost of one more step, plain generate()'s cost of one more step)."""
    recorder = Counts(
        ((traced_2n.instructions - plain_2n.instructions) - (traced_n.instructions - plain_n.instructions))
        // n,
        ((traced_2n.cycles - plain_2n.cycles) - (traced_n.cycles - plain_n.cycles)) // n,
    )
    plain = Counts(
        (plain_2n.instructions - plain_n.instructions) // n, (plain_2n.cycles - plain_n.cycles) // n
    )
    return recorder, plain


def child(args: argparse.Namespace) -> None:
    """One run, under valgrind: build the model, warm up, then the run counted."""
    sys.path.insert(0, str(ROOT))
    import torch

    import tracer
    from models.random_models import build_random_llama

    torch.set_num_threads(1)
    model, _ = build_random_llama(
        hidden_size=args.hidden,
        num_layers=args.layers,
        num_heads=8,
        num_kv_heads=2,
        max_positions=args.prompt + 2 * args.steps + 8,
        vocab_size=args.vocab,
    )
    ids = torch.randint(4, args.vocab, (1, args.prompt), generator=torch.Generator().manual_seed(0))
    capture = args.mode == "full"
    model.set_attn_implementation("eager" if capture else "sdpa")

    def run(traced: bool, new_tokens: int) -> None:
        if traced:
            tracer.trace_generation(
                model, None, input_ids=ids, max_new_tokens=new_tokens, capture_attention=capture
            )
        else:
            # No min_new_tokens: its logits processor would be work the traced run does not do.
            out = model.generate(input_ids=ids, max_new_tokens=new_tokens, do_sample=False)
            if out.shape[1] != args.prompt + new_tokens:
                raise SystemExit("the random model chose its eos token early: try another --prompt")

    for traced in (False, True):
        run(traced, WARM_UP_TOKENS)
    for traced, multiple in RUNS:
        os.getppid()  # callgrind writes the counts so far: the run after it is counted alone
        run(traced, multiple * args.steps)
    os.getppid()


def count(args: argparse.Namespace, out_dir: str) -> dict[tuple[bool, int], Counts]:
    """One child under callgrind: the counts of each of RUNS, by (traced, new tokens)."""
    out = Path(out_dir) / f"{args.mode}.out"
    command = [
        "valgrind",
        "--tool=callgrind",
        "--cache-sim=yes",
        "--dump-before=getppid",
        f"--callgrind-out-file={out}",
        sys.executable,
        __file__,
        "--child",
        *f"--mode {args.mode} --layers {args.layers} --hidden {args.hidden} --prompt {args.prompt}".split(),
        *f"--vocab {args.vocab} --steps {args.steps}".split(),
    ]
    # The same hash seed in every child: set and dict orders, and so the work done, are the same.
    env = os.environ | {"PYTHONHASHSEED": "0", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"a counted run failed ({' '.join(command[5:])}):\n{result.stderr[-2000:]}")
    # Part 1 is the start-up and warm-up; parts 2.. the runs, in order.
    return {
        (traced, multiple * args.steps): read_counts(Path(f"{out}.{part}").read_text())
        for part, (traced, multiple) in enumerate(RUNS, start=2)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["shapes", "full", "both"], default="both")
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--steps", type=int, default=16, help="N: runs of N and 2N new tokens (default 16)")
    parser.add_argument("--quick", action="store_true", help="2 layers x 64 hidden, vocab 1000, N=4")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.quick:
        args.layers, args.hidden, args.prompt, args.vocab, args.steps = 2, 64, 8, 1000, 4
    if shutil.which("valgrind") is None:
        print("skipped: valgrind is not installed (Debian: apt install valgrind)")
        return
    n = args.steps
    print(
        f"random Llama, {args.layers} layers x {args.hidden} hidden, vocab {args.vocab}: "
        f"prompt {args.prompt}, one more step between runs of {n} and {2 * n} new tokens (callgrind)"
    )
    modes = ["shapes", "full"] if args.mode == "both" else [args.mode]
    with tempfile.TemporaryDirectory() as out_dir, ThreadPoolExecutor(max_workers=2) as pool:
        jobs = {
            mode: pool.submit(count, argparse.Namespace(**vars(args) | {"mode": mode}), out_dir)
            for mode in modes
        }
        for mode, job in jobs.items():
            got = job.result()
            recorder, plain = per_step(got[False, n], got[True, n], got[False, 2 * n], got[True, 2 * n], n)
            label = (
                "Stepwise, attention captured (vs eager)"
                if mode == "full"
                else "Stepwise, shapes only (vs sdpa)"
            )
            print(f"  {label}")
            for name, attr in (("instructions", "instructions"), ("estimated cycles", "cycles")):
                cost, base = getattr(recorder, attr), getattr(plain, attr)
                print(
                    f"    {name:17} {cost:>12,} per step, {cost // args.layers:>10,} per layer-step, "
                    f"{100 * cost / base:5.1f}% of plain generate()'s {base:,}"
                )


if __name__ == "__main__":
    main()
