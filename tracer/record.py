"""The Recorder: installs every hook on a model for one traced run, and always removes them.

One `with Recorder(model, ...) as rec:` block

- switches the model to eager attention (the only implementation that returns weights) when
  attention is captured,
- wraps `prepare_inputs_for_generation` (each call starts a step),
- registers pre- and post-hooks on the model, the encoder, every decoder block, every attention
  module and lm_head (post-hooks with `always_call=True`, so a call that raises is still seen),
- hands `generate()` a stopping criterion that sees each chosen token and the distribution it
  was drawn from, which closes the step,

and in `__exit__` puts everything back, whatever happened inside: after a trace the model has
no hooks, its own `prepare_inputs_for_generation` and its own attention implementation.

Hooks write into plain Python records straight away (shapes, small integer values, copied
float arrays), never keeping references to tensors the model may change later.
"""

from __future__ import annotations

import functools
import inspect
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import StoppingCriteria

from tracer import names, positions
from tracer.errors import SUPPORTED_LAYOUTS, TracingNotSupported
from tracer.trace import CacheLayer, CaptureSummary, Event, Step, TensorInfo, TopToken, TraceError, Value

TOP_K = 10
# Integer tensors up to this many elements keep their values (input_ids, position_ids, masks).
SMALL_INT_NUMEL = 4096
DEFAULT_BUDGET_BYTES = 256 * 1024 * 1024

# A model is one Python object shared by every trace of it (and one torch RNG per process):
# traces run one at a time, so two app sessions never mix their hooks, records or seeds.
# Hold it too around other work that touches torch's global RNG (building a random model).
TRACE_LOCK = threading.Lock()
_NOTHING = object()


# ---------------------------------------------------------------------------------------------
# Which modules to hook


@dataclass(frozen=True)
class ModelLayout:
    """Where the hook points are in one model."""

    arch: str  # "decoder-only" | "encoder-decoder"
    encoder: nn.Module | None
    encoder_self_attn: list[nn.Module]
    decoder_layers: list[nn.Module]
    decoder_self_attn: list[nn.Module]
    decoder_cross_attn: list[nn.Module]
    lm_head: nn.Module
    # The token embeddings and each decoder block's MLP as (first module, last module): Llama's
    # `mlp` is one module, BART's MLP runs from fc1 to fc2. None / empty where a model has none.
    encoder_embed: nn.Module | None = None
    decoder_embed: nn.Module | None = None
    decoder_mlps: tuple[tuple[nn.Module, nn.Module], ...] = ()

    @property
    def num_layers(self) -> int:
        return len(self.decoder_layers)


def detect_layout(model: nn.Module) -> ModelLayout:
    """Find the hook points of a Llama-layout or BART-layout model, or say why it can't be traced."""
    cls = type(model).__name__
    config = getattr(model, "config", None)
    try:
        lm_head = model.get_output_embeddings()
        decoder = model.get_decoder()
        decoder_layers = list(decoder.layers)
        decoder_self_attn = [layer.self_attn for layer in decoder_layers]
        if getattr(config, "is_encoder_decoder", False):
            encoder = model.get_encoder()
            encoder_self_attn = [layer.self_attn for layer in encoder.layers]
            decoder_cross_attn = [layer.encoder_attn for layer in decoder_layers]
            arch = "encoder-decoder"
        else:
            encoder, encoder_self_attn, decoder_cross_attn = None, [], []
            arch = "decoder-only"
    except (AttributeError, TypeError, NotImplementedError) as exc:
        raise TracingNotSupported(
            f"Stepwise cannot trace {cls}: its modules are not laid out like a model it knows "
            f"({exc}). It traces {SUPPORTED_LAYOUTS}."
        ) from None
    if lm_head is None or not decoder_layers:
        raise TracingNotSupported(
            f"Stepwise cannot trace {cls}: no lm_head or no decoder layers. It traces {SUPPORTED_LAYOUTS}."
        )
    return ModelLayout(
        arch,
        encoder,
        encoder_self_attn,
        decoder_layers,
        decoder_self_attn,
        decoder_cross_attn,
        lm_head,
        encoder_embed=getattr(encoder, "embed_tokens", None),
        decoder_embed=getattr(decoder, "embed_tokens", None),
        decoder_mlps=_mlps(decoder_layers),
    )


def _mlps(blocks: list[nn.Module]) -> tuple[tuple[nn.Module, nn.Module], ...]:
    """Each block's MLP as (first, last) module: `mlp` (Llama), or `fc1` .. `fc2` (BART); () if unknown."""
    spans = []
    for block in blocks:
        mlp = getattr(block, "mlp", None)
        if isinstance(mlp, nn.Module):
            spans.append((mlp, mlp))
        elif isinstance(getattr(block, "fc1", None), nn.Module) and isinstance(
            getattr(block, "fc2", None), nn.Module
        ):
            spans.append((block.fc1, block.fc2))
        else:
            return ()
    return tuple(spans)


# ---------------------------------------------------------------------------------------------
# Turning live values into records


_DTYPE_NAMES: dict[torch.dtype, str] = {}  # torch.int64 -> "int64"; hooks ask thousands of times


def tensor_info(tensor: torch.Tensor) -> TensorInfo:
    dtype = _DTYPE_NAMES.get(tensor.dtype)
    if dtype is None:
        dtype = _DTYPE_NAMES[tensor.dtype] = str(tensor.dtype).removeprefix("torch.")
    values = None
    if (
        not tensor.dtype.is_floating_point
        and not tensor.dtype.is_complex
        and tensor.numel() <= SMALL_INT_NUMEL
    ):
        values = tuple(tensor.detach().reshape(-1).tolist())  # Python ints already
    return TensorInfo(tuple(tensor.shape), dtype, values)


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
    if hasattr(value, "get_seq_length"):  # a transformers Cache
        return f"{type(value).__name__}(seq_len={value.get_seq_length()})"
    if isinstance(value, dict):  # also ModelOutput, a dict subclass
        inner = ", ".join(f"{k}={describe(v)}" for k, v in value.items() if v is not None)
        return f"{type(value).__name__}({inner})"
    if isinstance(value, tuple | list) and len(value) <= 8:
        return "(" + ", ".join(describe(v) for v in value) + ")"
    return type(value).__name__


def summarize_all(values: dict[str, Any]) -> dict[str, Value]:
    return {key: summarize(v) for key, v in values.items()}


def cache_layers(cache: Any) -> list[CacheLayer]:
    """Per-layer shapes and bytes of a transformers cache, self-attention layers then cross."""
    if cache is None:
        return []
    if hasattr(cache, "self_attention_cache"):  # EncoderDecoderCache
        parts = [("self", cache.self_attention_cache), ("cross", cache.cross_attention_cache)]
    else:
        parts = [("self", cache)]
    records = []
    for kind, part in parts:
        for index, layer in enumerate(getattr(part, "layers", [])):
            keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
            if not isinstance(keys, torch.Tensor) or keys.dim() < 2:
                continue  # a layer the run has not written yet
            _, seen = positions.layer_lengths(layer)
            records.append(
                CacheLayer(
                    layer=index,
                    kind=kind,
                    key_shape=tuple(keys.shape),  # [batch, kv_heads, seq, head_dim]
                    value_shape=tuple(values.shape),
                    seq_len=int(keys.shape[-2]),
                    nbytes=int(keys.numel() * keys.element_size() + values.numel() * values.element_size()),
                    seen=seen,
                )
            )
    return records


def _float_copy(tensor: torch.Tensor) -> np.ndarray:
    array = tensor.detach().to(dtype=torch.float32, device="cpu").numpy().copy()
    array.flags.writeable = False
    return array


# ---------------------------------------------------------------------------------------------
# Records under construction


@dataclass
class _OpenEvent:
    name: str
    module: str
    inputs: dict[str, Value] = field(default_factory=dict)
    outputs: dict[str, Value] = field(default_factory=dict)
    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    def freeze(self) -> Event:
        return Event(
            self.name, self.module, self.inputs, self.outputs, self.tensors, "; ".join(self.notes), self.error
        )


@dataclass
class _OpenStep:
    index: int
    events: list[_OpenEvent]
    prepare_inputs_args: dict[str, Value] = field(default_factory=dict)
    prepare_inputs: dict[str, Value] = field(default_factory=dict)
    cache: list[CacheLayer] = field(default_factory=list)
    topk: list[TopToken] = field(default_factory=list)
    chosen_id: int | None = None
    chosen_prob: float | None = None
    live_cache: Any = None  # the generate() cache object, read when the step closes

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
        )


class _Budget:
    """Bytes of captured arrays allowed in one trace; past it, events keep only their shapes."""

    def __init__(self, budget_bytes: int):
        self.budget_bytes = int(budget_bytes)
        self.captured = 0
        self.skipped_count = 0
        self.skipped_bytes = 0
        self.first_skipped = ""

    def take(self, nbytes: int, what: str) -> bool:
        if self.captured + nbytes <= self.budget_bytes:
            self.captured += nbytes
            return True
        self.skipped_count += 1
        self.skipped_bytes += nbytes
        if not self.first_skipped:
            self.first_skipped = what
        return False

    def summary(self) -> CaptureSummary:
        return CaptureSummary(
            self.budget_bytes, self.captured, self.skipped_count, self.skipped_bytes, self.first_skipped
        )


class _TokenChoice(StoppingCriteria):
    """Sees each step's chosen token and the final scores it was drawn from.

    generate() calls stopping criteria right after the token is chosen, with the processed
    scores (after temperature, top-k, ...) when `output_scores=True`: exactly the distribution
    that was sampled or arg-maxed. It never stops generation itself.
    """

    def __init__(self, recorder: Recorder):
        self.recorder = recorder

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        self.recorder.close_step(input_ids, scores[-1] if scores else None)
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


# ---------------------------------------------------------------------------------------------
# The recorder


class Recorder:
    """Context manager that records one generate() run of `model` into Steps."""

    def __init__(
        self,
        model: nn.Module,
        *,
        capture_attention: bool = True,
        budget_bytes: int = DEFAULT_BUDGET_BYTES,
        token_text=lambda token_id: str(token_id),
        full_outputs: tuple[str, ...] = (),
        steps_from_forward: bool = False,
    ):
        self.model = model
        # A hand-written decoding loop calls the model itself, not generate(): then each call of the
        # model's forward starts a step (see "a hand-written loop" below).
        self.steps_from_forward = steps_from_forward
        self._last_logits: torch.Tensor | None = None
        # Hook points whose whole output tensor is kept as tensors["output"] (training keeps lm_head's).
        self.full_outputs = frozenset(full_outputs)
        self.layout = detect_layout(model)
        self.capture_attention = capture_attention
        self.budget = _Budget(budget_bytes)
        self.token_text = token_text
        self.steps: list[_OpenStep] = []
        self.start_ids: list[int] | None = None
        self.error: TraceError | None = None
        self._preamble: list[_OpenEvent] = []  # events before the first step (BART's encoder)
        self._open_calls: dict[int, list[_OpenEvent]] = {}  # id(module) -> calls in progress
        self._failed_at = ""
        self._shared: dict[int, tuple[Any, Value]] = {}  # id -> (object, its record), this step
        self._handles: list[Any] = []
        self._own_prepare: Any = _NOTHING
        self._original_attn: Any = None
        self._module_names = {id(m): n for n, m in model.named_modules()}

    # -- install and remove ---------------------------------------------------------------

    def __enter__(self) -> Recorder:
        TRACE_LOCK.acquire()
        try:
            self._install()
        except BaseException:
            self._uninstall()
            TRACE_LOCK.release()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        try:
            self._uninstall()
        finally:
            TRACE_LOCK.release()

    def _install(self) -> None:
        model, layout = self.model, self.layout
        if self.capture_attention:
            self._original_attn = model.config._attn_implementation
            if self._original_attn != "eager":
                model.set_attn_implementation("eager")

        # An instance may carry its own override (a user's patch): put that exact object back later.
        self._own_prepare = vars(model).get("prepare_inputs_for_generation", _NOTHING)
        original_prepare = model.prepare_inputs_for_generation
        # functools.wraps keeps the signature: generate() reads it to decide which kwargs it accepts.
        model.prepare_inputs_for_generation = functools.wraps(original_prepare)(
            self._wrap_prepare(original_prepare)
        )

        if self.steps_from_forward:  # registered first, so the step is open before any event of the call
            self._handles.append(model.register_forward_pre_hook(self._forward_starts_step, with_kwargs=True))
            self._handles.append(model.register_forward_hook(self._forward_ends_step, with_kwargs=True))
        self._hook(model, names.FORWARD, on_post=self._on_forward)
        if layout.encoder is not None:
            self._hook(layout.encoder, names.ENCODER)
            if layout.encoder_embed is not None:
                self._hook(layout.encoder_embed, names.ENCODER_EMBED)
            for i, attn in enumerate(layout.encoder_self_attn):
                self._hook(attn, names.encoder_self_attn(i), on_post=self._on_attention)
        if layout.decoder_embed is not None:
            self._hook(layout.decoder_embed, names.DECODER_EMBED)
        for i, block in enumerate(layout.decoder_layers):
            self._hook(block, names.decoder_layer(i), on_post=self._on_block)
            self._hook(layout.decoder_self_attn[i], names.decoder_self_attn(i), on_post=self._on_attention)
            if layout.decoder_cross_attn:
                self._hook(
                    layout.decoder_cross_attn[i], names.decoder_cross_attn(i), on_post=self._on_attention
                )
            if layout.decoder_mlps:
                first, last = layout.decoder_mlps[i]
                self._hook(first, names.decoder_mlp(i), last=last)
        self._hook(layout.lm_head, names.LM_HEAD)

    def _uninstall(self) -> None:
        self._shared.clear()
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self._own_prepare is not _NOTHING:
            self.model.prepare_inputs_for_generation = self._own_prepare
        elif "prepare_inputs_for_generation" in vars(self.model):
            del self.model.prepare_inputs_for_generation
        if self._original_attn is not None and self.model.config._attn_implementation != self._original_attn:
            self.model.set_attn_implementation(self._original_attn)

    def stopping_criteria(self) -> StoppingCriteria:
        return _TokenChoice(self)

    # -- steps ----------------------------------------------------------------------------

    @property
    def current(self) -> _OpenStep | None:
        return self.steps[-1] if self.steps else None

    def _wrap_prepare(self, original):
        parameters = list(inspect.signature(original).parameters)

        def prepare_inputs_for_generation(*args, **kwargs):
            called_with = dict(zip(parameters, args, strict=False)) | kwargs
            step = _OpenStep(index=len(self.steps), events=self._preamble)
            self._preamble = []
            step.prepare_inputs_args = summarize_all(called_with)
            if self.start_ids is None and isinstance(args[0] if args else None, torch.Tensor):
                self.start_ids = args[0][0].tolist()
            self.steps.append(step)
            event = _OpenEvent(
                names.PREPARE_INPUTS, "prepare_inputs_for_generation", inputs=step.prepare_inputs_args
            )
            step.events.append(event)
            try:
                model_inputs = original(*args, **kwargs)
            except BaseException:
                event.error = "raised"
                self._failed_at = self._failed_at or names.PREPARE_INPUTS
                raise
            event.outputs = step.prepare_inputs = summarize_all(model_inputs)
            step.live_cache = model_inputs.get("past_key_values")
            return model_inputs

        return prepare_inputs_for_generation

    def close_step(self, input_ids: torch.Tensor, scores: torch.Tensor | None) -> None:
        """Called by generate() (through _TokenChoice) once the step's token is chosen."""
        step = self.current
        if step is None:
            return
        chosen = int(input_ids[0, -1])
        event = _OpenEvent(
            names.CHOOSE_TOKEN,
            "hand-written loop (next token fed)" if self.steps_from_forward else "generate (token choice)",
            outputs={"next_token": tensor_info(input_ids[:, -1])},
        )
        if scores is not None:
            event.inputs["scores"] = tensor_info(scores)  # [batch, vocab], after the logits processors
            probs = torch.softmax(scores[0].float(), dim=-1)  # [vocab]
            top = torch.topk(probs, k=min(TOP_K, probs.shape[-1]))
            step.topk = [
                TopToken(int(i), self.token_text(int(i)), float(p))
                for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
            ]
            step.chosen_prob = float(probs[chosen])
        step.chosen_id = chosen
        self._shared.clear()
        step.events.append(event)
        step.cache = cache_layers(step.live_cache)
        step.live_cache = None

    def fail(self, exc: BaseException) -> None:
        """Note that generate() raised `exc`; the steps so far and the failing step's events stay."""
        current = self.current
        if current is not None and current.chosen_id is None:
            step_index = current.index
        else:
            step_index = len(self.steps)  # failed before this step's prepare_inputs call
            if self._preamble:  # e.g. inside BART's encoder: those events belong to that step
                self.steps.append(_OpenStep(index=step_index, events=self._preamble))
                self._preamble = []
        self.error = TraceError(step_index, type(exc).__name__, str(exc), self._failed_at)

    def frozen_steps(self) -> list[Step]:
        return [s.freeze() for s in self.steps]

    # -- a plain forward pass (no generate(), so no steps) --------------------------------

    def add_event(
        self,
        name: str,
        module: str,
        inputs: dict[str, Value] | None = None,
        outputs: dict[str, Value] | None = None,
        tensors: dict[str, torch.Tensor] | None = None,
        note: str = "",
    ) -> None:
        """Record a call no module hook sees (a function like shift_tokens_right, a loss), in call order."""
        event = _OpenEvent(name, module, dict(inputs or {}), dict(outputs or {}))
        for key, tensor in (tensors or {}).items():
            self._capture(event, key, tensor)
        if note:
            event.notes.append(note)
        (self.current.events if self._in_step() else self._preamble).append(event)

    def loose_events(self) -> list[Event]:
        """Events recorded outside any generate() step: all of them when a plain forward pass is traced."""
        return [e.freeze() for e in self._preamble]

    # -- a hand-written loop (steps_from_forward=True) -------------------------------------
    # No prepare_inputs_for_generation call and no stopping criterion mark the steps, so each
    # forward call opens one, and the token the step chose is read from what the loop feeds next
    # (the last fed id), or for the last step from the sequence the loop returns (finish_loop).

    def _forward_starts_step(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        fed = dict(kwargs)
        if args:
            fed["input_ids"] = args[0]
        ids = fed.get("input_ids", fed.get("decoder_input_ids"))
        if self.current is not None and self.current.chosen_id is None and isinstance(ids, torch.Tensor):
            self.close_step(ids, self._last_logits)
        step = _OpenStep(index=len(self.steps), events=self._preamble)
        self._preamble = []
        step.prepare_inputs = summarize_all({k: v for k, v in fed.items() if v is not None})
        step.live_cache = fed.get("past_key_values")
        if self.start_ids is None and isinstance(ids, torch.Tensor):
            self.start_ids = ids[0].tolist()
        self.steps.append(step)

    def _forward_ends_step(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        step = self.current
        if step is None:
            return
        cache = getattr(output, "past_key_values", None)
        if cache is not None:  # the first call creates the cache inside the model
            step.live_cache = cache
        logits = getattr(output, "logits", None)  # [batch, seq, vocab]
        self._last_logits = logits[:, -1, :].detach() if isinstance(logits, torch.Tensor) else None

    def finish_loop(self, sequence: torch.Tensor) -> None:
        """Close the last step of a hand-written loop with the last id of the sequence it returned."""
        if self.current is not None and self.current.chosen_id is None:
            self.close_step(sequence, self._last_logits)

    # -- hooks ----------------------------------------------------------------------------

    def _hook(self, module: nn.Module, name: str, on_post=None, last: nn.Module | None = None) -> None:
        """Record each call of `module` as an event `name`; with `last`, the event spans from the call
        of `module` to the return of `last` (BART's MLP: fc1 .. fc2)."""
        path = self._module_names.get(id(module), type(module).__name__) or type(module).__name__
        if last is not None and last is not module:
            path = f"{path} .. {self._module_names.get(id(last), type(last).__name__)}"
        last = module if last is None else last
        key = id(module)

        cache_kind = "cross" if names.attention_kind(name) == "cross" else "self"

        def pre(mod, args, kwargs):
            event = _OpenEvent(name, path, inputs=self._call_inputs(cache_kind, mod, args, kwargs))
            target = self.current.events if self._in_step() else self._preamble
            target.append(event)
            self._open_calls.setdefault(key, []).append(event)

        def post(mod, args, kwargs, output):
            calls = self._open_calls.get(key)
            if not calls:
                return
            event = calls.pop()
            if output is None:
                event.error = "raised"
                self._failed_at = self._failed_at or name
                return
            event.outputs = self._outputs(output)
            if name in self.full_outputs and isinstance(output, torch.Tensor):
                self._capture(event, "output", output)
            if on_post is not None:
                on_post(event, output)

        def first_raised(mod, args, kwargs, output):
            if output is None:  # the span's first module raised: `last` will never close the event
                post(mod, args, kwargs, None)

        self._handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
        if last is not module:
            self._handles.append(
                module.register_forward_hook(first_raised, with_kwargs=True, always_call=True)
            )
        self._handles.append(last.register_forward_hook(post, with_kwargs=True, always_call=True))

    def _in_step(self) -> bool:
        # Events between a step's token choice and the next prepare_inputs call (none in generate()
        # today) would belong to the next step; keep them for it.
        return self.current is not None and self.current.chosen_id is None

    def _call_inputs(self, cache_kind: str, module: nn.Module, args: tuple, kwargs: dict) -> dict[str, Value]:
        inputs: dict[str, Value] = {}
        for i, arg in enumerate(args):
            is_hidden = i == 0 and isinstance(arg, torch.Tensor) and arg.dim() == 3
            inputs["hidden_states" if is_hidden else f"arg{i}"] = summarize(arg)
        for key, value in kwargs.items():
            if value is None:
                continue
            inputs[key] = self._summarize_shared(value)
        cache = kwargs.get("past_key_values")
        layer_idx = getattr(module, "layer_idx", None)
        if cache is not None and layer_idx is not None:
            # The cache is shared by all layers and updated as they run: read this layer's own length.
            kept, seen = self._layer_cache_lens(cache, cache_kind, layer_idx)
            inputs[positions.KEPT_BEFORE] = str(kept)
            if seen != kept:  # a sliding-window layer: it keeps fewer positions than it has seen
                inputs[positions.SEEN_BEFORE] = str(seen)
        return inputs

    def _summarize_shared(self, value: Any) -> Value:
        # Every layer of a step gets the same mask, position ids, rotary embeddings and cache
        # objects: describe each object once per step. The memo holds the object, so its id can't
        # be reused by another one before the memo is cleared when the step ends.
        hit = self._shared.get(id(value))
        if hit is not None and hit[0] is value:
            return hit[1]
        record = summarize(value)
        self._shared[id(value)] = (value, record)
        return record

    @staticmethod
    def _layer_cache_lens(cache: Any, kind: str, layer_idx: int) -> tuple[int, int]:
        """(positions kept, positions seen) by one layer's cache of `kind`."""
        part = cache
        if hasattr(cache, "self_attention_cache"):  # EncoderDecoderCache
            part = cache.cross_attention_cache if kind == "cross" else cache.self_attention_cache
        layers = getattr(part, "layers", [])
        if layer_idx >= len(layers):
            return 0, 0
        return positions.layer_lengths(layers[layer_idx])

    @staticmethod
    def _outputs(output: Any) -> dict[str, Value]:
        if isinstance(output, torch.Tensor):
            return {"output": tensor_info(output)}
        if isinstance(output, dict):  # ModelOutput
            return {k: summarize(v) for k, v in output.items() if v is not None}
        if isinstance(output, tuple):
            return {f"output[{i}]": summarize(v) for i, v in enumerate(output) if v is not None}
        return {"output": describe(output)}

    def _capture(self, event: _OpenEvent, key: str, tensor: torch.Tensor) -> None:
        nbytes = tensor.numel() * 4  # stored as float32
        step = self.current.index if self.current is not None else 0
        what = f"step {step}, {event.name} {key} {list(tensor.shape)}"
        if self.budget.take(nbytes, what):
            event.tensors[key] = _float_copy(tensor)
        else:
            event.notes.append(f"{key} not captured: the trace's byte budget is spent")

    def _on_attention(self, event: _OpenEvent, output: Any) -> None:
        weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if weights is None:
            if self.capture_attention:
                event.notes.append("no attention weights: this attention implementation returns none")
            return
        event.outputs["attn_weights"] = tensor_info(weights)
        self._capture(event, "attention", weights)  # [batch, heads, q_len, k_len]

    def _on_block(self, event: _OpenEvent, output: Any) -> None:
        hidden = output[0] if isinstance(output, tuple) else output  # [batch, seq, hidden]
        if isinstance(hidden, torch.Tensor) and hidden.dim() == 3:
            self._capture(event, "hidden_last", hidden[:, -1, :])  # [batch, hidden]

    def _on_forward(self, event: _OpenEvent, output: Any) -> None:
        logits = getattr(output, "logits", None)  # [batch, seq, vocab]
        if isinstance(logits, torch.Tensor) and logits.dim() == 3:
            self._capture(event, "logits_last", logits[:, -1, :])  # [batch, vocab]
