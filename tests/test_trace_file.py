"""The trace file: one safetensors file, no pickle, a format version, clear errors naming the file."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from safetensors.numpy import save as save_safetensors

import models
import tracer
from tracer.trace import FORMAT_VERSION, TraceFileError


@pytest.fixture(scope="module")
def traces():
    llama, llama_tok = models.load("random-llama")
    bart, bart_tok = models.load("random-bart")
    return [
        tracer.trace_generation(llama, llama_tok, "the cat sat on the mat", max_new_tokens=4),
        tracer.trace_generation(bart, bart_tok, "two red birds", max_new_tokens=3, use_cache=False),
    ]


def test_save_and_load_give_back_the_same_trace(traces, tmp_path):
    for i, tr in enumerate(traces):
        path = tr.save(tmp_path / f"run{i}.trace")
        back = tracer.load_trace(path)
        assert (back.arch, back.model_name, back.prompt_ids, back.sequence_ids) == (
            tr.arch,
            tr.model_name,
            tr.prompt_ids,
            tr.sequence_ids,
        )
        assert back.settings == tr.settings and back.config == tr.config
        assert back.token_texts == tr.token_texts and back.capture == tr.capture
        assert len(back.steps) == len(tr.steps)
        for a, b in zip(tr.steps, back.steps, strict=True):
            assert (a.index, a.phase, a.chosen_id, a.chosen_prob) == (
                b.index,
                b.phase,
                b.chosen_id,
                b.chosen_prob,
            )
            assert a.prepare_inputs == b.prepare_inputs and a.prepare_inputs_args == b.prepare_inputs_args
            assert a.cache == b.cache and a.topk == b.topk
            assert [e.name for e in a.events] == [e.name for e in b.events]
            for ea, eb in zip(a.events, b.events, strict=True):
                assert (ea.module, ea.inputs, ea.outputs, ea.note, ea.error) == (
                    eb.module,
                    eb.inputs,
                    eb.outputs,
                    eb.note,
                    eb.error,
                )
                assert ea.tensors.keys() == eb.tensors.keys()
                for key in ea.tensors:
                    np.testing.assert_array_equal(ea.tensors[key], eb.tensors[key])
                    assert not eb.tensors[key].flags.writeable  # records are read-only
        layer0 = back.steps[-1].attention("self", 0)
        np.testing.assert_array_equal(layer0, tr.steps[-1].attention("self", 0))


def test_bytes_round_trip_for_upload_and_download(traces):
    tr = traces[1]
    back = tracer.trace_from_bytes(tr.to_bytes(), source="upload.trace")
    assert back.sequence_ids == tr.sequence_ids
    np.testing.assert_array_equal(back.steps[0].attention("encoder", 1), tr.steps[0].attention("encoder", 1))


def test_the_file_is_safetensors_with_json_metadata_and_no_pickle(traces, tmp_path):
    path = traces[0].save(tmp_path / "run.trace")
    data = path.read_bytes()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])
    meta = header["__metadata__"]
    assert meta["format"] == "stepwise-trace" and meta["version"] == str(FORMAT_VERSION)
    assert json.loads(meta["trace"])["sequence_ids"] == traces[0].sequence_ids
    assert b"\x80\x04\x95" not in data[: 8 + header_len]  # no pickle protocol-4 frame in the header
    assert all(v["dtype"] == "F32" for k, v in header.items() if k != "__metadata__")


def test_a_trace_with_an_error_round_trips(tmp_path):
    model, tok = models.load("random-llama")
    layer = model.get_decoder().layers[0]
    original = layer.mlp.forward
    calls = []

    def failing_mlp(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise ValueError("boom at step 1")
        return original(*args, **kwargs)

    layer.mlp.forward = failing_mlp
    tr = tracer.trace_generation(model, tok, "the cat", max_new_tokens=3)
    back = tracer.load_trace(tr.save(tmp_path / "failed.trace"))
    assert back.error == tr.error and back.error.step == 1
    assert [s.complete for s in back.steps] == [True, False]


def test_a_damaged_file_gives_a_clear_error_naming_it(traces, tmp_path):
    data = traces[0].to_bytes()
    cut = tmp_path / "cut.trace"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(TraceFileError, match=r"cut\.trace"):
        tracer.load_trace(cut)
    garbage = tmp_path / "garbage.trace"
    garbage.write_bytes(b"\x00\x01 not a trace at all")
    with pytest.raises(TraceFileError, match=r"garbage\.trace is not a Stepwise trace file"):
        tracer.load_trace(garbage)
    with pytest.raises(TraceFileError, match="Cannot read"):
        tracer.load_trace(tmp_path / "missing.trace")


def test_damaged_metadata_is_reported_as_damage(traces, tmp_path):
    tr = traces[0]
    header = {"format": "stepwise-trace", "version": str(FORMAT_VERSION), "trace": '{"arch": "decoder-only"}'}
    path = tmp_path / "half.trace"
    path.write_bytes(save_safetensors({}, metadata=header))
    with pytest.raises(TraceFileError, match=r"half\.trace is damaged"):
        tracer.load_trace(path)
    assert tr.save(tmp_path / "fine.trace")  # and a good one next to it still loads
    tracer.load_trace(tmp_path / "fine.trace")


def test_a_foreign_safetensors_file_is_refused(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(save_safetensors({"weight": np.zeros((2, 2), np.float32)}))
    with pytest.raises(TraceFileError, match=r"model\.safetensors .*not a Stepwise trace"):
        tracer.load_trace(path)
    other = tmp_path / "other.safetensors"
    other.write_bytes(save_safetensors({"w": np.zeros(1, np.float32)}, metadata={"format": "pt"}))
    with pytest.raises(TraceFileError, match="not a Stepwise trace"):
        tracer.load_trace(other)


def test_a_newer_format_version_says_to_upgrade(traces, tmp_path):
    header = {"format": "stepwise-trace", "version": str(FORMAT_VERSION + 1), "trace": "{}"}
    path = tmp_path / "future.trace"
    path.write_bytes(save_safetensors({}, metadata=header))
    with pytest.raises(TraceFileError, match=r"future\.trace was written by a newer Stepwise.*Upgrade"):
        tracer.load_trace(path)
