"""The records of a traced generate() run (Trace, Step, Event, TensorInfo, CacheLayer, TraceError).

Everything here is plain data: frozen dataclasses holding Python values and read-only NumPy
arrays, never live torch tensors (the model mutates its cache in place, so a reference would
change under the reader's feet).

A trace is saved like every record (tracer/records.py): one safetensors file, the captured
arrays as tensors and the rest as JSON in the header's metadata. No pickle anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from tracer import names, positions
from tracer.records import (  # noqa: F401  (FORMAT_NAME, TraceFileError: the trace file's public names)
    FORMAT_NAME,
    FORMAT_VERSION,
    EventSequence,
    ModelRun,
    SavedRecord,
    TraceFileError,
    load_record,
    record_from_bytes,
)

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


# A recorded argument: a tensor's description, or a short text for anything else
# (a cache object, a bool, an int, None).
Value = TensorInfo | str


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
class Step(EventSequence):
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

    def _where(self) -> str:
        return f"Step {self.index}"

    @property
    def complete(self) -> bool:
        return self.chosen_id is not None

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
class Trace(ModelRun, SavedRecord):
    """One traced `generate()` run of a batch of one prompt."""

    record_kind = "trace"

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


def load_trace(path: str | Path) -> Trace:
    """Read a generation trace written by `Trace.save`. Raises TraceFileError naming the file if it can't."""
    return _generation_trace(load_record(path), str(path))


def trace_from_bytes(data: bytes, source: str = "the uploaded file") -> Trace:
    """Read a generation trace from the bytes of a trace file; `source` names it in error messages."""
    return _generation_trace(record_from_bytes(data, source), source)


def _generation_trace(record: SavedRecord, source: str) -> Trace:
    if not isinstance(record, Trace):
        raise TraceFileError(
            f"{source} holds a {record.record_kind}, not a generation trace: open it with "
            "tracer.load_record, or upload it in the app's sidebar."
        )
    return record


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"
