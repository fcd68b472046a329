"""Events: live values turned into records, opened and closed in call order, within a byte budget.

An `EventLog` holds one run's events: each call at a hook point opens an event when it starts
(so events are in the order calls started, a block before its attention) and fills its outputs
when it returns. Steps group the events; *where* a step begins and ends is a step rule's business
(steps.py), the log only keeps them. Tensors become shapes, small integer values (read at the
call), or read-only float32 copies counted against the budget. A record never refers to a tensor
of the model: a small capture waits for its copy until the run is over, and is kept only if
torch's version counter says the model did not change it in place meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers.cache_utils import DynamicCache

from tracer import names, positions
from tracer.trace import (
    BeamChoice,
    CacheLayer,
    CaptureSummary,
    Event,
    RowChoice,
    Step,
    TensorInfo,
    TopToken,
    TraceError,
    Value,
)

TOP_K = 10
# Integer tensors up to this many elements keep their values (input_ids, position_ids, masks).
SMALL_INT_NUMEL = 4096
DEFAULT_BUDGET_BYTES = 256 * 1024 * 1024
# Captures up to this many bytes are copied once the run is over, together (EventLog.capture).
SMALL_CAPTURE = 64 * 1024
# Steps whose token choices are read together (EventLog.read_choices): 16 x [batch, vocab] at a time.
_CHOICE_CHUNK = 16
# A step that feeds the model at most this many positions (rows x new positions: a decode step)
# has its calls described when it ends, together (EventLog.describe_calls).
DEFER_MAX_FED = 16


# ---------------------------------------------------------------------------------------------
# Turning live values into records


# Hooks describe thousands of tensors per run, most of them float tensors of a handful of shapes:
# a TensorInfo is immutable, so one object serves every float tensor of the same shape and dtype
# (and every integer tensor too big to keep its values). A small integer tensor's record holds its
# values, read at each call; what stays the same for its shape and dtype is kept beside.
_INTERNED: dict[tuple[torch.Size, torch.dtype], TensorInfo] = {}
_WITH_VALUES: dict[tuple[torch.Size, torch.dtype], tuple[tuple[int, ...], str]] = {}  # -> (shape, dtype name)


def tensor_info(tensor: torch.Tensor) -> TensorInfo:
    key = (tensor.shape, tensor.dtype)
    info = _INTERNED.get(key)
    if info is not None:
        return info
    known = _WITH_VALUES.get(key)
    if known is not None:
        return TensorInfo(known[0], known[1], flat_values(tensor, len(known[0])))
    return _first_of_its_kind(tensor, key)


def _first_of_its_kind(tensor: torch.Tensor, key: tuple[torch.Size, torch.dtype]) -> TensorInfo:
    """The record of the first tensor of a (shape, dtype) this process sees; learns which table it goes in."""
    if len(_INTERNED) + len(_WITH_VALUES) > 4096:  # a long-lived process sees ever new lengths: stay bounded
        _INTERNED.clear()
        _WITH_VALUES.clear()
    dtype = tensor.dtype
    shape, name = tuple(tensor.shape), str(dtype).removeprefix("torch.")
    if not dtype.is_floating_point and not dtype.is_complex and tensor.numel() <= SMALL_INT_NUMEL:
        _WITH_VALUES[key] = (shape, name)
        return TensorInfo(shape, name, flat_values(tensor, len(shape)))
    info = _INTERNED[key] = TensorInfo(shape, name, None)
    return info


def flat_values(tensor: torch.Tensor, ndim: int) -> tuple:
    """A tensor's values flattened row-major: one tolist(), the fewest torch calls (each one costs
    microseconds while the model's weights fill the CPU caches)."""
    values = tensor.tolist()
    if ndim == 0:
        return (values,)
    for _ in range(ndim - 1):
        values = chain.from_iterable(values)  # rows joined lazily, walked once by tuple()
    return tuple(values)


def summarize(value: Any) -> Value:
    """A record of any argument: a TensorInfo for a tensor, a short text for anything else."""
    if isinstance(value, torch.Tensor):
        return tensor_info(value)
    return describe(value)


def describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return str(tensor_info(value))
    if value is None or isinstance(value, bool | int | float):
        return repr(value)
    if isinstance(value, str):
        return repr(value) if len(value) <= 60 else repr(value[:57] + "...")
    if isinstance(value, tuple | list):  # before the cache probe: a failed hasattr costs an exception
        return "(" + ", ".join(describe(v) for v in value) + ")" if len(value) <= 8 else type(value).__name__
    if isinstance(value, dict):  # also ModelOutput, a dict subclass
        inner = ", ".join(f"{k}={describe(v)}" for k, v in value.items() if v is not None)
        return f"{type(value).__name__}({inner})"
    if hasattr(value, "get_seq_length"):  # a transformers Cache
        return f"{type(value).__name__}(seq_len={value.get_seq_length()})"
    return type(value).__name__


def summarize_all(values: dict[str, Any]) -> dict[str, Value]:
    return {key: summarize(v) for key, v in values.items()}


_OUTPUT_KEYS = tuple(f"output[{i}]" for i in range(16))  # a tuple's items, named once


def outputs_of(output: Any) -> dict[str, Value]:
    """A module's return value as named records: "output", a ModelOutput's fields, "output[i]"."""
    if isinstance(output, torch.Tensor):
        return {"output": tensor_info(output)}
    if isinstance(output, dict):  # ModelOutput
        return {k: summarize(v) for k, v in output.items() if v is not None}
    if isinstance(output, tuple):
        keys = _OUTPUT_KEYS
        if len(output) > len(keys):
            keys = [f"output[{i}]" for i in range(len(output))]
        return {key: summarize(v) for key, v in zip(keys, output, strict=False) if v is not None}
    return {"output": describe(output)}


def cache_parts(cache: Any) -> list[tuple[str, Any]]:
    """A transformers cache as (kind, part): an EncoderDecoderCache has a self and a cross part."""
    if type(cache) is not DynamicCache and hasattr(cache, "self_attention_cache"):  # no failed probe
        return [("self", cache.self_attention_cache), ("cross", cache.cross_attention_cache)]
    return [("self", cache)]


def cache_layers(cache: Any) -> list[CacheLayer]:
    """Per-layer shapes and bytes of a transformers cache, self-attention layers then cross."""
    if cache is None:
        return []
    records = []
    for kind, part in cache_parts(cache):
        for index, layer in enumerate(getattr(part, "layers", [])):
            keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
            if not isinstance(keys, torch.Tensor):
                continue  # a layer the run has not written yet
            key_shape = tuple(keys.shape)  # [batch, kv_heads, seq, head_dim]
            if len(key_shape) < 2:
                continue
            value_shape = tuple(values.shape)
            kept, seen = positions.layer_lengths(layer)
            nbytes = keys.nbytes + values.nbytes
            records.append(CacheLayer(index, kind, key_shape, value_shape, kept, nbytes, seen))
    return records


def layer_cache_lengths(cache: Any, kind: str, layer_idx: int) -> tuple[int, int]:
    """(positions kept, positions seen) by one layer's cache of `kind` ("self" or "cross")."""
    part = cache  # a cache with one part serves both kinds
    if type(cache) is not DynamicCache and hasattr(cache, "self_attention_cache"):
        part = cache.cross_attention_cache if kind == "cross" else cache.self_attention_cache
    layers = getattr(part, "layers", ())
    if layer_idx >= len(layers):
        return 0, 0
    return positions.layer_lengths(layers[layer_idx])


# top_k's blocks: the vocabulary is read once for the blocks' maxima, then only the best blocks are
# ranked. Below _TOP_K_BLOCKS_FROM values a row, torch.topk alone costs less than the dozen extra ops.
_TOP_K_BLOCK = 64
_TOP_K_BLOCKS_FROM = 8192


def top_k(values: torch.Tensor, k: int) -> torch.return_types.topk:
    """`torch.topk(values, k)` along the last dimension (sorted, largest first), for a vocabulary.

    torch.topk walks every element of a row through its selection loop, about 14 instructions
    each: on a 32k vocabulary that was the recorder's largest single cost per step. The k largest
    values lie in the k blocks (of _TOP_K_BLOCK) with the largest maxima, or in the tail after the
    last whole block, so one vectorized max per block and a topk over the candidates find them.
    Values tied at the k-th place may be ranked differently from torch.topk's choice among them.
    """
    n = values.shape[-1]
    blocks = n // _TOP_K_BLOCK
    k = min(k, n)
    if n < _TOP_K_BLOCKS_FROM or blocks <= k or not values.is_contiguous():
        return torch.topk(values, k)
    rows = values.reshape(-1, n)  # [rows, n], a view
    whole = blocks * _TOP_K_BLOCK
    maxima = rows[:, :whole].view(rows.shape[0], blocks, _TOP_K_BLOCK).amax(dim=-1)  # [rows, blocks]
    best = torch.topk(maxima, k).indices.mul_(_TOP_K_BLOCK)  # [rows, k]: where each best block starts
    within = torch.arange(_TOP_K_BLOCK, device=values.device)
    candidates = (best.unsqueeze(-1) + within).flatten(1)  # [rows, k * block]
    if whole < n:
        tail = torch.arange(whole, n, device=values.device).expand(rows.shape[0], n - whole)
        candidates = torch.cat([candidates, tail], dim=1)
    top = torch.topk(rows.gather(1, candidates), k)  # [rows, k] among the candidates
    shape = (*values.shape[:-1], k)
    return torch.return_types.topk((top.values.view(shape), candidates.gather(1, top.indices).view(shape)))


def numpy_view(tensor: torch.Tensor) -> np.ndarray | None:
    """A NumPy view (no copy) of a CPU float32 tensor outside autograd, else None.

    It costs no torch operation: slicing and converting in torch go through its dispatcher, whose
    code is evicted from the CPU caches by the model's own work between two hook calls.
    """
    try:
        view = tensor.numpy()
    except (RuntimeError, TypeError):  # it needs grad, is on another device, or has a dtype NumPy lacks
        return None
    return view if view.dtype is _FLOAT32 else None


_FLOAT32 = np.dtype(np.float32)  # NumPy's one float32 dtype: `is` is the quickest check


def read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def as_float32_cpu(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` outside autograd, as float32 on the CPU (itself when it already is)."""
    tensor = tensor.detach()
    if tensor.dtype != torch.float32 or tensor.device.type != "cpu":
        tensor = tensor.to(dtype=torch.float32, device="cpu")
    return tensor


def float_copy(tensor: torch.Tensor) -> np.ndarray:
    """A read-only float32 NumPy copy of `tensor`, which the model may change after the hook returns."""
    return read_only(as_float32_cpu(tensor).numpy().copy())


# ---------------------------------------------------------------------------------------------
# Records under construction


_NOT_RETURNED = object()


class OpenEvent:
    """An event while its call runs and until its step ends; `freeze()` makes its Event."""

    # Thousands per run: a plain slotted class, whose constructor costs half a dataclass's.
    __slots__ = ("call", "error", "inputs", "module", "name", "notes", "outputs", "returned", "tensors")

    def __init__(
        self,
        name: str,
        module: str,
        inputs: dict[str, Value] | None = None,
        outputs: dict[str, Value] | None = None,
        call: tuple[tuple, dict] | None = None,
    ):
        self.name = name
        self.module = module
        self.inputs = {} if inputs is None else inputs
        self.outputs = {} if outputs is None else outputs
        self.tensors: dict[str, np.ndarray] = {}
        self.notes: list[str] = []
        self.error: str | None = None
        # A decode step's call, described when its step ends (EventLog.describe_calls): (args, kwargs)
        # and what it returned. None / _NOT_RETURNED once described, or for a call described at once.
        self.call = call
        self.returned: Any = _NOT_RETURNED

    def freeze(self) -> Event:
        return Event(
            self.name, self.module, self.inputs, self.outputs, self.tensors, "; ".join(self.notes), self.error
        )


@dataclass
class OpenStep:
    index: int
    events: list[OpenEvent]
    prepare_inputs_args: dict[str, Value] = field(default_factory=dict)
    prepare_inputs: dict[str, Value] = field(default_factory=dict)
    cache: list[CacheLayer] = field(default_factory=list)
    topk: list[TopToken] = field(default_factory=list)
    chosen_id: int | None = None
    chosen_prob: float | None = None
    rows: list[RowChoice] = field(default_factory=list)
    beams: BeamChoice | None = None
    live_cache: Any = None  # the run's cache object, read when the step closes
    chosen_ids: list[int] = field(default_factory=list)  # each row's token
    scores: torch.Tensor | None = None  # [batch, vocab] at the choice, until read_choices reads them

    @property
    def closed(self) -> bool:
        return self.chosen_id is not None

    def row_ids(self) -> list[int]:
        """The token each row chose (one for a single prompt)."""
        if self.rows:
            return [r.chosen_id for r in self.rows]
        return self.chosen_ids or [self.chosen_id]

    def freeze(self) -> Step:
        return Step(
            index=self.index,
            phase="prefill" if self.index == 0 else "decode",
            prepare_inputs_args=self.prepare_inputs_args,
            prepare_inputs=self.prepare_inputs,
            events=[e.freeze() for e in self.events],
            cache=self.cache,
            topk=self.topk,
            chosen_id=self.chosen_id,
            chosen_prob=self.chosen_prob,
            rows=self.rows,
            beams=self.beams,
        )


class Budget:
    """Bytes of captured arrays allowed in one trace; past it, events keep only their shapes."""

    def __init__(self, budget_bytes: int):
        self.budget_bytes = int(budget_bytes)
        self.captured = 0
        self.skipped_count = 0
        self.skipped_bytes = 0
        self.first_skipped = ""

    def take(self, nbytes: int) -> bool:
        """Whether `nbytes` more fit; if so, they are counted as captured."""
        if self.captured + nbytes <= self.budget_bytes:
            self.captured += nbytes
            return True
        return False

    def skip(self, nbytes: int, what: str) -> None:
        """Count an array left out; `what` names the first one (the summary says where it began)."""
        self.skipped_count += 1
        self.skipped_bytes += nbytes
        if not self.first_skipped:
            self.first_skipped = what

    def summary(self) -> CaptureSummary:
        return CaptureSummary(
            self.budget_bytes, self.captured, self.skipped_count, self.skipped_bytes, self.first_skipped
        )


# ---------------------------------------------------------------------------------------------
# The log


class EventLog:
    """One run's events in call order, grouped into steps, and the budget their arrays draw on.

    Events that start while no step is open (BART's encoder before the first step, every event of
    a single pass) wait in `loose` and become the first events of the next step that opens.
    """

    def __init__(self, budget_bytes: int = DEFAULT_BUDGET_BYTES, full_outputs: tuple[str, ...] = ()):
        self.budget = Budget(budget_bytes)
        # Hook points whose whole output tensor is kept as tensors["output"] (training keeps lm_head's).
        self.full_outputs = frozenset(full_outputs)
        self.steps: list[OpenStep] = []
        self.loose: list[OpenEvent] = []
        # Where new events go: the open step's events, else `loose` (events between a step's token
        # choice and the next step, none in generate() today, belong to the next step).
        self.receiving = self.loose
        # Small captures not copied yet: (event, key, tensor, its version then, keep tensor[:, -1] only)
        self._uncopied: list[tuple[OpenEvent, str, torch.Tensor, int, bool]] = []
        self.start_rows: list[list[int]] | None = None  # the first ids the decoder was fed, per row
        self.error: TraceError | None = None
        self.failed_at = ""  # the hook point that was running when the run failed
        # this step's records of shared objects: id -> (object, its record)
        self._shared: dict[int, tuple[Any, Value]] = {}
        # Whether the open step's calls are described when it ends (a decode step), and those calls.
        self.defer = False
        self._undescribed: list[OpenEvent] = []
        # Captures of those calls: (event, key, tensor, its version at the call, keep the last position only)
        self._pending_captures: list[tuple[OpenEvent, str, torch.Tensor, int, bool]] = []
        self._pending_prepare: tuple[OpenStep, OpenEvent, dict, dict] | None = None

    # -- steps ----------------------------------------------------------------------------

    @property
    def current(self) -> OpenStep | None:
        return self.steps[-1] if self.steps else None

    def open_step(self, fed_ids: Any = None, **fields: Any) -> OpenStep:
        """Start the next step; the events waiting outside a step become its first events."""
        step = OpenStep(index=len(self.steps), events=self.loose, **fields)
        self.loose = []
        self.receiving = step.events
        self.defer = False  # until the rule knows what the step feeds (`feeding`)
        if self.start_rows is None and isinstance(fed_ids, torch.Tensor):
            self.start_rows = fed_ids.tolist()
        self.steps.append(step)
        return step

    def feeding(self, fed: Any) -> None:
        """The open step feeds the model `fed` ([batch, new positions], or None when it feeds
        embeddings): a decode step's calls are described when it ends, in one go.

        Between two hook calls the model's own work evicts the recorder's code and data from the
        CPU caches, and describing a call there costs several times what it costs in a loop over
        the step's calls at its end. The calls hold their arguments and outputs until then: a
        decode step's are a few positions wide, so that is a few kilobytes per call; the prefill
        (and any step with the cache off) is described call by call, as its tensors are large.
        """
        self.defer = isinstance(fed, torch.Tensor) and fed.numel() <= DEFER_MAX_FED

    def close_step(
        self, step: OpenStep, chosen_ids: torch.Tensor, scores: torch.Tensor | None, module: str
    ) -> None:
        """End `step` with the tokens chosen ([batch]) and the scores they came from ([batch, vocab],
        after the logits processors), then read the cache. Row 0 is the step's own choice.

        The distribution over the vocabulary (probabilities, top-k) is read once the run ends
        (`read_choices`), for all steps in one batched softmax and top-k: per step those few ops on
        [batch, vocab] cost more in dispatch than in arithmetic. The scores are kept until then
        (generate() keeps them too, with output_scores): it never changes them after the choice.
        """
        self.describe_calls()
        chosen = [int(i) for i in chosen_ids.tolist()]
        event = OpenEvent(names.CHOOSE_TOKEN, module, outputs={"next_token": tensor_info(chosen_ids)})
        if scores is not None:
            event.inputs["scores"] = tensor_info(scores)
            step.scores = scores.detach()
        elif len(chosen) > 1:
            step.rows = [RowChoice(token, None, []) for token in chosen]
        step.chosen_id, step.chosen_ids = chosen[0], chosen
        self.clear_shared()
        step.events.append(event)
        if step is self.steps[-1]:
            self.receiving = self.loose
        step.cache = cache_layers(step.live_cache)
        step.live_cache = None

    def read_choices(self, token_text) -> None:
        """Each closed step's probabilities and top-k tokens, per row, from the scores it kept."""
        pending: dict[tuple, list[OpenStep]] = {}  # steps whose scores stack: same shape and device
        for step in self.steps:
            if step.scores is not None:
                key = (tuple(step.scores.shape), step.scores.device)
                pending.setdefault(key, []).append(step)
        for group in pending.values():
            for chunk in range(0, len(group), _CHOICE_CHUNK):
                self._read_chunk(group[chunk : chunk + _CHOICE_CHUNK], token_text)

    def _read_chunk(self, steps: list[OpenStep], token_text) -> None:
        """`read_choices` for steps whose scores have one shape and device, as one softmax and top-k.

        The softmax is worked in place on a stack of the steps' scores: a fresh [steps, batch, vocab]
        array for a whole run would cost more in page faults than the arithmetic (8 MB for 64 steps).
        """
        scores = torch.stack([step.scores for step in steps]).float()  # [steps, batch, vocab], a copy
        chosen = torch.tensor([step.chosen_ids for step in steps], device=scores.device)  # [steps, batch]
        exp = scores.sub_(scores.amax(dim=-1, keepdim=True)).exp_()  # softmax's numerator, as torch's
        total = exp.sum(dim=-1, keepdim=True)  # [steps, batch, 1]
        top = top_k(exp, TOP_K)  # [steps, batch, k]
        top_probs = (top.values / total).tolist()
        probs = (exp.gather(-1, chosen.unsqueeze(-1)) / total).squeeze(-1).tolist()  # [steps][batch]
        for step, step_probs, values, ids in zip(steps, probs, top_probs, top.indices.tolist(), strict=True):
            topk = [
                [TopToken(i, token_text(i), p) for p, i in zip(row_values, row_ids, strict=True)]
                for row_values, row_ids in zip(values, ids, strict=True)
            ]
            step.chosen_prob, step.topk = step_probs[0], topk[0]
            if len(step.chosen_ids) > 1:
                step.rows = [RowChoice(*row) for row in zip(step.chosen_ids, step_probs, topk, strict=True)]
            step.scores = None

    def fail(self, exc: BaseException) -> None:
        """Note that the run raised `exc`; the steps so far and the failing step's events stay."""
        current = self.current
        if current is not None and not current.closed:
            step_index = current.index
        else:
            step_index = len(self.steps)  # failed before this step began
            if self.loose:  # e.g. inside BART's encoder: those events belong to that step
                self.open_step()
        self.error = TraceError(step_index, type(exc).__name__, str(exc), self.failed_at)

    def finish(self) -> None:
        """Describe the calls not described yet (a step that failed) and copy the small captures."""
        self.describe_calls()
        self.copy_captures()
        self.clear_shared()

    def frozen_steps(self) -> list[Step]:
        self.finish()
        return [s.freeze() for s in self.steps]

    def loose_events(self) -> list[Event]:
        """The events recorded outside any step: all of them when a single pass is traced."""
        self.finish()
        return [e.freeze() for e in self.loose]

    # -- events ---------------------------------------------------------------------------

    def append(self, event: OpenEvent) -> OpenEvent:
        self.receiving.append(event)
        return event

    def add(
        self,
        name: str,
        module: str,
        inputs: dict[str, Value] | None = None,
        outputs: dict[str, Value] | None = None,
        tensors: dict[str, torch.Tensor] | None = None,
        note: str = "",
    ) -> None:
        """Record a call no module hook sees (a function like shift_tokens_right, a loss), in call order."""
        event = OpenEvent(name, module, dict(inputs or {}), dict(outputs or {}))
        for key, tensor in (tensors or {}).items():
            self.capture(event, key, tensor)
        if note:
            event.notes.append(note)
        self.append(event)

    def capture(
        self,
        event: OpenEvent,
        key: str,
        tensor: torch.Tensor,
        last_position: bool = False,
        version: int | None = None,
    ) -> None:
        """Keep `tensor` (with `last_position`, tensor[:, -1, :]) as event.tensors[key] if the budget
        allows, else say it was left out.

        A small tensor (a decode step's attention map or hidden state: at most SMALL_CAPTURE bytes,
        and not a slice of a larger one) is kept as it is and copied once the run is over, with the
        others of its shape in one stack (`copy_captures`): between two hook calls the model's own
        work evicts torch's and NumPy's code from the CPU caches, and a copy cost tens of
        microseconds per array. Its version counter, read now, says whether the model changed it in
        place before the copy (then it is not kept, and its event says so). The tensors kept count
        against the budget as their copies do.

        In a decode step (`feeding`) all of that waits for the step's end: only the tensor and its
        version counter are taken at the call (`version`, when the step's end takes it up).
        """
        if version is None:
            version = tensor._version
            if self.defer:
                self._pending_captures.append((event, key, tensor, version, last_position))
                return
        elif tensor._version != version:
            event.notes.append(f"{key} not captured: the model changed it in place after its call")
            return
        shape = tensor.shape
        positions = shape[1] if last_position else 1  # the last of shape[1] positions is kept, or all
        nbytes = tensor.numel() // max(positions, 1) * 4  # stored as float32
        if not self.budget.take(nbytes):
            kept_shape = [shape[0], *shape[2:]] if last_position else list(shape)
            step = len(self.steps) - 1 if self.steps else 0
            self.budget.skip(nbytes, f"step {step}, {event.name} {key} {kept_shape}")
            event.notes.append(f"{key} not captured: the trace's byte budget is spent")
            return
        if nbytes <= SMALL_CAPTURE and positions == 1:
            self._uncopied.append((event, key, tensor, version, last_position))
            return
        view = numpy_view(tensor)  # the common case: sliced and copied by NumPy, no torch operation
        if view is not None:
            event.tensors[key] = read_only((view[:, -1] if last_position else view).copy())
        else:
            event.tensors[key] = float_copy(tensor[:, -1, :] if last_position else tensor)

    def copy_captures(self) -> None:
        """Copy the small captures kept since the last call: one stack per shape and dtype.

        Called once the run is over (and before any record is frozen), when it is quick: the
        model no longer evicts this code from the caches, and a decode step's hidden states have
        one shape for the whole run, so all of them are one stack.
        """
        if not self._uncopied:
            return
        groups: dict[tuple, list[tuple[OpenEvent, str, torch.Tensor, int, bool]]] = {}
        for item in self._uncopied:
            tensor = item[2]
            groups.setdefault((tensor.shape, tensor.dtype), []).append(item)
        self._uncopied = []
        with torch.no_grad():
            for items in groups.values():
                try:
                    stacked = torch.stack([item[2] for item in items])  # [n, *shape], a new tensor
                except RuntimeError:  # on different devices: each moved to the CPU first
                    stacked = torch.stack([item[2].cpu() for item in items])
                # Its rows are the captures, read-only as the whole is.
                arrays = read_only(as_float32_cpu(stacked).numpy())
                for array, (event, key, tensor, version, last_position) in zip(arrays, items, strict=True):
                    if tensor._version != version:
                        event.notes.append(
                            f"{key} not captured: the model changed it in place after its call"
                        )
                        continue
                    event.tensors[key] = array[:, -1] if last_position else array

    def summarize_kwargs(self, kwargs: dict, records: dict[str, Value]) -> None:
        """Add the records of a call's keyword arguments (None left out) to `records`.

        Every decoder layer of a step is called with the same mask, position ids, rotary
        embeddings and cache objects: each such object is described once per step (a cache's length
        as the step's first call saw it). The memo holds the object, so its id can't be reused by
        another one before the memo is cleared when the step ends. A float tensor's record is one
        interned TensorInfo already: memoizing it would only keep every layer's hidden states alive
        until the step ends.
        """
        shared = self._shared
        for key, value in kwargs.items():
            if value is None:
                continue
            hit = shared.get(id(value))
            if hit is not None and hit[0] is value:
                records[key] = hit[1]
            elif isinstance(value, torch.Tensor) and value.dtype.is_floating_point:
                records[key] = tensor_info(value)
            else:
                record = records[key] = summarize(value)
                shared[id(value)] = (value, record)

    def clear_shared(self) -> None:
        self._shared.clear()

    def remember(self, value: Any) -> None:
        """Describe a shared object now, for every record of it this step: a cache, whose length
        grows as the step's layers run (its record is its length as the step's first call saw it)."""
        if id(value) not in self._shared:
            self._shared[id(value)] = (value, summarize(value))

    def records_of(self, values: dict[str, Any]) -> dict[str, Value]:
        """`summarize_all(values)`, with this step's records of the shared objects it remembers."""
        shared = self._shared
        records = {}
        for key, value in values.items():
            hit = shared.get(id(value))
            records[key] = hit[1] if hit is not None and hit[0] is value else summarize(value)
        return records

    def call_inputs(self, args: tuple, kwargs: dict) -> dict[str, Value]:
        """The records of a call's arguments: positional ones as arg{i} (the first, if [batch, seq,
        hidden], as hidden_states), then the keyword ones."""
        inputs: dict[str, Value] = {}
        for i, arg in enumerate(args):
            record = summarize(arg)
            is_hidden = i == 0 and type(record) is TensorInfo and len(record.shape) == 3
            inputs["hidden_states" if is_hidden else f"arg{i}"] = record
        if kwargs:
            self.summarize_kwargs(kwargs, inputs)
        return inputs

    def describe_prepare(self, step: OpenStep, event: OpenEvent, called_with: dict, returned: dict) -> None:
        """Record what prepare_inputs_for_generation was called with and returned (None kept) as
        `step.prepare_inputs_args` and `step.prepare_inputs`: now, or in a decode step when it ends,
        with the cache described now (its length before the step)."""
        if not self.defer:
            step.prepare_inputs_args = event.inputs = summarize_all(called_with)
            step.prepare_inputs = event.outputs = summarize_all(returned)
            return
        for values in (called_with, returned):
            cache = values.get("past_key_values")
            if cache is not None:
                self.remember(cache)
        self._pending_prepare = (step, event, called_with, returned)

    def describe_calls(self) -> None:
        """Describe the calls held since the step began (`feeding`): their inputs before what was
        read at the call (a layer's cache length), their outputs before what a hook point added;
        then their captures, each kept only if its version counter is still the one read at the call.

        Tensors are described as they are now: their shapes can't change, and the few integer
        tensors whose values are kept (ids, positions) are new each step in generate(). A model
        that changes one in place during the step is recorded with the value at the step's end.
        """
        if self._pending_prepare is not None:
            step, event, called_with, returned = self._pending_prepare
            self._pending_prepare = None
            step.prepare_inputs_args = event.inputs = self.records_of(called_with)
            step.prepare_inputs = event.outputs = self.records_of(returned)
        for event in self._undescribed:
            args, kwargs = event.call
            inputs = self.call_inputs(args, kwargs)
            if event.inputs:  # read at the call: a layer's cache length
                inputs.update(event.inputs)
            event.inputs = inputs
            if event.returned is not _NOT_RETURNED:
                outputs = outputs_of(event.returned)
                if event.outputs:  # added at the call by the hook point (attention weights)
                    outputs.update(event.outputs)
                event.outputs = outputs
            event.call, event.returned = None, _NOT_RETURNED
        self._undescribed.clear()
        pending, self._pending_captures = self._pending_captures, []
        for event, key, tensor, version, last_position in pending:
            self.capture(event, key, tensor, last_position, version=version)

    # -- hook points ------------------------------------------------------------------------

    def hook_point(self, name: str, path: str, on_return=None, layer_idx: int | None = None):
        """(pre, post) hook functions that record each call of a module as an event `name`.

        `on_return(event, output)` adds what the call returned beyond its shapes (attention maps,
        the hidden state). A module with a `layer_idx` that is handed the cache gets its own
        layer's cache length before the call. A call that raised (post sees output None) is marked.
        """
        calls: list[OpenEvent] = []  # calls in progress: a module may call itself (it never does today)
        keep_output = name in self.full_outputs
        cache_kind = "cross" if names.attention_kind(name) == "cross" else "self"
        undescribed = self._undescribed  # bound once: it is read on every call of every hook point

        def pre(module: nn.Module, args: tuple, kwargs: dict) -> None:
            cache = kwargs.get("past_key_values") if kwargs else None
            if self.defer:  # described when the step ends; only what changes meanwhile is read now
                event = OpenEvent(name, path, {}, call=(args, kwargs))
                undescribed.append(event)
                if cache is not None:
                    self.remember(cache)
            else:
                event = OpenEvent(name, path, self.call_inputs(args, kwargs))
            if cache is not None and layer_idx is not None:
                # The cache is shared by all layers and updated as they run: read this layer's own length.
                kept, seen = layer_cache_lengths(cache, cache_kind, layer_idx)
                event.inputs[positions.KEPT_BEFORE] = str(kept)
                if seen != kept:  # a sliding-window layer: it keeps fewer positions than it has seen
                    event.inputs[positions.SEEN_BEFORE] = str(seen)
            self.receiving.append(event)
            calls.append(event)

        def post(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            if not calls:
                return
            event = calls.pop()
            if output is None:
                event.error = "raised"
                self.failed_at = self.failed_at or name
                return
            if event.call is not None:
                event.returned = output
            else:
                event.outputs = outputs_of(output)
            if keep_output and isinstance(output, torch.Tensor):
                self.capture(event, "output", output)
            if on_return is not None:
                on_return(event, output)

        return pre, post
