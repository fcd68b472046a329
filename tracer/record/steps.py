"""Step rules: where a step begins and ends, one rule per kind of run.

The Recorder's hooks record events; a step rule decides which step they belong to:

- `GenerateSteps`: `generate()`. Each call of `prepare_inputs_for_generation` begins a step, and
  the token choice ends it: a StoppingCriteria that generate() calls right after choosing, with
  the processed scores (after temperature, top-k, ...), exactly the distribution sampled from.
- `LoopSteps`: a hand-written decoding loop that calls the model itself. Each forward call
  begins a step; the token it chose is the last id the loop feeds next (or, for the last step,
  the last id of the sequence the loop returns), drawn from the raw logits.
- `SinglePass`: one forward pass with no steps (the training trace): every event is loose.

A new kind of run (beams, say) is a new rule here, not flags inside the others.
"""

from __future__ import annotations

import functools
import inspect
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from transformers import StoppingCriteria

from tracer import names
from tracer.record.events import OpenEvent, summarize_all

if TYPE_CHECKING:
    from tracer.record import Recorder


class StepRule:
    """Where steps begin and end. `install` puts the rule's own watchers on the model."""

    # How the token-choice event names what chose the token.
    choice_module = ""

    def install(self, rec: Recorder) -> None:
        self.rec = rec

    def close_current(self, chosen_ids: torch.Tensor, scores: torch.Tensor | None) -> None:
        """End the open step with the tokens chosen ([batch]) and the scores they came from."""
        step = self.rec.log.current
        if step is not None and not step.closed:
            self.rec.log.close_step(step, chosen_ids, scores, self.rec.token_text, self.choice_module)


class GenerateSteps(StepRule):
    """generate(): prepare_inputs_for_generation begins a step, the token choice ends it."""

    choice_module = "generate (token choice)"

    def install(self, rec: Recorder) -> None:
        super().install(rec)
        rec.hooks.wrap_method("prepare_inputs_for_generation", self._wrap_prepare)

    def token_choice(self) -> StoppingCriteria:
        """The criterion to hand generate(): it sees each chosen token, and never stops the run."""
        return _TokenChoice(self)

    def _wrap_prepare(self, original):
        parameters = list(inspect.signature(original).parameters)
        log = self.rec.log

        # functools.wraps keeps the signature: generate() reads it to decide which kwargs it accepts.
        @functools.wraps(original)
        def prepare_inputs_for_generation(*args, **kwargs):
            called_with = summarize_all(dict(zip(parameters, args, strict=False)) | kwargs)
            step = log.open_step(args[0] if args else None, prepare_inputs_args=called_with)
            event = log.append(OpenEvent(names.PREPARE_INPUTS, "prepare_inputs_for_generation", called_with))
            try:
                model_inputs = original(*args, **kwargs)
            except BaseException:
                event.error = "raised"
                log.failed_at = log.failed_at or names.PREPARE_INPUTS
                raise
            event.outputs = step.prepare_inputs = summarize_all(model_inputs)
            step.live_cache = model_inputs.get("past_key_values")
            return model_inputs

        return prepare_inputs_for_generation


class _TokenChoice(StoppingCriteria):
    """generate() calls stopping criteria right after the token is chosen; this one closes the step.

    With `output_scores=True` it gets the processed scores (after the logits processors and
    warpers). It never stops generation itself.
    """

    def __init__(self, rule: GenerateSteps):
        self.rule = rule

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        self.rule.close_current(input_ids[:, -1], scores[-1] if scores else None)
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


class LoopSteps(StepRule):
    """A hand-written loop: each forward call begins a step; what the loop feeds next ends the last one.

    No prepare_inputs_for_generation call and no stopping criterion mark the steps, so the
    token a step chose is read from the next call's input (its last fed id), or for the last step
    from the sequence the loop returns (`finish`), and its distribution is the raw logits.
    """

    choice_module = "hand-written loop (next token fed)"

    def install(self, rec: Recorder) -> None:
        super().install(rec)
        self._last_logits: torch.Tensor | None = None  # [batch, vocab] of the newest position
        # Installed before the hook points, so the step is open before any event of the call.
        rec.hooks.on_call(rec.model, self._forward_starts, self._forward_ends)

    def _forward_starts(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        fed = dict(kwargs)
        if args:
            fed["input_ids"] = args[0]
        ids = fed.get("input_ids", fed.get("decoder_input_ids"))
        if isinstance(ids, torch.Tensor):
            self.close_current(ids[:, -1], self._last_logits)
        step = self.rec.log.open_step(
            ids, prepare_inputs=summarize_all({k: v for k, v in fed.items() if v is not None})
        )
        step.live_cache = fed.get("past_key_values")

    def _forward_ends(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        step = self.rec.log.current
        if step is None or output is None:
            return
        cache = getattr(output, "past_key_values", None)
        if cache is not None:  # the first call creates the cache inside the model
            step.live_cache = cache
        logits = getattr(output, "logits", None)  # [batch, seq, vocab]
        self._last_logits = logits[:, -1, :].detach() if isinstance(logits, torch.Tensor) else None

    def finish(self, sequence: torch.Tensor) -> None:
        """Close the last step with the last id of the sequence the loop returned ([batch, total])."""
        self.close_current(sequence[:, -1], self._last_logits)


class SinglePass(StepRule):
    """One forward pass (the training trace): no steps, every event in `Recorder.loose_events()`."""
