"""The command line: record a trace, show a saved one, ask the cache doctor, start the app.

    python -m tracer record --model tiny-llama --prompt "tom has a red ball ." --out run.trace
    python -m tracer show run.trace [--json]
    python -m tracer doctor --model NAME_OR_PATH --prompt TEXT [--prompt TEXT2 ... [--row R]] [--num-beams N]
    python -m tracer app [streamlit options]

Installed, the same commands are the `stepwise` command (`stepwise record ...`, `stepwise app`).

Exit codes: 0 success, 1 the trace recorded a model error (or the doctor found a cache problem),
2 bad usage or input (the message goes to stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

EXIT_OK, EXIT_MODEL_ERROR, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own exit code for bad usage is also 2
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser(prog: str = "python -m tracer") -> argparse.ArgumentParser:
    parser = _Parser(prog=prog, description="Record and replay generate(), step by step.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    record = commands.add_parser("record", help="trace one generate() run and save it")
    record.add_argument(
        "--model", required=True, help="a built-in name (tiny-llama, ...) or a checkpoint folder"
    )
    record.add_argument("--prompt", required=True)
    # Generation settings left out come from the model's generation_config, as in generate().
    record.add_argument("--max-new-tokens", type=int, default=None, help="default: the model's own")
    record.add_argument("--no-cache", action="store_true", help="generate with use_cache=False")
    decoding = record.add_mutually_exclusive_group()
    decoding.add_argument(
        "--sample", dest="do_sample", action="store_true", default=None, help="sample (do_sample=True)"
    )
    decoding.add_argument(
        "--greedy", dest="do_sample", action="store_false", help="greedy search (num_beams=1)"
    )
    record.add_argument("--seed", type=int, default=None, help="seed for sampling (recorded in the trace)")
    record.add_argument("--temperature", type=float, default=None)
    record.add_argument("--top-k", type=int, default=None)
    record.add_argument("--top-p", type=float, default=None)
    record.add_argument(
        "--num-beams", type=int, default=None, help="1 overrides a checkpoint's beam search (not traced)"
    )
    record.add_argument(
        "--feed-embeddings", action="store_true", help="feed the prompt as inputs_embeds at step 0"
    )
    record.add_argument("--out", required=True, help="the trace file to write")

    show = commands.add_parser("show", help="print a saved trace, one row per step")
    show.add_argument("file")
    show.add_argument("--json", action="store_true", help="print a JSON object instead of a table")

    doctor = commands.add_parser("doctor", help="compare cached and uncached generation, step by step")
    doctor.add_argument("--model", help="a built-in name or a checkpoint folder")
    doctor.add_argument("--scenario", help="a cache-bug scenario from models/ (see --list-scenarios)")
    doctor.add_argument(
        "--prompt", action="append", help="the prompt; give it several times for a batch (every row compared)"
    )
    doctor.add_argument("--padding-side", choices=("left", "right"), help="a batch's padding side")
    doctor.add_argument("--num-beams", type=int, default=1, help="beam search (every beam compared)")
    doctor.add_argument(
        "--row",
        type=int,
        help="compare this row of the batch with its prompt generated alone (not cache on/off)",
    )
    doctor.add_argument("--max-new-tokens", type=int, default=8)
    doctor.add_argument("--json", action="store_true", help="print the report as JSON")
    doctor.add_argument("--list-scenarios", action="store_true", help="list the scenarios and exit")
    doctor.add_argument(
        "--variant",
        choices=("broken", "fixed", "tempting"),
        help="with --scenario: the buggy model (default), its fix, or the tempting wrong fix",
    )

    commands.add_parser(
        "app",
        help="start the Streamlit app (needs the app extra: pip install 'stepwise[app]')",
        description="Start the Streamlit app. Options after `app` go to `streamlit run`, "
        "e.g. --server.port 8502.",
    )
    return parser


def main(argv: list[str] | None = None, prog: str = "python -m tracer") -> int:
    parser = build_parser(prog)
    args, streamlit_options = parser.parse_known_args(argv)  # only `app` takes options it does not know
    if streamlit_options and args.command != "app":
        parser.error(f"unrecognized arguments: {' '.join(streamlit_options)}")
    args.streamlit_options = streamlit_options
    handlers = {"record": _record, "show": _show, "doctor": _doctor, "app": _app}
    try:
        return handlers[args.command](args)
    except ValueError as exc:  # every input problem the tracer and models raise is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _record(args) -> int:
    import models
    import tracer

    model, tok = models.load(args.model)
    extra = {} if args.num_beams is None else {"num_beams": args.num_beams}
    if args.do_sample is False and args.num_beams is None:
        extra["num_beams"] = 1  # --greedy is greedy search, whatever the checkpoint's beams
    tr = tracer.trace_generation(
        model,
        tok,
        args.prompt,
        max_new_tokens=args.max_new_tokens,
        use_cache=False if args.no_cache else None,
        do_sample=args.do_sample,
        seed=args.seed,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        feed_embeddings=args.feed_embeddings,
        model_name=args.model,
        **extra,
    )
    path = tr.save(args.out)
    print(step_table(tr))
    print(f"\nsaved {len(tr.steps)} steps to {path} ({path.stat().st_size:,} bytes)")
    if tr.error is not None:
        print(f"the model failed at {tr.error}", file=sys.stderr)
        return EXIT_MODEL_ERROR
    return EXIT_OK


def _show(args) -> int:
    import tracer

    tr = tracer.load_trace(Path(args.file))
    if args.json:
        print(json.dumps(trace_summary(tr), indent=2))
    else:
        print(step_table(tr))
    return EXIT_MODEL_ERROR if tr.error is not None else EXIT_OK


def _doctor(args) -> int:
    """0 consistent, 1 not, 2 bad usage (a ValueError, turned into 2 by main)."""
    import models
    from models import scenarios
    from tracer import doctor

    if args.list_scenarios:
        for s in scenarios.all_scenarios():
            print(f"{s.name:<20} {s.title}")
            variants = ", ".join(f"{v} ({s.notes.get(v, '')})" for v in s.variants)
            print(f"{'':<20} variants: {variants}")
        return EXIT_OK
    variant = getattr(args, "variant", None)
    if args.scenario and args.model:
        raise ValueError("Give --model or --scenario, not both: a scenario brings its own model.")
    if args.scenario:
        if args.prompt:
            raise ValueError(f"Scenario {args.scenario!r} brings its own prompt: drop --prompt.")
        given = [
            f"--{name}"
            for name in ("padding-side", "row")
            if getattr(args, name.replace("-", "_")) is not None
        ]
        if given or args.num_beams != 1:
            raise ValueError(
                f"Scenario {args.scenario!r} brings its own batch and beams: drop "
                f"{', '.join(given or ['--num-beams'])}."
            )
        report = scenarios.check(args.scenario, variant or "broken", args.max_new_tokens)
    elif args.model:
        if variant:
            raise ValueError("--variant goes with --scenario.")
        if not args.prompt:
            raise ValueError("Give the prompt to check: --prompt TEXT (several times for a batch).")
        model, tok = models.load(args.model)
        prompt = args.prompt[0] if len(args.prompt) == 1 else args.prompt
        common = dict(
            padding_side=args.padding_side,
            num_beams=args.num_beams,
            max_new_tokens=args.max_new_tokens,
            model_name=args.model,
        )
        if args.row is not None:
            report = doctor.compare_row_with_alone(model, tok, args.prompt, args.row, **common)
        else:
            report = doctor.check_cache(model, tok, prompt, **common)
    else:
        raise ValueError(
            "Tell the doctor what to check: --model NAME_OR_PATH --prompt TEXT, or --scenario NAME "
            "(see --list-scenarios)."
        )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(doctor.report_text(report))
    sys.stdout.flush()
    return EXIT_OK if report.consistent else EXIT_MODEL_ERROR


def _app(args) -> int:
    # The app is the stepwise_app package beside tracer; Streamlit runs its app.py as a script, in a
    # process of its own, and that file's folder holds the app's settings (.streamlit/config.toml).
    if find_spec("streamlit") is None or find_spec("stepwise_app") is None:
        print(
            "error: the app needs Streamlit, which the app extra installs: pip install 'stepwise[app]'",
            file=sys.stderr,
        )
        return EXIT_USAGE
    app_file = Path(find_spec("stepwise_app").origin).parent / "app.py"
    command = [sys.executable, "-m", "streamlit", "run", str(app_file), *args.streamlit_options]
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name == "posix":
        # Streamlit takes this process's place: a supervisor's SIGTERM reaches the server itself, which
        # a child server would miss (it would keep serving, orphaned, after `stepwise app` ended).
        os.execv(sys.executable, command)
    process = subprocess.Popen(command)
    try:
        return process.wait()
    except KeyboardInterrupt:  # Ctrl-C reaches Streamlit too: let it shut down, then report its code
        return process.wait()
    finally:
        if process.poll() is None:  # ended some other way: don't leave the server running
            process.terminate()


def console() -> int:
    """The `stepwise` command that installing Stepwise puts on the PATH: the same as `python -m tracer`."""
    return main(prog="stepwise")


def trace_summary(tr) -> dict:
    """The `show --json` object: the trace's outline, one entry per step."""
    from tracer.records import plain_data

    return {
        "arch": tr.arch,
        "model": tr.model_name,
        "prompt_ids": tr.prompt_ids,
        "sequence_ids": tr.sequence_ids,
        "error": None if tr.error is None else plain_data(tr.error),
        "settings": tr.settings,
        "eos_token_ids": tr.eos_token_ids,
        "stop": tr.stop,
        "steps": [
            {
                "index": s.index,
                "phase": s.phase,
                "prepare_inputs": {
                    name: {"shape": list(v.shape)} if hasattr(v, "shape") else {"value": v}
                    for name, v in s.prepare_inputs.items()
                },
                "cache_seq_len": s.cache_seq_len(),
                "chosen_id": s.chosen_id,
                "chosen_prob": s.chosen_prob,
                "events": [e.name for e in s.events],
            }
            for s in tr.steps
        ],
    }


def step_table(tr) -> str:
    """A fixed-width table, one row per step: phase, fed shape, cache length, chosen token, prob."""
    header = f"{'step':>4}  {'phase':<8} {'input_ids':<12} {'cache':>6}  {'token':<16} {'prob':>6}"
    rows = [
        f"{tr.model_name} ({tr.arch}), prompt {len(tr.prompt_ids)} tokens, "
        f"use_cache={tr.settings.get('use_cache')}",
        header,
        "-" * len(header),
    ]
    for s in tr.steps:
        shape = "x".join(map(str, s.fed_shape)) if s.fed_shape else "-"
        cache = s.cache_seq_len()
        token = "(failed)" if s.chosen_id is None else repr(tr.token_text(s.chosen_id))
        prob = "" if s.chosen_prob is None else f"{s.chosen_prob:.3f}"
        rows.append(
            f"{s.index:>4}  {s.phase:<8} {'[' + shape + ']':<12} {'-' if cache is None else cache:>6}  "
            f"{token:<16} {prob:>6}"
        )
    if tr.error is not None:
        rows.append(f"error at {tr.error}")
    rows.append(f"output: {' '.join(tr.tokens(tr.sequence_ids))}")
    if tr.stop:
        eos = ", ".join(map(str, tr.eos_token_ids)) or "none"
        rows.append(f"stopped: {tr.stop.get('detail', '')} (eos ids: {eos})")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
