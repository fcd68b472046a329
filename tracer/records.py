"""One record family and one file for all of it.

Stepwise's records (a generation `Trace`, a `TrainingTrace`, a `TrainerStepTrace`, a doctor's
`CacheReport`) are frozen dataclasses of plain Python values and read-only NumPy arrays. This
module holds what they share:

- `EventSequence`: a record made of hook-point events in call order (a generation step, the
  training pass), with the accessors that find an event and its attention map.
- `ModelRun`: a run of one model (arch, config, token texts): ids as text, the number of layers.
- `SavedRecord` and the trace file: one generic walk over the dataclasses' fields. Every NumPy
  array becomes a tensor of one safetensors file, named by its path in the record
  ("steps.3.events.5.tensors.attention"); everything else becomes JSON in the header's metadata,
  beside the format's name, its version and the record's kind. Loading walks the dataclasses'
  type hints back. No pickle anywhere, so a file from a stranger is safe to open.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import math
import struct
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as load_safetensors_bytes
from safetensors.numpy import save as save_safetensors_bytes

from tracer import names
from tracer.i18n import N_, templated

FORMAT_NAME = "stepwise-trace"
# 2: the header names the record's kind (a file may hold a training trace or a doctor report);
# 1: generation traces only, with no kind. Files of version 1 still load.
FORMAT_VERSION = 2

# What a file can hold: the header's "kind" -> the record's class, imported when a file needs it
# (a generation trace then loads without tracer.training's torch imports).
RECORD_KINDS = {
    "trace": "tracer.trace:Trace",
    "training-trace": "tracer.training:TrainingTrace",
    "trainer-step": "tracer.training:TrainerStepTrace",
    "cache-report": "tracer.doctor:CacheReport",
}


class TraceFileError(ValueError):
    """A trace file could not be read: damaged, not a trace, or written by a newer Stepwise."""


def read_only(array: np.ndarray, copy: bool = True) -> np.ndarray:
    """`array` made read-only; a copy unless told otherwise, so a model's buffer is never kept."""
    if copy:
        array = np.array(array, copy=True)
    array.flags.writeable = False
    return array


# ---------------------------------------------------------------------------------------------
# What the records share


class EventSequence:
    """A record whose `events` are hook-point calls in the order they started (tracer.names)."""

    def _where(self) -> str:  # how error messages name this record
        return "This record"

    def event(self, name: str):
        """The first event at hook point `name`, or None."""
        return next((e for e in self.events if e.name == name), None)

    def attention(self, kind: str, layer: int, batch: int = 0) -> np.ndarray:
        """Attention weights [heads, q_len, k_len] of `kind` ("self", "cross", "encoder") in `layer`."""
        name = names.attention_name(kind, layer)
        event = self.event(name)
        if event is None:
            raise KeyError(f"{self._where()} has no {name} event.")
        if "attention" not in event.tensors:
            reason = event.note or "attention was not captured"
            raise KeyError(f"{self._where()}, {name}: {reason}.")
        return event.tensors["attention"][batch]

    def has_attention(self, kind: str, layer: int) -> bool:
        event = self.event(names.attention_name(kind, layer))
        return event is not None and "attention" in event.tensors


class ModelRun:
    """A record of one model's run, with `arch`, `config` and `token_texts` fields."""

    @property
    def encoder_decoder(self) -> bool:
        return self.arch == "encoder-decoder"

    @property
    def num_layers(self) -> int:
        return int(self.config.get("num_layers", 0))

    def token_text(self, token_id: int) -> str:
        token_id = int(token_id)
        if token_id < 0:  # not a token: the labels' ignore marker (-100) is shown as the number
            return str(token_id)
        return self.token_texts.get(token_id, f"<{token_id}>")

    def tokens(self, ids: Sequence[int]) -> list[str]:
        return [self.token_text(i) for i in ids]


class SavedRecord:
    """A record that a trace file can hold; `record_kind` is its key in RECORD_KINDS."""

    record_kind = ""

    def to_bytes(self) -> bytes:
        """The record as one safetensors file's bytes (what `save` writes)."""
        return record_to_bytes(self)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_bytes(self.to_bytes())
        return path


# ---------------------------------------------------------------------------------------------
# The walk: records to JSON and arrays, and back


def _encode(value: Any, path: str, arrays: dict[str, np.ndarray] | None) -> Any:
    """`value` as JSON data; arrays go into `arrays` under their path (left out when it is None)."""
    if isinstance(value, np.ndarray):
        if arrays is None:
            return {"shape": list(value.shape), "dtype": str(value.dtype)}
        arrays[path] = np.ascontiguousarray(value)
        return path
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _encode(getattr(value, f.name), _join(path, f.name), arrays)
            for f in dataclasses.fields(value)
        }
    if isinstance(value, list | tuple):  # NamedTuples too: a list of their fields
        return [_encode(v, _join(path, str(i)), arrays) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {str(k): _encode(v, _join(path, str(k)), arrays) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _decode(tp: Any, data: Any, arrays: dict[str, np.ndarray]) -> Any:
    """`data` (from `_encode`) back as a value of type `tp`; TypeError, KeyError or ValueError if it
    does not fit."""
    if tp is Any:
        return data
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if data is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _decode(arg, data, arrays)
            except (TypeError, KeyError, ValueError):
                continue
        raise TypeError(f"{_short(data)} is none of {tp}")
    if tp is np.ndarray:
        return read_only(arrays[_check(str, data)], copy=False)
    if dataclasses.is_dataclass(tp):
        _check(dict, data)
        hints = _hints(tp)
        kwargs = {
            f.name: _decode(hints[f.name], data[f.name], arrays)
            for f in dataclasses.fields(tp)
            if f.name in data
        }
        return tp(**kwargs)
    if isinstance(tp, type) and issubclass(tp, tuple) and hasattr(tp, "_fields"):  # a NamedTuple
        hints = _hints(tp)
        items = zip(tp._fields, _check(list, data), strict=True)
        return tp(*(_decode(hints[name], v, arrays) for name, v in items))
    if origin is list:
        return [_decode(args[0], v, arrays) for v in _check(list, data)]
    if origin is tuple:
        items = _check(list, data)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(args[0], v, arrays) for v in items)
        return tuple(_decode(a, v, arrays) for a, v in zip(args, items, strict=True))
    if origin is dict:
        key_type, value_type = args
        return {key_type(k): _decode(value_type, v, arrays) for k, v in _check(dict, data).items()}
    if tp is float and isinstance(data, int | float) and not isinstance(data, bool):
        return float(data)
    if tp in (int, str, bool) and type(data) is tp:
        return data
    raise TypeError(f"{_short(data)} is not a {getattr(tp, '__name__', tp)}")


def _check(kind: type, data: Any) -> Any:
    if not isinstance(data, kind):
        raise TypeError(f"{_short(data)} is not a {kind.__name__}")
    return data


def _short(data: Any) -> str:
    text = repr(data)
    return text if len(text) <= 60 else text[:57] + "..."


def plain_data(record: Any, leave_out: Sequence[str] = ()) -> dict[str, Any]:
    """A record as strict JSON data (arrays as their shape, NaN and infinities as None), for summaries.

    `leave_out` names top-level fields to skip (e.g. a report's two traces).
    """
    data = {
        f.name: _encode(getattr(record, f.name), f.name, None)
        for f in dataclasses.fields(record)
        if f.name not in leave_out
    }
    return _finite(data)


def _finite(data: Any) -> Any:
    if isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, list):
        return [_finite(v) for v in data]
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    return data


# ---------------------------------------------------------------------------------------------
# The file


def record_to_bytes(record: SavedRecord) -> bytes:
    """Any record as one safetensors file's bytes: its arrays as tensors, the rest as JSON."""
    if record.record_kind not in RECORD_KINDS:
        raise TypeError(f"{type(record).__name__} is not a record a trace file can hold.")
    arrays: dict[str, np.ndarray] = {}
    meta = _encode(record, "", arrays)
    header = {
        "format": FORMAT_NAME,
        "version": str(FORMAT_VERSION),
        "kind": record.record_kind,
        "trace": json.dumps(meta, separators=(",", ":")),
    }
    return save_safetensors_bytes(arrays, metadata=header)


def load_record(path: str | Path) -> SavedRecord:
    """Read any record a trace file holds (a Trace, TrainingTrace, TrainerStepTrace or CacheReport)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TraceFileError(f"Cannot read trace file {path}: {exc.strerror or exc}.") from exc
    return record_from_bytes(data, source=str(path))


def record_from_bytes(data: bytes, source: str = "the uploaded file") -> SavedRecord:
    """Read any record from a trace file's bytes; `source` names the file in error messages."""
    header = _read_header_metadata(data, source)
    if header.get("format") != FORMAT_NAME:
        raise templated(
            TraceFileError,
            N_(
                "{source} is a safetensors file but not a Stepwise trace (no '{marker}' marker). "
                "Record one with `python -m tracer record` or the app's Download button."
            ),
            source=source,
            marker=FORMAT_NAME,
        )
    try:
        version = int(header.get("version", ""))
    except ValueError:
        raise TraceFileError(
            f"{source} has an unreadable format version {header.get('version')!r}."
        ) from None
    if version > FORMAT_VERSION:
        raise templated(
            TraceFileError,
            N_(
                "{source} was written by a newer Stepwise (trace format {version}; this one reads up to "
                "{readable}). Upgrade Stepwise to open it."
            ),
            source=source,
            version=version,
            readable=FORMAT_VERSION,
        )
    kind = header.get("kind", "trace")  # version 1 held generation traces only, and named no kind
    if kind not in RECORD_KINDS:
        raise TraceFileError(
            f"{source} holds a record of kind {kind!r}, which this Stepwise does not know (it reads "
            f"{', '.join(RECORD_KINDS)}). Upgrade Stepwise to open it."
        )
    module_name, class_name = RECORD_KINDS[kind].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    try:
        arrays = load_safetensors_bytes(data)
        meta = json.loads(header["trace"])
        if version == 1 and isinstance(meta, dict):
            meta.setdefault("prompt_text", "")  # the first traces had no prompt text
        record = _decode(cls, meta, arrays)
    except (SafetensorError, KeyError, ValueError, TypeError, IndexError) as exc:
        raise templated(
            TraceFileError,
            N_("{source} is damaged: {error}. Record the trace again."),
            source=source,
            error=f"{type(exc).__name__}: {exc}",
        ) from exc
    if any(f.name == "format_version" for f in dataclasses.fields(record)):
        record = dataclasses.replace(record, format_version=version)
    return record


def _read_header_metadata(data: bytes, source: str) -> dict[str, str]:
    # The safetensors layout: 8 bytes little-endian header length, then the JSON header.
    problem = N_("{source} is not a Stepwise trace file (it is damaged, or a file of another kind).")
    if len(data) < 8:
        raise templated(TraceFileError, problem, source=source)
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > len(data) - 8 or header_len > 100_000_000:
        raise templated(TraceFileError, problem, source=source)
    try:
        header = json.loads(data[8 : 8 + header_len])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise templated(TraceFileError, problem, source=source) from None
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(metadata, dict):
        raise templated(
            TraceFileError,
            N_("{source} is a safetensors file but not a Stepwise trace (it has no trace metadata)."),
            source=source,
        )
    return metadata
