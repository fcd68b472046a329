"""Every record kind saves to the trace file and loads back the same; old files load; bad ones say why."""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save as save_safetensors

import tracer
from models import scenarios
from tracer.records import FORMAT_VERSION, RECORD_KINDS, TraceFileError

OLD_FILE = Path(__file__).parent / "data" / "format-v1.trace"  # saved by format 1's writer


@pytest.fixture(scope="module")
def records(llama, bart):
    """One record of every kind, the two architectures where it matters."""
    return {
        "trace": tracer.trace_generation(*bart, "two red birds", max_new_tokens=3),
        "training-trace llama": tracer.trace_training_step(*llama, "the cat sat", "on the mat"),
        "training-trace bart": tracer.trace_training_step(*bart, "two red birds", "the owl"),
        "trainer-step": tracer.trace_trainer_step(*llama, [("the cat", "sat"), ("a bird", "flew")]),
        "cache-report": scenarios.check("side-inputs", "broken", max_new_tokens=4),
    }


def assert_same(a, b, path: str = "record") -> None:
    """a and b hold the same values field by field; b's arrays are read-only."""
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype, path
        np.testing.assert_array_equal(a, b, err_msg=path)
        assert not b.flags.writeable, f"{path} is writeable"
    elif dataclasses.is_dataclass(a):
        assert type(a) is type(b), path
        for f in dataclasses.fields(a):
            assert_same(getattr(a, f.name), getattr(b, f.name), f"{path}.{f.name}")
    elif isinstance(a, list | tuple):
        assert type(a) is type(b) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            assert_same(a[key], b[key], f"{path}[{key!r}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), path
    else:
        assert type(a) is type(b) and a == b, f"{path}: {a!r} != {b!r}"


@pytest.mark.parametrize(
    "name", ["trace", "training-trace llama", "training-trace bart", "trainer-step", "cache-report"]
)
def test_every_record_kind_round_trips(records, name, tmp_path):
    record = records[name]
    back = tracer.load_record(record.save(tmp_path / "run.trace"))
    assert type(back) is type(record)
    assert_same(record, back)
    assert_same(record, tracer.record_from_bytes(record.to_bytes()))


def test_the_header_names_the_kind_and_the_arrays_are_tensors(records):
    data = records["training-trace bart"].to_bytes()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])
    meta = header.pop("__metadata__")
    assert meta["kind"] == "training-trace" and meta["version"] == str(FORMAT_VERSION)
    assert {"per_token_loss", "ignored", "label_probs", "final_logits_bias"} <= header.keys()
    assert header["ignored"]["dtype"] == "BOOL"
    assert not any(isinstance(v, dict) and "__array__" in v for v in json.loads(meta["trace"]).values())


def test_the_kinds_name_their_classes():
    for kind, where in RECORD_KINDS.items():
        module, name = where.split(":")
        assert getattr(importlib.import_module(module), name).record_kind == kind


def test_the_shared_accessors_work_on_a_loaded_training_trace(records):
    tt = records["training-trace bart"]
    back = tracer.record_from_bytes(tt.to_bytes())
    np.testing.assert_array_equal(back.attention("cross", 1), tt.attention("cross", 1))
    assert back.tokens(back.labels) == tt.tokens(tt.labels) and back.num_layers == tt.num_layers
    assert tt.token_text(-100) == "-100"  # the labels' ignore marker reads as the number
    with pytest.raises(KeyError, match="The training pass has no"):
        tt.attention("self", 99)


def test_a_file_of_format_1_still_loads(llama):
    old = tracer.load_trace(OLD_FILE)
    assert old.format_version == 1 and FORMAT_VERSION > 1
    again = tracer.trace_generation(*llama, old.prompt_text, max_new_tokens=len(old.generated_ids))
    assert old.sequence_ids == again.sequence_ids and old.model_name == again.model_name
    for a, b in zip(old.steps, again.steps, strict=True):
        for layer in range(old.num_layers):
            np.testing.assert_allclose(a.attention("self", layer), b.attention("self", layer), atol=1e-6)
            assert not a.attention("self", layer).flags.writeable


def test_a_trace_loader_refuses_other_kinds_by_name(records, tmp_path):
    path = records["trainer-step"].save(tmp_path / "step.trace")
    with pytest.raises(TraceFileError, match=r"step\.trace holds a trainer-step, not a generation trace"):
        tracer.load_trace(path)


def test_a_damaged_or_unknown_record_says_so(records, tmp_path):
    data = records["cache-report"].to_bytes()
    cut = tmp_path / "report.trace"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(TraceFileError, match=r"report\.trace"):
        tracer.load_record(cut)
    header = {"format": "stepwise-trace", "version": str(FORMAT_VERSION), "kind": "training-trace"}
    half = tmp_path / "half.trace"
    half.write_bytes(save_safetensors({}, metadata={**header, "trace": '{"arch": "decoder-only"}'}))
    with pytest.raises(TraceFileError, match=r"half\.trace is damaged"):
        tracer.load_record(half)
    strange = tmp_path / "strange.trace"
    strange.write_bytes(save_safetensors({}, metadata={**header, "kind": "beam-search", "trace": "{}"}))
    with pytest.raises(TraceFileError, match=r"strange\.trace holds a record of kind 'beam-search'.*Upgrade"):
        tracer.load_record(strange)


def test_the_reports_json_summary_is_the_same_walk_without_the_traces(records):
    report = records["cache-report"]
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))  # strict JSON: no NaN
    assert "cached" not in data and "uncached" not in data
    assert data["cached_tokens"] == report.cached.generated_ids
    assert data["suspects"][0]["reason"] == report.suspects[0].reason
    assert data["tolerance"] == {"rtol": report.tolerance.rtol, "atol": report.tolerance.atol}
