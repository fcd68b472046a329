"""The benchmarks still run (tiny sizes): numbers are read by people, not asserted here."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_overhead_benchmark_runs_and_prints_its_ratios():
    result = subprocess.run(
        [sys.executable, "benchmarks/overhead.py", "--quick"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    contenders = ["generate, sdpa", "generate, eager"]
    contenders += ["Stepwise, attention captured", "Stepwise, shapes only"]
    for contender in contenders:
        line = next(line for line in out.splitlines() if line.strip().startswith(contender))
        assert "tokens equal" in line and "x" in line, line  # a ratio, and the same tokens as generate()
    assert "maps equal" in next(line for line in out.splitlines() if "Stepwise, attention captured" in line)
    assert out.count("us per step") == 2 and out.count("us per layer-step") == 2  # the recorder's own cost


@pytest.mark.slow
def test_classroom_benchmark_runs_two_sessions_without_errors_or_mixing():
    result = subprocess.run(
        [sys.executable, "benchmarks/classroom_load.py", *"--sessions 2 --steps 2 --timeout 200".split()],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "errors: 0" in result.stdout
    assert "each session saw only its own trace: yes" in result.stdout
    assert "trace, server (click to end of run)   : p50" in result.stdout
    assert "step change, server                   : p50" in result.stdout
    assert "step change, server CPU of its run    : p50" in result.stdout
    assert "server CPU per step change, all threads" in result.stdout


def _recorder_cycles():
    spec = importlib.util.spec_from_file_location(
        "recorder_cycles", ROOT / "benchmarks" / "recorder_cycles.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_recorder_cycles_reads_callgrind_totals_and_estimates_cycles():
    rc = _recorder_cycles()
    out = "# callgrind format\nevents: Ir I1mr D1mr D1mw ILmr DLmr DLmw\nsummary: 1000 3 4 5 1 1 2\n"
    assert rc.read_counts(out) == rc.Counts(1000, 1000 + 10 * 12 + 100 * 4)
    with pytest.raises(ValueError):
        rc.read_counts("events: Dr\nsummary: 5\n")


def test_recorder_cycles_counts_one_more_step_without_what_does_not_grow():
    rc = _recorder_cycles()
    start, plain_step, recorder_step, packing = 10_000, 700, 90, 5_000  # packing: per run, not per step

    def run(steps: int, traced: bool) -> object:
        n = start + steps * (plain_step + (recorder_step if traced else 0)) + (packing if traced else 0)
        return rc.Counts(n, 2 * n)

    recorder, plain = rc.per_step(run(16, False), run(16, True), run(32, False), run(32, True), 16)
    assert recorder == rc.Counts(recorder_step, 2 * recorder_step)
    assert plain == rc.Counts(plain_step, 2 * plain_step)
