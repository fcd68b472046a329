"""The benchmarks still run (tiny sizes): numbers are read by people, not asserted here."""

from __future__ import annotations

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
