"""The records of a traced generate() run (Trace, Step, Event, TensorInfo, CacheLayer, TraceError).

Everything here is plain data: frozen dataclasses holding Python values and read-only NumPy
arrays, never live torch tensors (the model mutates its cache in place, so a reference would
change under the reader's feet).

A trace is saved like every record (tracer/records.py): one safetensors file, the captured
arrays as tensors and the rest as JSON in the header's metadata. No pickle anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
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


@dataclass(frozen=True)
class RowChoice:
    """One batch row's token choice at a step: the token (the pad id once the row has finished, as
    generate() feeds it), its probability and the top-k it came from."""

    chosen_id: int
    chosen_prob: float | None
    topk: list[TopToken]


@dataclass(frozen=True)
class BeamChoice:
    """One beam-search step, per prompt of the batch (lists indexed [prompt][...]).

    Each of the `num_beams` running beams proposed continuations, and generate() ranked the best
    2 * num_beams of them (`candidate_*`, best first): `candidate_parents` the running beam
    (0..num_beams-1 within the prompt) each extends, `candidate_tokens` the token it appends,
    `candidate_scores` its summed log-probability. It then kept the best `num_beams` that did not
    finish: `parents`, `tokens`, `scores` of the beams the next step runs (empty after the last step).
    `reorder` is the flat beam index (prompt b's beam j at b * num_beams + j) the cache was
    reordered by after the step, as generate() handed it to the cache's `reorder_cache`; None
    when nothing was reordered (the cache off). `reorder_applied[i]` says whether cache layer i
    (self-attention layers, then cross) really moved its rows that way, keys and values both:
    False is the bug of a cache that ignores the reorder (or moves its keys only).
    """

    candidate_parents: list[list[int]]
    candidate_tokens: list[list[int]]
    candidate_scores: list[list[float]]
    parents: list[list[int]] = field(default_factory=list)
    tokens: list[list[int]] = field(default_factory=list)
    scores: list[list[float]] = field(default_factory=list)
    reorder: list[int] | None = None
    reorder_applied: list[bool] = field(default_factory=list)


@dataclass(frozen=True)
class BeamResult:
    """What beam search returned: `sequences` [batch * num_return_sequences][len], their
    `sequences_scores` (length-penalised) and `beam_indices` (the beam each token came from, -1 past
    the end), exactly as generate() gives them."""

    num_beams: int
    sequences: list[list[int]]
    sequences_scores: list[float]
    beam_indices: list[list[int]]


@dataclass(frozen=True)
class Batch:
    """The rows of a traced batch: each prompt as the tokenizer padded it, and what generate() made of it.

    `prompt_ids[r]` holds the pad ids where row r was padded and `attention_mask[r]` zeros there;
    `sequence_ids[r]` is generate()'s row r (a row that finished early is padded with the pad id).
    `stops[r]` says why row r ended, like `Trace.stop` for the run.
    """

    prompt_texts: list[str]
    prompt_ids: list[list[int]]
    attention_mask: list[list[int]]
    sequence_ids: list[list[int]]
    padding_side: str  # "left" | "right"
    pad_token_id: int | None
    stops: list[dict[str, Any]] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.prompt_ids)


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
    # A batch: every row's choice (rows[0] is chosen_id, chosen_prob, topk); [] for one prompt.
    rows: list[RowChoice] = field(default_factory=list)
    beams: BeamChoice | None = None  # beam search: the beams this step kept
    # Which row of the recorded inputs (prepare_inputs, event inputs: the whole batch's) this step's
    # arrays and choice are: 0, or the row `Trace.row` / `Trace.hypothesis` sliced it to.
    batch_row: int = 0

    def _repr_html_(self) -> str:  # Jupyter: a step that ends a cell shows this summary
        from tracer.notebook import step_html

        return step_html(self)

    def _where(self) -> str:
        return f"Step {self.index}"

    @property
    def complete(self) -> bool:
        return self.chosen_id is not None

    def row(self, r: int, beams: int = 1) -> Step:
        """This step as row `r` of its batch saw it: its choice, and every captured array's row r.

        With beam search (`beams` > 1) a prompt runs `beams` rows of the model's batch: row r is
        rows r * beams ... r * beams + beams - 1, and its BeamChoice is prompt r's, its reorder
        counted from 0 within the prompt.
        """
        if r == 0 and not self.rows and beams == 1:
            return self
        size = len(self.rows) or 1
        if not 0 <= r < size:
            raise IndexError(f"Step {self.index} has {size} rows; there is no row {r}.")
        choice = self.rows[r] if self.rows else RowChoice(self.chosen_id, self.chosen_prob, self.topk)
        return self._sliced(r * beams, beams, r, choice, _prompt_beams(self.beams, r, beams))

    def _sliced(
        self, first: int, count: int, prompt: int, choice: RowChoice, beams: BeamChoice | None
    ) -> Step:
        """This step with every captured array cut to rows first ... first + count - 1 of the batch.

        The encoder's arrays have a row per prompt, not per beam (generate() runs the encoder before
        it expands the batch into beams): they are cut to row `prompt`.
        """

        def cut(event: Event) -> Event:
            if not event.tensors:
                return event
            rows = slice(prompt, prompt + 1) if _runs_per_prompt(event.name) else slice(first, first + count)
            return replace(event, tensors={k: v[rows] for k, v in event.tensors.items()})

        events = [cut(e) for e in self.events]
        return replace(
            self,
            events=events,
            chosen_id=choice.chosen_id,
            chosen_prob=choice.chosen_prob,
            topk=choice.topk,
            rows=[],
            beams=beams,
            batch_row=first,
        )

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
        """The token ids the decoder was fed at this step (this step's row of the batch, `batch_row`);
        None for embeddings or unrecorded."""
        fed = self.fed
        if fed is None or fed.values is None or self.fed_name == "inputs_embeds":
            return None
        return fed.array()[self.batch_row].tolist()

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
    """One traced `generate()` run: one prompt, or a batch (`batch`, `row(r)`), greedy, sampled or beams.

    `prompt_ids`, `sequence_ids` and every step's `chosen_id` and `topk` are of row 0; `row(r)` is
    row r as a trace of its own.
    """

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
    # The prompt's attention mask (0 at a pad), for a row of a batch; None: every position is real.
    prompt_mask: list[int] | None = None
    batch: Batch | None = None  # several prompts: every row; None for one prompt
    beam_result: BeamResult | None = None  # beam search: the finished hypotheses generate() returned

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
    def batch_size(self) -> int:
        return self.batch.size if self.batch is not None else 1

    @property
    def num_beams(self) -> int:
        """Beams per prompt: 1 unless this is a beam search trace."""
        return self.beam_result.num_beams if self.beam_result is not None else 1

    @property
    def returned_per_prompt(self) -> int:
        """Sequences generate() returned per prompt: num_return_sequences for beam search, else 1."""
        if self.beam_result is None:
            return 1
        return max(len(self.beam_result.sequences) // self.batch_size, 1)

    def row(self, r: int) -> Trace:
        """Row `r` of a batch as a trace of its own: its prompt (pads and mask included), its sequence,
        and every step's choice and arrays of that row. Every view of one prompt works on it.

        With beam search the row is prompt r with all its beams (rows r * num_beams ... of the
        model's batch), its returned hypotheses and its beams' choices; `hypothesis(h)` of it
        follows one of them.
        """
        if self.batch is None:
            if r != 0:
                raise IndexError(f"This trace has one row; there is no row {r}.")
            return self
        if not 0 <= r < self.batch.size:
            raise IndexError(f"This batch has {self.batch.size} rows; there is no row {r}.")
        rows = self.__dict__.setdefault("_rows", {})  # built once per row: a page asks on every redraw
        if r not in rows:
            beams, per_prompt = self.num_beams, self.returned_per_prompt
            rows[r] = replace(
                self,
                prompt_text=self.batch.prompt_texts[r],
                prompt_ids=self.batch.prompt_ids[r],
                # a beam batch's sequence_ids are generate()'s: num_return_sequences per prompt
                sequence_ids=self.batch.sequence_ids[r * per_prompt],
                steps=[s.row(r, beams) for s in self.steps],
                stop=self.batch.stops[r] if r < len(self.batch.stops) else self.stop,
                prompt_mask=self.batch.attention_mask[r],
                batch=None,
                beam_result=_prompt_result(self.beam_result, r, per_prompt),
            )
        return rows[r]

    def hypothesis(self, h: int) -> Trace:
        """Beam search: returned sequence `h` (an index into `beam_result.sequences`) as a trace of its own.

        At each step a hypothesis sits in some beam, the row of the model's batch its token came
        from (`beam_indices`); its steps hold that row's arrays, so its attention is the attention
        that computed its tokens. It has as many steps as tokens of its own (one that ended early
        is shorter). A step's top-k is the recorded top-k for the prompt's best hypothesis; for
        another, its beam's continuations among the ones generate() ranked at that step (the
        record keeps the winner's whole top-k only), each with its probability.
        """
        result = self.beam_result
        if result is None:
            raise IndexError("This trace is not a beam search: it has no hypotheses; use row(r).")
        if not 0 <= h < len(result.sequences):
            raise IndexError(f"Beam search returned {len(result.sequences)} sequences; there is no {h}.")
        rows = self.__dict__.setdefault("_rows", {})
        if ("hypothesis", h) not in rows:
            rows["hypothesis", h] = self._hypothesis(h)
        return rows["hypothesis", h]

    def _hypothesis(self, h: int) -> Trace:
        result = self.beam_result
        per_prompt = self.returned_per_prompt
        prompt, nb = h // per_prompt, result.num_beams
        beam_of = result.beam_indices[h]  # flat row of the batch each of its tokens came from
        own = [t for t in range(len(self.steps)) if t < len(beam_of) and beam_of[t] >= 0]
        start = len(self.start_ids)
        sequence = result.sequences[h][: start + len(own)]
        steps = []
        for t in own:
            step = self.steps[t]
            token = sequence[start + t]
            beam = beam_of[t] - prompt * nb  # the running beam within the prompt
            best = h % per_prompt == 0
            winner = (
                step.rows[prompt] if step.rows else RowChoice(step.chosen_id, step.chosen_prob, step.topk)
            )
            if best:
                choice = RowChoice(token, winner.chosen_prob, winner.topk)
            else:
                ranked = [
                    TopToken(tok, self.token_text(tok), p)
                    for tok, p in _beam_candidates(self.steps, t, prompt, beam)
                ]
                prob = next((c.prob for c in ranked if c.token_id == token), None)
                choice = RowChoice(token, prob, ranked)
            steps.append(step._sliced(beam_of[t], 1, prompt, choice, _prompt_beams(step.beams, prompt, nb)))
        eos = self.eos_token_ids
        if own and sequence[-1] in eos:
            stop = {
                "reason": "eos",
                "token_id": sequence[-1],
                "detail": f"this hypothesis chose eos ({sequence[-1]}) at step {own[-1]}",
            }
        else:
            stop = self.stop
        batch = self.batch
        return replace(
            self,
            prompt_text=batch.prompt_texts[prompt] if batch else self.prompt_text,
            prompt_ids=batch.prompt_ids[prompt] if batch else self.prompt_ids,
            sequence_ids=sequence,
            steps=steps,
            stop=stop,
            prompt_mask=batch.attention_mask[prompt] if batch else self.prompt_mask,
            batch=None,
            beam_result=None,
        )

    @property
    def num_returned(self) -> int:
        """How many sequences generate() returned: a beam search's hypotheses (num_return_sequences
        per prompt), a batch's rows, or 1."""
        return len(self.beam_result.sequences) if self.beam_result is not None else self.batch_size

    def returned(self, i: int) -> Trace:
        """Returned sequence `i` as a trace of its own: hypothesis i of a beam search (`hypothesis`),
        row i of a batch (`row`), or this trace itself for one prompt (i = 0)."""
        return self.hypothesis(i) if self.beam_result is not None else self.row(i)

    def key_mask(self, step: Step, kind: str, layer: int) -> np.ndarray | None:
        """Which keys of attention `kind` in `layer` at `step` the mask let through ([k_len] bool), for
        this trace's prompt (row 0 of a batch; `row(r)` for another); None when every key is real.

        Pads are masked where the prompt has them: the encoder's keys and cross-attention's (BART),
        and a decoder-only model's self-attention over the prompt (positions after it are real).
        """
        mask = self.prompt_mask if self.batch is None else self.batch.attention_mask[0]
        if mask is None or all(mask) or (kind == "self" and self.encoder_decoder):
            return None
        keys = step.key_positions(kind, layer)
        real = np.asarray(mask, dtype=bool)
        return np.array([bool(real[p]) if p < len(real) else True for p in keys.tolist()])

    @property
    def eos_token_ids(self) -> list[int]:
        """The end-of-sequence ids the run stopped on (one or several; none if it had none)."""
        value = self.settings.get("eos_token_id")
        if value is None:
            return []
        return [int(value)] if isinstance(value, int) else [int(v) for v in value]


def _runs_per_prompt(name: str) -> bool:
    """Whether hook point `name` runs once per prompt: the encoder and its layers (BART)."""
    return name == names.ENCODER or name.startswith(names.ENCODER + ".")


def _prompt_beams(beams: BeamChoice | None, prompt: int, num_beams: int) -> BeamChoice | None:
    """Prompt `prompt`'s part of a step's BeamChoice, its reorder counted within the prompt."""
    if beams is None:
        return None
    pick = slice(prompt, prompt + 1)
    reorder = beams.reorder
    if reorder is not None:
        reorder = [i - prompt * num_beams for i in reorder[prompt * num_beams : (prompt + 1) * num_beams]]
    return BeamChoice(
        candidate_parents=beams.candidate_parents[pick],
        candidate_tokens=beams.candidate_tokens[pick],
        candidate_scores=beams.candidate_scores[pick],
        parents=beams.parents[pick],
        tokens=beams.tokens[pick],
        scores=beams.scores[pick],
        reorder=reorder,
        reorder_applied=beams.reorder_applied,
    )


def _prompt_result(result: BeamResult | None, prompt: int, per_prompt: int) -> BeamResult | None:
    """Prompt `prompt`'s returned hypotheses, their beam indices counted within the prompt."""
    if result is None:
        return None
    pick = slice(prompt * per_prompt, (prompt + 1) * per_prompt)
    first = prompt * result.num_beams
    return BeamResult(
        num_beams=result.num_beams,
        sequences=result.sequences[pick],
        sequences_scores=result.sequences_scores[pick],
        beam_indices=[[i - first if i >= 0 else i for i in row] for row in result.beam_indices[pick]],
    )


def _beam_candidates(steps: list[Step], t: int, prompt: int, beam: int) -> list[tuple[int, float]]:
    """(token, probability) of each continuation of beam `beam` of `prompt` that step t ranked, most
    likely first: its candidate's summed log-probability minus the beam's own before the step (0 at
    step 0, where beam 0 runs alone)."""
    choice = steps[t].beams
    if choice is None:
        return []
    before = 0.0 if t == 0 else steps[t - 1].beams.scores[prompt][beam]
    return [
        (token, float(np.exp(score - before)))
        for parent, token, score in zip(
            choice.candidate_parents[prompt],
            choice.candidate_tokens[prompt],
            choice.candidate_scores[prompt],
            strict=True,
        )
        if parent == beam
    ]


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
