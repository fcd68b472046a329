"""The command line: record, show (table and JSON), and its exit codes 0 / 1 / 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import models
import tracer
from tracer import names
from tracer.__main__ import main

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "tracer", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )


@pytest.mark.slow
def test_record_then_show_as_a_separate_process(tmp_path):
    out = tmp_path / "run.trace"
    result = run_cli(
        "record",
        "--model",
        "random-llama",
        "--prompt",
        "the cat sat",
        "--max-new-tokens",
        "3",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    assert "prefill" in result.stdout and "decode" in result.stdout and out.is_file()

    shown = run_cli("show", str(out), "--json")
    assert shown.returncode == 0, shown.stderr
    summary = json.loads(shown.stdout)
    assert set(summary) >= {"arch", "prompt_ids", "sequence_ids", "error", "steps"}
    assert summary["arch"] == "decoder-only" and summary["error"] is None
    prompt_len = len(summary["prompt_ids"])
    assert [s["prepare_inputs"]["input_ids"]["shape"] for s in summary["steps"]] == [
        [1, prompt_len],
        [1, 1],
        [1, 1],
    ]
    assert [s["cache_seq_len"] for s in summary["steps"]] == [prompt_len, prompt_len + 1, prompt_len + 2]
    assert summary["sequence_ids"][prompt_len:] == [s["chosen_id"] for s in summary["steps"]]
    assert summary["steps"][0]["events"][0] == names.PREPARE_INPUTS
    assert summary["steps"][0]["events"][-1] == names.CHOOSE_TOKEN
    assert {"index", "phase", "prepare_inputs", "cache_seq_len", "chosen_id", "events"} <= set(
        summary["steps"][0]
    )


def test_record_options_reach_the_trace(tmp_path, capsys):
    out = tmp_path / "bart.trace"
    code = main(
        [
            "record",
            "--model",
            "random-bart",
            "--prompt",
            "two red birds",
            "--max-new-tokens",
            "2",
            "--no-cache",
            "--sample",
            "--seed",
            "3",
            "--temperature",
            "0.7",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    tr = tracer.load_trace(out)
    assert tr.arch == "encoder-decoder"
    assert tr.settings | {"use_cache": False, "do_sample": True, "seed": 3, "temperature": 0.7} == tr.settings
    assert main(["show", str(out)]) == 0
    table = capsys.readouterr().out
    assert "encoder-decoder" in table and "use_cache=False" in table


def test_a_trace_with_a_model_error_exits_1(tmp_path, capsys):
    model, tok = models.load("random-llama")
    block = model.get_decoder().layers[1]
    block.forward = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("broken block"))
    tr = tracer.trace_generation(model, tok, "the cat", max_new_tokens=2)
    path = tr.save(tmp_path / "failed.trace")
    assert main(["show", str(path)]) == 1
    assert "broken block" in capsys.readouterr().out
    assert main(["show", str(path), "--json"]) == 1
    summary = json.loads(capsys.readouterr().out)
    assert summary["error"]["step"] == 0 and summary["error"]["type"] == "RuntimeError"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["record", "--model", "random-llama", "--prompt", "  ", "--out", "x.trace"], "prompt is empty"),
        (
            [
                "record",
                "--model",
                "random-llama",
                "--prompt",
                "hi",
                "--max-new-tokens",
                "0",
                "--out",
                "x.trace",
            ],
            "at least 1",
        ),
        (["record", "--model", "/no/such/folder", "--prompt", "hi", "--out", "x.trace"], "No model folder"),
        (["show", "/no/such/file.trace"], "Cannot read"),
        (["record", "--prompt", "hi"], "required"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_usage_or_input_exits_2_with_a_message(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        sys.exit(main(argv))
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.trace").exists()
