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
    for line in ("generate (sdpa)", "trace_generation, attention captured", "trace_generation, shapes only"):
        assert result.stdout.count(line) == 2  # once for the Llama, once for BART
    assert "random Llama" in result.stdout and "random BART" in result.stdout


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
