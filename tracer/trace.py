"""The records of a traced run (Trace, Step, Event, TensorInfo, CacheLayer, TraceError) and their file.

Everything here is plain data: frozen dataclasses holding Python values and read-only NumPy
arrays, never live torch tensors (the model mutates its cache in place, so a reference would
change under the reader's feet).

The file is a single safetensors file: the captured arrays as tensors, and the rest as JSON in
the header's metadata, with a format name and version. No pickle anywhere, so a trace file from
a stranger is safe to open.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as load_safetensors_bytes
from safetensors.numpy import save as save_safetensors_bytes

from tracer import names, positions

FORMAT_NAME = "stepwise-trace"
FORMAT_VERSION = 1


class TraceFileError(ValueError):
    """A trace file could not be read: damaged, not a trace, or written by a newer Stepwise."""


# ---------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True)
class TensorInfo:
    """What a tensor looked like at a hook point: shape, dtype, and values of small int tensors."""

    shape: tuple[int, ...]
    dtype: str
    values: tuple[int, ...] | None = None  # flattened row-major; only small integer tensors

    def array(self) -> np.ndarray | None:
        """The recorded values in their shape, or None when only the shape was kept."""
        if self.values is None:
            return None
        return np.asarray(self.values, dtype=np.int64).reshape(self.shape)

    def __str__(self) -> str:
        return f"{self.dtype}[{', '.join(map(str, self.shape))}]"

    def to_json(self) -> dict:
        data: dict[str, Any] = {"shape": list(self.shape), "dtype": self.dtype}
        if self.values is not None:
            data["values"] = list(self.values)
        return data

    @staticmethod
    def from_json(data: dict) -> TensorInfo:
        values = data.get("values")
        return TensorInfo(
            shape=tuple(int(n) for n in data["shape"]),
            dtype=str(data["dtype"]),
            values=None if values is None else tuple(int(v) for v in values),
        )


# A recorded argument: a tensor's description, or a short text for anything else
# (a cache object, a bool, an int, None).
Value = TensorInfo | str


def _value_to_json(value: Value) -> dict | str:
    return value.to_json() if isinstance(value, TensorInfo) else value


def _value_from_json(data: dict | str) -> Value:
    return TensorInfo.from_json(data) if isinstance(data, dict) else str(data)


def _values_to_json(values: dict[str, Value]) -> dict:
    return {key: _value_to_json(v) for key, v in values.items()}


def _values_from_json(data: dict) -> dict[str, Value]:
    return {key: _value_from_json(v) for key, v in data.items()}


@dataclass(frozen=True, eq=False)
class Event:
    """One call at a hook point, in the order it started.

    `tensors` holds what was captured as arrays, each with its shape in the name's comment:
    - "attention": [batch, heads, q_len, k_len] (attention hook points)
    - "hidden_last": [batch, hidden], the block's output at the newest position (decoder.layers.{i})
    - "logits_last": [batch, vocab], the model's logits at the newest position (forward)
    `note` says what was not captured and why; `error` is set when this call raised.
    """

    name: str
    module: str
    inputs: dict[str, Value] = field(default_factory=dict)
    outputs: dict[str, Value] = field(default_factory=dict)
    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    note: str = ""
    error: str | None = None

    @property
    def attention_kind(self) -> str | None:
        return names.attention_kind(self.name)

    @property
    def layer(self) -> int | None:
        parsed = names.parse_layer(self.name)
        return None if parsed is None else parsed[1]


@dataclass(frozen=True)
class CacheLayer:
    """One layer of the KV cache after a step. Shapes are [batch, kv_heads, seq, head_dim]."""

    layer: int
    kind: str  # "self" | "cross"
    key_shape: tuple[int, ...]
    value_shape: tuple[int, ...]
    seq_len: int  # positions kept
    nbytes: int
    seen: int | None = None  # positions seen so far: more than kept on a sliding-window layer

    @property
    def positions_seen(self) -> int:
        return self.seq_len if self.seen is None else self.seen

    def to_json(self) -> dict:
        return {
            "layer": self.layer,
            "kind": self.kind,
            "key_shape": list(self.key_shape),
            "value_shape": list(self.value_shape),
            "seq_len": self.seq_len,
            "nbytes": self.nbytes,
            "seen": self.seen,
        }

    @staticmethod
    def from_json(data: dict) -> CacheLayer:
        return CacheLayer(
            layer=int(data["layer"]),
            kind=str(data["kind"]),
            key_shape=tuple(data["key_shape"]),
            value_shape=tuple(data["value_shape"]),
            seq_len=int(data["seq_len"]),
            nbytes=int(data["nbytes"]),
            seen=None if data.get("seen") is None else int(data["seen"]),
        )


@dataclass(frozen=True)
class TraceError:
    """The run failed at `step` with an exception of `type` saying `message`."""

    step: int
    type: str
    message: str
    where: str = ""  # the hook point that was running when it failed, if one was

    def __str__(self) -> str:
        where = f" in {self.where}" if self.where else ""
        return f"step {self.step}{where}: {self.type}: {self.message}"


class TopToken(NamedTuple):
    """One entry of a step's top-k: a plain (token_id, token_text, prob) tuple with names."""

    token_id: int
    text: str
    prob: float


@dataclass(frozen=True, eq=False)
class Step:
    """One decoder forward pass: prepare_inputs_for_generation, the layers, lm_head, the token choice."""

    index: int
    phase: str  # "prefill" | "decode"
    prepare_inputs_args: dict[str, Value]  # what prepare_inputs_for_generation was called with
    prepare_inputs: dict[str, Value]  # what it returned, i.e. what the model was fed
    events: list[Event]
    cache: list[CacheLayer]  # after the step; empty with the cache off
    topk: list[TopToken]  # the distribution the token was chosen from, most likely first
    chosen_id: int | None  # None when the step failed before a token was chosen
    chosen_prob: float | None = None

    def _repr_html_(self) -> str:  # Jupyter: a step that ends a cell shows this summary
        from tracer.notebook import step_html

        return step_html(self)

    @property
    def complete(self) -> bool:
        return self.chosen_id is not None

    def event(self, name: str) -> Event | None:
        """The first event at hook point `name` in this step, or None."""
        return next((e for e in self.events if e.name == name), None)

    def attention(self, kind: str, layer: int, batch: int = 0) -> np.ndarray:
        """Attention weights [heads, q_len, k_len] of `kind` ("self", "cross", "encoder") in `layer`."""
        name = names.attention_name(kind, layer)
        event = self.event(name)
        if event is None:
            raise KeyError(f"Step {self.index} has no {name} event.")
        if "attention" not in event.tensors:
            reason = event.note or "attention was not captured"
            raise KeyError(f"Step {self.index}, {name}: {reason}.")
        return event.tensors["attention"][batch]

    def key_positions(self, kind: str, layer: int) -> np.ndarray:
        """The absolute positions [k_len] of the keys of attention `kind` in `layer` at this step.

        0..k_len-1 except on a sliding-window layer, whose decode rows see only the last W positions.
        """
        event = self.event(names.attention_name(kind, layer))
        weights = None if event is None else event.outputs.get("attn_weights")
        if not isinstance(weights, TensorInfo):
            raise KeyError(f"Step {self.index} has no {names.attention_name(kind, layer)} weights.")
        q_len, k_len = weights.shape[-2:]
        return positions.key_positions(kind, event.inputs, q_len, k_len)

    def has_attention(self, kind: str, layer: int) -> bool:
        event = self.event(names.attention_name(kind, layer))
        return event is not None and "attention" in event.tensors

    @property
    def fed_name(self) -> str | None:
        """What the decoder was fed at this step: "input_ids" (Llama), "decoder_input_ids" (BART), or
        "inputs_embeds" (a prompt fed as embeddings: generate() uses them on the first step only)."""
        for name in ("input_ids", "decoder_input_ids", "inputs_embeds"):
            if isinstance(self.prepare_inputs.get(name), TensorInfo):
                return name
        return None

    @property
    def fed(self) -> TensorInfo | None:
        """The tensor the decoder was fed: ids [batch, seq], or embeddings [batch, seq, hidden]."""
        name = self.fed_name
        return None if name is None else self.prepare_inputs[name]

    @property
    def fed_ids(self) -> list[int] | None:
        """The token ids the decoder was fed at this step (batch 0); None for embeddings or unrecorded."""
        fed = self.fed
        if fed is None or fed.values is None or self.fed_name == "inputs_embeds":
            return None
        return fed.array()[0].tolist()

    @property
    def fed_shape(self) -> tuple[int, ...] | None:
        return None if self.fed is None else self.fed.shape

    @property
    def fed_len(self) -> int | None:
        """How many positions were fed at this step (ids or embeddings: the sequence dimension)."""
        shape = self.fed_shape
        return int(shape[1]) if shape and len(shape) >= 2 else None

    def cache_seq_len(self, kind: str = "self") -> int | None:
        """Positions held by layer 0's cache of `kind` after this step; None with the cache off."""
        layer0 = next((c for c in self.cache if c.kind == kind), None)
        return None if layer0 is None else layer0.seq_len

    def cache_seen(self, kind: str = "self") -> int | None:
        """Positions the cache of `kind` has seen after this step (all layers; more than any sliding
        layer keeps); None with the cache off."""
        layers = [c.positions_seen for c in self.cache if c.kind == kind]
        return max(layers) if layers else None

    @property
    def logits(self) -> np.ndarray | None:
        """The model's logits at the newest position [vocab] (batch 0), if captured."""
        event = self.event(names.FORWARD)
        if event is None or "logits_last" not in event.tensors:
            return None
        return event.tensors["logits_last"][0]

    def hidden(self, layer: int) -> np.ndarray | None:
        """Decoder block `layer`'s output at the newest position [hidden] (batch 0), if captured."""
        event = self.event(names.decoder_layer(layer))
        if event is None or "hidden_last" not in event.tensors:
            return None
        return event.tensors["hidden_last"][0]


@dataclass(frozen=True)
class CaptureSummary:
    """How much of the captured arrays the byte budget let in, and what it kept out."""

    budget_bytes: int
    captured_bytes: int = 0
    skipped_count: int = 0
    skipped_bytes: int = 0
    first_skipped: str = ""  # e.g. "step 40, decoder.layers.1.self_attn attention [1, 4, 47, 47]"

    @property
    def complete(self) -> bool:
        return self.skipped_count == 0

    def describe(self) -> str:
        if self.complete:
            return f"all tensors captured ({human_bytes(self.captured_bytes)})"
        return (
            f"budget of {human_bytes(self.budget_bytes)} spent: {self.skipped_count} tensors "
            f"({human_bytes(self.skipped_bytes)}) kept as shapes only, from {self.first_skipped}"
        )


@dataclass(frozen=True, eq=False)
class Trace:
    """One traced `generate()` run of a batch of one prompt."""

    arch: str  # "decoder-only" | "encoder-decoder"
    model_name: str
    model_class: str
    prompt_text: str
    prompt_ids: list[int]  # the tokenized prompt (the encoder's input for BART)
    sequence_ids: list[int]  # what generate() returned (decoder side for BART)
    steps: list[Step]
    error: TraceError | None
    settings: dict[str, Any]  # max_new_tokens, use_cache, do_sample, seed, temperature, ...
    config: dict[str, Any]  # num_layers, num_heads, num_kv_heads, hidden_size, vocab_size, ...
    token_texts: dict[int, str]  # text of every id that appears in the trace
    capture: CaptureSummary
    # Why the run ended (tracer/stopping.py): {"reason": "eos" | "max_new_tokens" | "other criterion"
    # | "error", "token_id": the eos id chosen or None, "detail": plain words}; {} if not recorded.
    stop: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def _repr_html_(self) -> str:  # Jupyter: a trace that ends a cell shows this summary
        from tracer.notebook import trace_html

        return trace_html(self)

    @property
    def num_layers(self) -> int:
        return int(self.config.get("num_layers", 0))

    @property
    def encoder_decoder(self) -> bool:
        return self.arch == "encoder-decoder"

    @property
    def start_ids(self) -> list[int]:
        """What the decoder started from: the prompt (Llama) or the decoder start token (BART)."""
        return self.sequence_ids[: len(self.sequence_ids) - len(self.generated_ids)]

    @property
    def generated_ids(self) -> list[int]:
        return [s.chosen_id for s in self.steps if s.chosen_id is not None]

    @property
    def eos_token_ids(self) -> list[int]:
        """The end-of-sequence ids the run stopped on (one or several; none if it had none)."""
        value = self.settings.get("eos_token_id")
        if value is None:
            return []
        return [int(value)] if isinstance(value, int) else [int(v) for v in value]

    def token_text(self, token_id: int) -> str:
        return self.token_texts.get(int(token_id), f"<{int(token_id)}>")

    def tokens(self, ids: list[int]) -> list[str]:
        return [self.token_text(i) for i in ids]

    # -- the file -------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The trace as one safetensors file's bytes (what `save` writes)."""
        arrays: dict[str, np.ndarray] = {}
        steps_json = []
        for step in self.steps:
            events_json = []
            for e_index, event in enumerate(step.events):
                tensor_keys = {}
                for tensor_name, array in event.tensors.items():
                    key = f"s{step.index}.e{e_index}.{tensor_name}"
                    arrays[key] = np.ascontiguousarray(array)
                    tensor_keys[tensor_name] = key
                events_json.append(
                    {
                        "name": event.name,
                        "module": event.module,
                        "inputs": _values_to_json(event.inputs),
                        "outputs": _values_to_json(event.outputs),
                        "tensors": tensor_keys,
                        "note": event.note,
                        "error": event.error,
                    }
                )
            steps_json.append(
                {
                    "index": step.index,
                    "phase": step.phase,
                    "prepare_inputs_args": _values_to_json(step.prepare_inputs_args),
                    "prepare_inputs": _values_to_json(step.prepare_inputs),
                    "events": events_json,
                    "cache": [c.to_json() for c in step.cache],
                    "topk": [[t.token_id, t.text, t.prob] for t in step.topk],
                    "chosen_id": step.chosen_id,
                    "chosen_prob": step.chosen_prob,
                }
            )
        meta = {
            "arch": self.arch,
            "model_name": self.model_name,
            "model_class": self.model_class,
            "prompt_text": self.prompt_text,
            "prompt_ids": self.prompt_ids,
            "sequence_ids": self.sequence_ids,
            "steps": steps_json,
            "error": None if self.error is None else vars(self.error),
            "settings": self.settings,
            "config": self.config,
            "token_texts": {str(k): v for k, v in self.token_texts.items()},
            "capture": vars(self.capture),
            "stop": self.stop,
        }
        header = {
            "format": FORMAT_NAME,
            "version": str(FORMAT_VERSION),
            "trace": json.dumps(meta, separators=(",", ":")),
        }
        return save_safetensors_bytes(arrays, metadata=header)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_bytes(self.to_bytes())
        return path


def load_trace(path: str | Path) -> Trace:
    """Read a trace written by `Trace.save`. Raises TraceFileError naming the file if it can't."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TraceFileError(f"Cannot read trace file {path}: {exc.strerror or exc}.") from exc
    return trace_from_bytes(data, source=str(path))


def trace_from_bytes(data: bytes, source: str = "the uploaded file") -> Trace:
    """Read a trace from the bytes of a trace file; `source` names it in error messages."""
    header = _read_header_metadata(data, source)
    if header.get("format") != FORMAT_NAME:
        raise TraceFileError(
            f"{source} is a safetensors file but not a Stepwise trace (no '{FORMAT_NAME}' marker). "
            "Record one with `python -m tracer record` or the app's Download button."
        )
    try:
        version = int(header.get("version", ""))
    except ValueError:
        raise TraceFileError(
            f"{source} has an unreadable format version {header.get('version')!r}."
        ) from None
    if version > FORMAT_VERSION:
        raise TraceFileError(
            f"{source} was written by a newer Stepwise (trace format {version}; this one reads up to "
            f"{FORMAT_VERSION}). Upgrade Stepwise to open it."
        )
    try:
        arrays = load_safetensors_bytes(data)
        meta = json.loads(header["trace"])
        return _trace_from_json(meta, arrays, version)
    except (SafetensorError, KeyError, ValueError, TypeError, IndexError, json.JSONDecodeError) as exc:
        raise TraceFileError(
            f"{source} is damaged: {type(exc).__name__}: {exc}. Record the trace again."
        ) from exc


def _read_header_metadata(data: bytes, source: str) -> dict[str, str]:
    # The safetensors layout: 8 bytes little-endian header length, then the JSON header.
    problem = f"{source} is not a Stepwise trace file (it is damaged, or a file of another kind)."
    if len(data) < 8:
        raise TraceFileError(problem)
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > len(data) - 8 or header_len > 100_000_000:
        raise TraceFileError(problem)
    try:
        header = json.loads(data[8 : 8 + header_len])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise TraceFileError(problem) from None
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(metadata, dict):
        raise TraceFileError(
            f"{source} is a safetensors file but not a Stepwise trace (it has no trace metadata)."
        )
    return metadata


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def _trace_from_json(meta: dict, arrays: dict[str, np.ndarray], version: int) -> Trace:
    steps = []
    for s in meta["steps"]:
        events = [
            Event(
                name=e["name"],
                module=e["module"],
                inputs=_values_from_json(e["inputs"]),
                outputs=_values_from_json(e["outputs"]),
                tensors={name: _read_only(arrays[key]) for name, key in e["tensors"].items()},
                note=e.get("note", ""),
                error=e.get("error"),
            )
            for e in s["events"]
        ]
        steps.append(
            Step(
                index=int(s["index"]),
                phase=s["phase"],
                prepare_inputs_args=_values_from_json(s["prepare_inputs_args"]),
                prepare_inputs=_values_from_json(s["prepare_inputs"]),
                events=events,
                cache=[CacheLayer.from_json(c) for c in s["cache"]],
                topk=[TopToken(int(i), str(t), float(p)) for i, t, p in s["topk"]],
                chosen_id=s["chosen_id"],
                chosen_prob=s.get("chosen_prob"),
            )
        )
    error = meta.get("error")
    return Trace(
        arch=meta["arch"],
        model_name=meta["model_name"],
        model_class=meta["model_class"],
        prompt_text=meta.get("prompt_text", ""),
        prompt_ids=[int(i) for i in meta["prompt_ids"]],
        sequence_ids=[int(i) for i in meta["sequence_ids"]],
        steps=steps,
        error=None if error is None else TraceError(**error),
        settings=dict(meta["settings"]),
        config=dict(meta["config"]),
        token_texts={int(k): v for k, v in meta["token_texts"].items()},
        capture=CaptureSummary(**meta["capture"]),
        stop=dict(meta.get("stop") or {}),
        format_version=version,
    )


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"
