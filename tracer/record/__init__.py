"""The recording core: hooks on a model, events in call order, and a step rule, for one traced run.

    with Recorder(model, GenerateSteps()) as rec:       # hooks installed, the trace lock held
        model.generate(..., stopping_criteria=[rec.rule.token_choice()])
    rec.frozen_steps()                                  # hooks removed, whatever happened inside

Three parts, each in one module:
- hooks.py: where the hook points are in a model (`detect_layout`), installing and removing hooks
  and wrapped methods, the eager-attention switch, the lock;
- events.py: live values turned into records, events opened and closed in call order, the byte
  budget and what it left out;
- steps.py: where a step begins and ends (`GenerateSteps`, `LoopSteps`, `SinglePass`).

The Recorder joins them: it puts a hook point on the model, the encoder, every decoder block,
attention module and MLP and lm_head (a watcher around each one's forward, whose after-call
function sees a call that raises too), keeps the few arrays each point is for, and in `__exit__`
takes everything back.
"""

from __future__ import annotations

import gc
from typing import Any

import torch
from torch import nn

from tracer import names
from tracer.errors import TracingNotSupported
from tracer.record.events import (
    DEFAULT_BUDGET_BYTES,
    SMALL_INT_NUMEL,
    TOP_K,
    EventLog,
    OpenEvent,
    cache_layers,
    describe,
    summarize,
    summarize_all,
    tensor_info,
)
from tracer.record.hooks import TRACE_LOCK, Hooks, ModelLayout, detect_layout
from tracer.record.steps import BeamSteps, GenerateSteps, LoopSteps, SinglePass, StepRule

__all__ = [
    "DEFAULT_BUDGET_BYTES",
    "SMALL_INT_NUMEL",
    "TOP_K",
    "TRACE_LOCK",
    "BeamSteps",
    "GenerateSteps",
    "LoopSteps",
    "ModelLayout",
    "Recorder",
    "SinglePass",
    "StepRule",
    "TracingNotSupported",
    "cache_layers",
    "describe",
    "detect_layout",
    "summarize",
    "summarize_all",
    "tensor_info",
]


class Recorder:
    """Context manager that records one run of `model`, its steps marked by `rule`."""

    def __init__(
        self,
        model: nn.Module,
        rule: StepRule,
        *,
        capture_attention: bool = True,
        budget_bytes: int = DEFAULT_BUDGET_BYTES,
        token_text=lambda token_id: str(token_id),
        full_outputs: tuple[str, ...] = (),
    ):
        self.model = model
        self.rule = rule
        self.layout = detect_layout(model)
        self.capture_attention = capture_attention
        self.token_text = token_text
        self.log = EventLog(budget_bytes, full_outputs)
        self.hooks = Hooks(model)

    # -- what a run's orchestrator reads ------------------------------------------------------

    @property
    def budget(self):
        return self.log.budget

    @property
    def error(self):
        return self.log.error

    def fail(self, exc: BaseException) -> None:
        self.log.fail(exc)

    def frozen_steps(self):
        return self.log.frozen_steps()

    def loose_events(self):
        return self.log.loose_events()

    def add_event(self, *args, **kwargs) -> None:
        self.log.add(*args, **kwargs)

    # -- install and remove ---------------------------------------------------------------

    def __enter__(self) -> Recorder:
        TRACE_LOCK.acquire()
        try:
            self._install()
        except BaseException:
            self._uninstall()
            TRACE_LOCK.release()
            raise
        # A run records thousands of small objects (events, their dicts, shapes), none of them in
        # reference cycles; Python's cycle collector would walk the young ones again and again while
        # the model runs (about 1 ms per step of a 6-layer model, benchmarks/overhead.py). Paused
        # for the run, process-wide: another thread's garbage waits for the run's end, a few seconds.
        self._collector_was_on = gc.isenabled()
        gc.disable()
        return self

    def __exit__(self, *exc_info) -> None:
        try:
            if self._collector_was_on:
                gc.enable()
            self._uninstall()
            self.log.finish()  # the calls of a step that failed described, the small captures copied
            self.log.read_choices(self.token_text)
        finally:
            TRACE_LOCK.release()

    def _install(self) -> None:
        model, layout = self.model, self.layout
        if self.capture_attention:
            self.hooks.use_eager_attention()
        self.rule.install(self)  # first: a rule's own hooks run before the events of the same call
        self._watch(model, names.FORWARD, self._on_forward)
        if layout.encoder is not None:
            self._watch(layout.encoder, names.ENCODER)
            if layout.encoder_embed is not None:
                self._watch(layout.encoder_embed, names.ENCODER_EMBED)
            for i, attn in enumerate(layout.encoder_self_attn):
                self._watch(attn, names.encoder_self_attn(i), self._on_attention)
        if layout.decoder_embed is not None:
            self._watch(layout.decoder_embed, names.DECODER_EMBED)
        for i, block in enumerate(layout.decoder_layers):
            self._watch(block, names.decoder_layer(i), self._on_block)
            self._watch(layout.decoder_self_attn[i], names.decoder_self_attn(i), self._on_attention)
            if layout.decoder_cross_attn:
                self._watch(layout.decoder_cross_attn[i], names.decoder_cross_attn(i), self._on_attention)
            if layout.decoder_mlps:
                first, last = layout.decoder_mlps[i]
                self._watch(first, names.decoder_mlp(i), last=last)
        self._watch(layout.lm_head, names.LM_HEAD)

    def _uninstall(self) -> None:
        self.hooks.remove()

    def _watch(self, module: nn.Module, name: str, on_return=None, last: nn.Module | None = None) -> None:
        """Record each call of `module` as an event `name`; with `last`, the event spans from the call
        of `module` to the return of `last` (BART's MLP: fc1 .. fc2)."""
        path = self.hooks.module_path(module)
        layer_idx = getattr(module, "layer_idx", None)  # an attention module's index into the cache
        if last is None or last is module:
            self.hooks.on_call(module, *self.log.hook_point(name, path, on_return, layer_idx))
            return
        pre, post = self.log.hook_point(name, f"{path} .. {self.hooks.module_path(last)}", on_return)

        def first_raised(mod, args, kwargs, output) -> None:
            if output is None:  # the span's first module raised: `last` will never close the event
                post(mod, args, kwargs, None)

        self.hooks.on_call(module, pre, first_raised)
        self.hooks.on_call(last, None, post)

    # -- what each hook point keeps beyond shapes -------------------------------------------

    def _on_attention(self, event: OpenEvent, output: Any) -> None:
        weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if weights is None:
            if self.capture_attention:
                event.notes.append("no attention weights: this attention implementation returns none")
            return
        event.outputs["attn_weights"] = tensor_info(weights)  # the same record as output[1]
        self.log.capture(event, "attention", weights)  # [batch, heads, q_len, k_len]

    def _on_block(self, event: OpenEvent, output: Any) -> None:
        hidden = output[0] if isinstance(output, tuple) else output  # [batch, seq, hidden]
        if isinstance(hidden, torch.Tensor) and hidden.dim() == 3:
            self.log.capture(event, "hidden_last", hidden, last_position=True)  # [batch, hidden]

    def _on_forward(self, event: OpenEvent, output: Any) -> None:
        logits = getattr(output, "logits", None)  # [batch, seq, vocab]
        if isinstance(logits, torch.Tensor) and logits.dim() == 3:
            self.log.capture(event, "logits_last", logits, last_position=True)  # [batch, vocab]
