"""A class on one server: N sessions trace at the same moment, then step through their traces.

    .venv/bin/python benchmarks/classroom_load.py [--sessions 30] [--steps 6] [--tokens 8]

Starts one `streamlit run app.py` on a free localhost port (in a child process that also times
every script run on the server side) and drives it with N light clients that speak Streamlit's
own websocket protocol, as a browser would, without drawing anything: so the 2 cores go to the
server, which is what is measured. First a teacher opens the fresh server and runs one trace
(the imports and the model load; both timed). Then each client loads the app, all of them
press **Run trace** at once on tiny-llama, each with its own prompt; then they open Step replay
(or the `--page` given: Attention, KV cache) and press Next ▶ `--steps` times, together.

Prints p50/p95 of the time to a finished trace and to a step change, as the server ran it (from
receiving the click to the end of the script run) and as the client saw it (to the last message
of the run), the CPU time a step change's script run used on the server (its thread's own, so
it does not count waiting for the GIL or the cores) and the server's CPU per step change over all
its threads (the script runs, the event loop, the websockets), the model lock's waits and hold
times, the bytes a step change sends, the errors, and whether any session was shown another
session's trace. Everything stays on 127.0.0.1; the whole run is bounded by `--timeout`. It passes
or fails nothing: the exit code is 1 only when a session failed or saw another's trace.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs

ROOT = Path(__file__).resolve().parents[1]
STEPPED_PAGES = ("Step replay", "Attention", "KV cache")  # the pages with the step picker


# ---------------------------------------------------------------------------------------------
# The server side: `streamlit run app.py` with every script run and the model lock timed


class _TimedLock:
    """tracer.record.TRACE_LOCK with the time each holder waited for it and held it recorded."""

    def __init__(self, lock, log) -> None:
        self._lock, self._log = lock, log
        self._acquired_at = 0.0

    def acquire(self, *args, **kwargs) -> bool:
        asked = time.perf_counter()
        got = self._lock.acquire(*args, **kwargs)
        self._acquired_at = time.perf_counter()
        self._log({"lock_wait": self._acquired_at - asked})
        return got

    def release(self) -> None:
        self._log({"lock_hold": time.perf_counter() - self._acquired_at})
        self._lock.release()

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def _profile_script_runs(out: Path) -> None:
    """Profile every script run (each in its session's thread); write the sum to `out` at exit."""
    import atexit
    import cProfile
    import pstats

    from streamlit.runtime.scriptrunner.script_runner import ScriptRunner

    profiles: list[cProfile.Profile] = []
    run_script = ScriptRunner._run_script

    def profiled(self, rerun_data) -> None:
        profile = cProfile.Profile()
        profiles.append(profile)
        profile.runcall(run_script, self, rerun_data)

    def dump() -> None:
        if profiles:
            pstats.Stats(*profiles).dump_stats(out)

    ScriptRunner._run_script = profiled
    atexit.register(dump)


def _time_script_cpu(log) -> None:
    """Log the CPU time of every script run's thread: the run's own work, whatever the load."""
    from streamlit.runtime.scriptrunner.script_runner import ScriptRunner

    run_script = ScriptRunner._run_script

    def timed(self, rerun_data) -> None:
        start = time.thread_time()
        try:
            run_script(self, rerun_data)
        finally:
            log({"session": self._session_id, "cpu": time.thread_time() - start})

    ScriptRunner._run_script = timed


def serve(port: int, timings: Path, profile: Path | None = None) -> None:
    """Run the app's server in this process, appending one JSON line per finished script run."""
    sys.path.insert(0, str(ROOT))
    from streamlit.runtime.app_session import AppSession
    from streamlit.runtime.scriptrunner import ScriptRunnerEvent
    from streamlit.web import cli

    import tracer.record

    out = timings.open("a", buffering=1)
    out_lock = threading.Lock()

    def log(record: dict) -> None:
        with out_lock:
            out.write(json.dumps(record) + "\n")

    tracer.record.TRACE_LOCK = _TimedLock(tracer.record.TRACE_LOCK, log)
    received: dict[str, float] = {}
    handle_backmsg = AppSession.handle_backmsg
    on_event = AppSession._on_scriptrunner_event

    def timed_handle_backmsg(self, msg) -> None:
        if msg.WhichOneof("type") == "rerun_script":
            received[self.id] = time.perf_counter()
        handle_backmsg(self, msg)

    finished = {
        ScriptRunnerEvent.SCRIPT_STOPPED_WITH_SUCCESS,
        ScriptRunnerEvent.FRAGMENT_STOPPED_WITH_SUCCESS,
    }

    def timed_on_event(self, sender, event, *args, **kwargs) -> None:
        if event in finished and self.id in received:
            log({"session": self.id, "run": time.perf_counter() - received.pop(self.id)})
        on_event(self, sender, event, *args, **kwargs)

    AppSession.handle_backmsg = timed_handle_backmsg
    AppSession._on_scriptrunner_event = timed_on_event
    if profile is not None:
        _profile_script_runs(profile)
    _time_script_cpu(log)
    os.chdir(ROOT)
    sys.argv = ["streamlit", "run", "app.py", "--server.port", str(port), "--server.address", "127.0.0.1"]
    cli.main()


# ---------------------------------------------------------------------------------------------
# The client side: one light websocket client per student


def _prompts(n: int) -> list[str]:
    """n different tiny-llama questions (words of its corpus), so each session's trace is its own."""
    from models.corpus import COLORS, NAMES, OBJECTS

    out = []
    for i in range(n):
        name, other = NAMES[i % len(NAMES)], NAMES[(i + 1 + i // len(NAMES)) % len(NAMES)]
        color, thing = COLORS[i % len(COLORS)], OBJECTS[(i // len(COLORS)) % len(OBJECTS)]
        out.append(f"{name} has {color} {thing} . {other} wants {color} {thing} . what does {name} have ?")
    return out


@dataclass
class Session:
    prompt: str
    session_id: str = ""
    widgets: dict[str, str] = field(default_factory=dict)  # user key -> widget id
    fragments: dict[str, str] = field(default_factory=dict)  # user key -> its fragment, if in one
    pages: dict[str, str] = field(default_factory=dict)  # page title -> page script hash
    query: str = ""
    trace_seconds: float | None = None
    step_seconds: list[float] = field(default_factory=list)
    step_bytes: list[int] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)  # what each script run was: load, trace, page, step
    texts: list[str] = field(default_factory=list)  # markdown and html the last run showed
    error: str | None = None


async def _run_script(
    ws, s: Session, page: str = "", trigger: str | None = None, strings: dict | None = None, numbers=None
) -> tuple[float, int]:
    """Ask for one script run as a browser would; wait for its end. (seconds, bytes received)."""
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    msg = BackMsg()
    state = msg.rerun_script
    state.query_string = s.query
    state.page_script_hash = page
    for key, value in (strings or {}).items():
        widget = state.widget_states.widgets.add()
        widget.id, widget.string_value = s.widgets[key], value
    for key, value in (numbers or {}).items():  # a slider's value travels as a list of doubles
        widget = state.widget_states.widgets.add()
        widget.id = s.widgets[key]
        widget.double_array_value.data.append(value)
    if trigger is not None:
        widget = state.widget_states.widgets.add()
        widget.id, widget.trigger_value = s.widgets[trigger], True
        if trigger in s.fragments:  # as a browser does: a click in a fragment reruns that fragment
            state.fragment_id = s.fragments[trigger]
    start = time.perf_counter()
    await ws.send(msg.SerializeToString())
    received, texts = 0, []
    while True:
        data = await ws.recv()
        received += len(data)
        fm = ForwardMsg()
        fm.ParseFromString(data)
        kind = fm.WhichOneof("type")
        if kind == "new_session":
            s.session_id = fm.new_session.initialize.session_id
        elif kind == "navigation":
            s.pages.update({p.page_name: p.page_script_hash for p in fm.navigation.app_pages})
        elif kind == "page_info_changed":
            s.query = fm.page_info_changed.query_string
        elif kind == "delta" and fm.delta.WhichOneof("type") == "new_element":
            element = fm.delta.new_element
            what = element.WhichOneof("type")
            body = getattr(element, what)
            if what == "exception":
                raise RuntimeError(f"the app raised: {body.message}")
            if what == "alert" and body.format == body.ERROR:
                raise RuntimeError(f"the app says: {body.body}")
            if getattr(body, "id", "").startswith("$$ID"):  # a widget: remember its id by its key
                key = body.id.rsplit("-", 1)[-1]
                s.widgets[key] = body.id
                if fm.delta.fragment_id:
                    s.fragments[key] = fm.delta.fragment_id
            if what in ("markdown", "html"):
                texts.append(body.body)
        elif kind == "script_finished":
            if fm.script_finished in (fm.FINISHED_SUCCESSFULLY, fm.FINISHED_FRAGMENT_RUN_SUCCESSFULLY):
                s.texts = texts
                return time.perf_counter() - start, received
            if fm.script_finished == fm.FINISHED_WITH_COMPILE_ERROR:
                raise RuntimeError("the app did not compile")


async def _student(
    url: str, s: Session, together: asyncio.Barrier, page: str, steps: int, tokens: int, stepping
) -> None:
    from websockets.asyncio.client import connect

    try:
        async with connect(f"{url}/_stcore/stream", subprotocols=["streamlit"], max_size=None) as ws:
            await _run_script(ws, s)
            s.runs.append("load")
            await together.wait()  # the whole class presses Run trace at once
            numbers = {"max_new_tokens": tokens}
            s.trace_seconds, _ = await _run_script(
                ws, s, trigger="run", strings={"prompt": s.prompt}, numbers=numbers
            )
            s.runs.append("trace")
            # The overview's token strip: this session's prompt, then what the model generated.
            chips = [html.unescape(c) for text in s.texts for c in re.findall(r">([^<]*)</span>", text)]
            if s.prompt not in " ".join(chips):
                raise RuntimeError("the overview after Run trace does not show this session's prompt")
            traced = s.texts
            await _run_script(ws, s, page=s.pages[page])
            s.runs.append("page")
            if await together.wait() == 0:  # "now press Next": the class steps together
                stepping()
            for _ in range(steps):
                seconds, nbytes = await _run_script(ws, s, page=s.pages[page], trigger="next_step")
                s.runs.append("step")
                s.step_seconds.append(seconds)
                s.step_bytes.append(nbytes)
            last = int(re.search(r"in (\d+) steps", " ".join(traced)).group(1)) - 1
            if "next_step" not in s.fragments:
                raise RuntimeError("Next is not in a fragment: each press reran the whole app")
            if parse_qs(s.query).get("step") != [str(min(steps, last))]:
                raise RuntimeError(f"after {steps} presses of Next the link says {s.query!r}")
    except Exception as exc:  # any failure is counted and reported, not raised
        s.error = f"after {'/'.join(s.runs) or 'nothing'}: {type(exc).__name__}: {exc}"
        await together.abort()  # it will not reach the next barrier: release the others


async def _teacher(url: str, prompt: str) -> tuple[float, float]:
    """Before the class, on a fresh server: seconds to the first page drawn, then to the first
    trace (which imports torch and transformers and loads the model)."""
    from websockets.asyncio.client import connect

    teacher = Session(prompt=prompt)
    async with connect(f"{url}/_stcore/stream", subprotocols=["streamlit"], max_size=None) as ws:
        first_page, _ = await _run_script(ws, teacher)
        first_trace, _ = await _run_script(ws, teacher, trigger="run", strings={"prompt": prompt})
    return first_page, first_trace


async def _class(
    url: str, sessions: list[Session], page: str, steps: int, tokens: int, timeout: float, server_pid: int
) -> float | None:
    """Run the class; return the CPU seconds the server used (all its threads) while it stepped."""
    together = asyncio.Barrier(len(sessions))
    cpu_at: dict[str, float] = {}

    def stepping() -> None:  # the first Next: every session has drawn its page, none has stepped
        cpu_at["stepping"] = _cpu_seconds(server_pid)

    tasks = [asyncio.create_task(_student(url, s, together, page, steps, tokens, stepping)) for s in sessions]
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    for s in sessions:
        if s.error is None and (s.trace_seconds is None or len(s.step_seconds) < steps):
            s.error = f"not finished within {timeout:.0f} s"
    return _cpu_seconds(server_pid) - cpu_at["stepping"] if "stepping" in cpu_at else None


# ---------------------------------------------------------------------------------------------
# Numbers


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _ms_line(label: str, values: list[float]) -> str:
    if not values:
        return f"  {label:38s}: no samples"
    ms = [v * 1000 for v in values]
    return (
        f"  {label:38s}: p50 {_pct(ms, 0.5):5.1f} ms p95 {_pct(ms, 0.95):5.1f} ms  "
        f"max {max(ms):5.1f} ms  ({len(ms)} samples)"
    )


def _line(label: str, values: list[float]) -> str:
    if not values:
        return f"  {label:38s}: no samples"
    return (
        f"  {label:38s}: p50 {_pct(values, 0.5):6.2f} s  p95 {_pct(values, 0.95):6.2f} s  "
        f"max {max(values):6.2f} s  ({len(values)} samples)"
    )


def _server_times(timings: Path, sessions: list[Session]) -> tuple[dict[str, list[float]], list, list]:
    """The server's times per kind of run, matched to each client's runs in order: "trace" and
    "step" from click to end of run, "trace cpu" and "step cpu" the run's thread's CPU time."""
    runs: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    waits, holds = [], []
    for line in timings.read_text().splitlines():
        record = json.loads(line)
        if "run" in record:
            runs.setdefault(record["session"], []).append(record["run"])
        elif "cpu" in record:
            cpu.setdefault(record["session"], []).append(record["cpu"])
        elif "lock_wait" in record:
            waits.append(record["lock_wait"])
        else:
            holds.append(record["lock_hold"])
    by_kind: dict[str, list[float]] = {"trace": [], "step": [], "trace cpu": [], "step cpu": []}
    for s in sessions:
        for kind, seconds in zip(s.runs, runs.get(s.session_id, []), strict=False):
            if kind in by_kind:
                by_kind[kind].append(seconds)
        for kind, seconds in zip(s.runs, cpu.get(s.session_id, []), strict=False):
            if f"{kind} cpu" in by_kind:
                by_kind[f"{kind} cpu"].append(seconds)
    return by_kind, waits, holds


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far; 0 where /proc is missing."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, server: subprocess.Popen, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        try:
            server.wait(timeout=0.2)
            raise SystemExit(f"the server exited with {server.returncode}")
        except subprocess.TimeoutExpired:
            pass
    raise SystemExit(f"the server did not answer within {seconds:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=30)
    parser.add_argument("--steps", type=int, default=6, help="Next ▶ presses per session")
    parser.add_argument(
        "--page", default="Step replay", choices=STEPPED_PAGES, help="the page the class steps on"
    )
    parser.add_argument("--tokens", type=int, default=8, help="max new tokens per trace")
    parser.add_argument("--timeout", type=float, default=300, help="bound on the whole class, seconds")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # the child: serve on this port
    parser.add_argument("--timings", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--profile", type=Path, help="write a cProfile of the server's script runs here")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.timings, args.profile)
        return

    sys.path.insert(0, str(ROOT))
    load_before = os.getloadavg()[0]
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        timings = Path(tmp) / "timings.jsonl"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(port), "--timings", str(timings)]
            + (["--profile", str(args.profile.resolve())] if args.profile else []),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(Path(tmp) / "server.log", "w"),  # noqa: SIM115
        )
        try:
            _wait_healthy(url, server, 120)
            from models import EXAMPLES

            first_page, first_trace = asyncio.run(
                _teacher(url.replace("http", "ws"), EXAMPLES["tiny-llama"][0][0])
            )
            sessions = [Session(prompt) for prompt in _prompts(args.sessions)]
            started, cpu_before = time.perf_counter(), _cpu_seconds(server.pid)
            stepping_cpu = asyncio.run(
                _class(
                    url.replace("http", "ws"),
                    sessions,
                    args.page,
                    args.steps,
                    args.tokens,
                    args.timeout,
                    server.pid,
                )
            )
            wall, server_cpu = time.perf_counter() - started, _cpu_seconds(server.pid) - cpu_before
        finally:
            server.terminate()
            server.wait(timeout=30)
        server_runs, waits, holds = _server_times(timings, sessions)

    errors = [s.error for s in sessions if s.error]
    trace_ids = [parse_qs(s.query).get("trace", [""])[0] for s in sessions if not s.error]
    mixed = len(set(trace_ids)) != len(trace_ids) or any(not t for t in trace_ids)
    print(
        f"{args.sessions} sessions, tiny-llama, {args.tokens} new tokens, {args.steps} step changes each "
        f"on {args.page}; "
        f"{os.cpu_count()} CPUs, load average before {load_before:.1f}; {wall:.0f} s in all, "
        f"the server used {server_cpu:.0f} s of CPU"
    )
    print(f"  fresh server, the teacher's first page (sidebar and Run drawn): {first_page:.2f} s")
    print(
        f"  the teacher's first trace (imports torch and transformers, loads the model): {first_trace:.2f} s"
    )
    print(_line("trace, server (click to end of run)", server_runs["trace"]))
    print(_line("trace, client", [s.trace_seconds for s in sessions if s.trace_seconds is not None]))
    print(_ms_line("trace, server CPU of its run", server_runs["trace cpu"]))
    print(_line("step change, server", server_runs["step"]))
    print(_line("step change, client", [t for s in sessions for t in s.step_seconds]))
    print(_ms_line("step change, server CPU of its run", server_runs["step cpu"]))
    step_count = sum(len(s.step_seconds) for s in sessions)
    if stepping_cpu is not None and step_count:
        print(
            f"  server CPU per step change, all threads : {stepping_cpu / step_count * 1000:5.1f} ms "
            f"(its CPU while the class stepped, over {step_count} step changes)"
        )
    print(_line("model lock, wait", waits))
    print(_line("model lock, hold", holds))
    step_bytes = [b for s in sessions for b in s.step_bytes]
    if step_bytes:
        print(f"  bytes sent per step change: median {statistics.median(step_bytes) / 1024:.0f} KiB")
    print(f"  errors: {len(errors)}" + "".join(f"\n    {e}" for e in sorted(set(errors))))
    print(f"  each session saw only its own trace: {'no' if mixed else 'yes'}")
    sys.exit(1 if errors or mixed else 0)


if __name__ == "__main__":
    main()
