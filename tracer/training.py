"""Trace what a model sees when it learns: one teacher-forced pass with labels, and one Trainer step.

`trace_training_step(model, tok, source, target)` runs the model's own forward pass with `labels`
under the Recorder (the same hook-point names as generation) and returns a `TrainingTrace`:

- BART: labels -> `shift_tokens_right` -> decoder_input_ids (the real call inside forward is
  watched), the encoder, decoder self-attention [heads, tgt, tgt], cross-attention
  [heads, tgt, src], lm_head [1, tgt, vocab] plus `final_logits_bias`, the cross-entropy of every
  target position (-100 ignored) and the loss.
- Llama: labels are the input ids with the prompt set to -100; the loss shifts them inside
  (logits at t score the token at t + 1), so the per-token loss is of that shifted view.

`trace_trainer_step(model, tok, pairs)` runs one real `transformers.Trainer` step on a copy of the
model and records, through a TrainerCallback and hooks (nothing of the loop re-implemented), the
batch, forward, loss, backward, gradient clipping, optimizer.step, scheduler.step, zero_grad and
the logged values, in the order the Trainer ran them.

Records are frozen dataclasses with read-only NumPy arrays, never live tensors.
"""

from __future__ import annotations

import copy
import inspect
import math
import random
import sys
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from tracer import names
from tracer.errors import StepwiseInputError
from tracer.generate import config_summary, model_name_of, token_texter
from tracer.i18n import N_, templated
from tracer.record import DEFAULT_BUDGET_BYTES, Recorder, SinglePass, summarize_all, tensor_info
from tracer.records import EventSequence, ModelRun, SavedRecord, read_only
from tracer.trace import CaptureSummary, Event

IGNORE_INDEX = -100  # labels with this value are left out of the loss (PyTorch's and transformers' default)

# What a Trainer step is made of, in the order transformers 5.x's Trainer runs it.
TRAINER_EVENT_ORDER = (
    "batch",
    "forward",
    "loss",
    "backward",
    "clip_grad_norm",
    "optimizer.step",
    "scheduler.step",
    "zero_grad",
    "log",
)


# ---------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True, eq=False)
class TrainingTrace(EventSequence, ModelRun, SavedRecord):
    """One teacher-forced forward pass with labels: every target position computed at once.

    Positions are the decoder's: BART's target positions, or every token of a Llama's text.
    `scored_labels[t]` is the token position t is scored against (IGNORE_INDEX where none).
    """

    record_kind = "training-trace"

    arch: str  # "decoder-only" | "encoder-decoder"
    model_name: str
    model_class: str
    source_text: str
    target_text: str
    source_ids: list[int]  # BART: the encoder's input; Llama: the prompt
    target_ids: list[int]  # the tokens to learn: BART's tokenized target, a Llama's answer
    input_ids: list[int]  # what forward got as input_ids (BART: the source; Llama: prompt + answer)
    labels: list[int]  # what forward got as labels, IGNORE_INDEX where ignored
    decoder_input_ids: list[int] | None  # BART: shift_tokens_right(labels); None for a Llama
    scored_labels: list[int]  # BART: labels; Llama: labels shifted left by one inside the loss
    answer_start: int | None  # Llama: index of the first answer token in input_ids (None: no prompt mask)
    events: list[Event]  # in call order, with the hook-point names of tracer.names
    logits_shape: tuple[int, ...]  # [1, positions, vocab]
    per_token_loss: np.ndarray  # [positions] float32 cross-entropy, 0 where ignored
    ignored: np.ndarray  # [positions] bool: position left out of the loss
    predicted_ids: list[int]  # [positions] argmax of the logits
    label_probs: np.ndarray  # [positions] float32 probability of the scored label, nan where ignored
    loss: float  # model(...).loss
    final_logits_bias: np.ndarray | None  # BART: [vocab], added to lm_head's output; None for a Llama
    settings: dict[str, Any]  # pad_token_id, decoder_start_token_id, pad_to
    config: dict[str, Any]
    token_texts: dict[int, str]
    capture: CaptureSummary

    @property
    def decoder_ids(self) -> list[int]:
        """The ids the decoder was fed: BART's decoder_input_ids, a Llama's input_ids."""
        return self.decoder_input_ids if self.decoder_input_ids is not None else self.input_ids

    @property
    def num_positions(self) -> int:
        return len(self.scored_labels)

    @property
    def mean_token_loss(self) -> float:
        """Mean cross-entropy over the scored positions: what the model's loss is."""
        return float(self.per_token_loss[~self.ignored].astype(np.float64).mean())

    @property
    def lm_head_output(self) -> np.ndarray | None:
        """lm_head's output [positions, vocab], before BART's final_logits_bias, if captured."""
        event = self.event(names.LM_HEAD)
        if event is None or "output" not in event.tensors:
            return None
        return event.tensors["output"][0]

    def _where(self) -> str:
        return "The training pass"


@dataclass(frozen=True)
class TrainerEvent:
    """One thing the Trainer did, with the values seen there.

    `values` holds plain Python values (numbers, strings, lists, dicts of them); `seen_at` names
    the callback or hook that observed it.
    """

    name: str
    values: dict[str, Any]
    seen_at: str


@dataclass(frozen=True, eq=False)
class TrainerStepTrace(SavedRecord):
    """One real `Trainer.train()` step (max_steps=1), as the events it went through."""

    record_kind = "trainer-step"

    arch: str
    model_name: str
    model_class: str
    pairs: list[tuple[str, str | None]]  # the examples of the batch
    events: list[TrainerEvent]  # in the order the Trainer ran them
    settings: dict[str, Any]  # the TrainingArguments that matter here
    log_history: list[dict[str, Any]]  # trainer.state.log_history

    def event(self, name: str) -> TrainerEvent:
        found = next((e for e in self.events if e.name == name), None)
        if found is None:
            raise KeyError(f"No {name!r} event in this Trainer step.")
        return found

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.events]

    @property
    def loss(self) -> float:
        """The loss the model's forward returned in this step."""
        return float(self.event("loss").values["loss"])

    @property
    def logged_loss(self) -> float:
        """The loss the Trainer logged (on_log) for this step."""
        return float(self.event("log").values["loss"])


# ---------------------------------------------------------------------------------------------
# Turning text into ids and labels


@dataclass(frozen=True)
class _Example:
    """One training example as model inputs (lists of ints, no batch dimension)."""

    source_ids: list[int]
    target_ids: list[int]
    input_ids: list[int]
    labels: list[int]
    attention_mask: list[int]
    answer_start: int | None


def _check_has_loss(model) -> None:
    forward = getattr(model, "forward", None)
    parameters = inspect.signature(forward).parameters if forward is not None else {}
    if "labels" not in parameters:
        name = type(model).__name__
        raise StepwiseInputError(
            f"{name} has no loss: its forward takes no labels. Trace a model with a language-modelling "
            "head, e.g. LlamaForCausalLM or BartForConditionalGeneration (models.load('tiny-llama'))."
        )


def _encode_pair(model, tok, source: str, target: str | None, pad_to: int | None = None) -> _Example:
    """Ids and labels for one (source, target) pair, checked against the model's limits."""
    if tok is None:
        raise StepwiseInputError("Tracing a training step needs the model's tokenizer: pass tok.")
    if not isinstance(source, str) or not source.strip():
        empty = N_("The source is empty: type a few words for the model to read.")
        raise templated(StepwiseInputError, empty)
    encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
    if target is not None and not target.strip():
        raise templated(
            StepwiseInputError, N_("The target is empty: type the words the model should learn to produce.")
        )
    if target is None and encoder_decoder:
        raise StepwiseInputError(
            "BART learns to turn a source into a target: give a target too (the text the decoder learns)."
        )

    source_ids = list(tok(source)["input_ids"])
    max_positions = getattr(model.config, "max_position_embeddings", None) or 10**9
    name = type(model).__name__

    if encoder_decoder:
        # The target is tokenized like a source (<s> words </s>): that is BART's label convention.
        target_ids = list(tok(text_target=target)["input_ids"])
        if len(source_ids) > max_positions:
            raise templated(
                StepwiseInputError,
                N_(
                    "The source is {length} tokens long, but {name} has only {positions} positions: "
                    "shorten it to at most {positions} tokens."
                ),
                length=len(source_ids),
                name=name,
                positions=max_positions,
            )
        labels = list(target_ids)
        answer_start = None
        input_ids = source_ids
        attention_mask = [1] * len(source_ids)
    else:
        # The prompt, then the answer; the prompt's positions are not learned (-100).
        target_ids = [] if target is None else list(tok(target, add_special_tokens=False)["input_ids"])
        input_ids = source_ids + target_ids
        if target is None:
            labels, answer_start = list(input_ids), None
        else:
            labels, answer_start = [IGNORE_INDEX] * len(source_ids) + target_ids, len(source_ids)
        attention_mask = [1] * len(input_ids)

    length = len(labels)
    if length > max_positions:
        too_long = (
            N_(
                "The target is {length} tokens long, but {name} has only {positions} positions: "
                "shorten it to at most {positions} tokens."
            )
            if encoder_decoder
            else N_(
                "The prompt plus answer is {length} tokens long, but {name} has only {positions} "
                "positions: shorten it to at most {positions} tokens."
            )
        )
        raise templated(StepwiseInputError, too_long, length=length, name=name, positions=max_positions)
    if pad_to is not None and pad_to > length:
        if pad_to > max_positions:
            raise templated(
                StepwiseInputError,
                N_(
                    "Padding to {count} tokens needs more than the {positions} positions {name} has: "
                    "pad to at most {positions}."
                ),
                count=pad_to,
                positions=max_positions,
                name=name,
            )
        # What a batch collator does to a shorter example: pad, and leave the padding out of the loss.
        extra = pad_to - length
        labels = labels + [IGNORE_INDEX] * extra
        if not encoder_decoder:
            pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
            input_ids = input_ids + [pad_id] * extra
            attention_mask = attention_mask + [0] * extra
    if encoder_decoder and all(label == IGNORE_INDEX for label in labels):
        raise StepwiseInputError("Every label is -100, so there is nothing to learn: give a target.")
    return _Example(source_ids, target_ids, input_ids, labels, attention_mask, answer_start)


def _shift_function(model):
    """The module-level `shift_tokens_right` that the model's forward calls, and its module; or None."""
    for cls in type(model).__mro__:
        module = sys.modules.get(cls.__module__)
        if module is not None and callable(getattr(module, "shift_tokens_right", None)):
            return module
    return None


# ---------------------------------------------------------------------------------------------
# One teacher-forced pass


def trace_training_step(
    model,
    tok,
    source: str,
    target: str | None = None,
    *,
    pad_to: int | None = None,
    capture_attention: bool = True,
    budget_bytes: int = DEFAULT_BUDGET_BYTES,
    model_name: str | None = None,
) -> TrainingTrace:
    """Trace one teacher-forced forward pass with labels, and the loss, as a `TrainingTrace`.

    BART: `source` is the encoder's input, `target` the text the decoder learns. Llama: `source`
    is the prompt and `target` the answer (prompt positions get -100); with no target the whole
    source is learned. `pad_to` pads the labels with -100 (and a Llama's input with pad tokens)
    to that many positions, as a batch collator does to a shorter example.

    The model runs in eval mode (no dropout) and without gradients, so the loss is exactly
    `model(...).loss` for these inputs; the model is left as it was.
    """
    _check_has_loss(model)
    example = _encode_pair(model, tok, source, target, pad_to)
    encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
    config = model.config

    input_ids = torch.tensor([example.input_ids])  # [1, src] (BART) or [1, seq] (Llama)
    labels = torch.tensor([example.labels])  # [1, tgt] or [1, seq]
    kwargs: dict[str, Any] = {
        "input_ids": input_ids,
        "attention_mask": torch.tensor([example.attention_mask]),
        "labels": labels,
        "use_cache": False,
    }

    token_text = token_texter(tok)
    was_training = model.training
    shift_module = _shift_function(model) if encoder_decoder else None
    tracing_thread = threading.get_ident()

    with Recorder(
        model,
        SinglePass(),
        capture_attention=capture_attention,
        budget_bytes=budget_bytes,
        token_text=token_text,
        full_outputs=(names.LM_HEAD,),
    ) as rec:
        # Read under the Recorder's lock: another trace may have it wrapped until it exits.
        original_shift = getattr(shift_module, "shift_tokens_right", None)

        def shift_tokens_right(input_ids, pad_token_id, decoder_start_token_id):
            # The model's own call, inside forward: record what went in and what came out.
            shifted = original_shift(input_ids, pad_token_id, decoder_start_token_id)
            if threading.get_ident() == tracing_thread:
                rec.add_event(
                    names.SHIFT_TOKENS_RIGHT,
                    f"{shift_module.__name__}.shift_tokens_right",
                    inputs={
                        "labels": tensor_info(input_ids),
                        "pad_token_id": repr(pad_token_id),
                        "decoder_start_token_id": repr(decoder_start_token_id),
                    },
                    outputs={"decoder_input_ids": tensor_info(shifted)},
                    note="labels moved one place right, decoder_start_token_id first, -100 turned into pad",
                )
            return shifted

        try:
            model.eval()
            if encoder_decoder and shift_module is not None:
                shift_module.shift_tokens_right = shift_tokens_right
            elif encoder_decoder:
                # No module-level function to watch: ask the model for its decoder inputs.
                decoder_input_ids = model.prepare_decoder_input_ids_from_labels(labels=labels)
                rec.add_event(
                    names.SHIFT_TOKENS_RIGHT,
                    "prepare_decoder_input_ids_from_labels",
                    inputs={"labels": tensor_info(labels)},
                    outputs={"decoder_input_ids": tensor_info(decoder_input_ids)},
                )
                kwargs["decoder_input_ids"] = decoder_input_ids
            with torch.no_grad():
                output = model(**kwargs)
        finally:
            if shift_module is not None:
                shift_module.shift_tokens_right = original_shift
            model.train(was_training)

        if output.loss is None:
            raise StepwiseInputError(
                f"{type(model).__name__} returned no loss for these labels: trace a model with a "
                "language-modelling head (LlamaForCausalLM, BartForConditionalGeneration)."
            )
        logits = output.logits.float()  # [1, positions, vocab]
        if encoder_decoder:
            scored = labels[0]  # [tgt]: BART scores logits at t against labels at t
        else:
            # What ForCausalLMLoss does: pad with -100, drop the first, so logits at t score token t + 1.
            scored = nn.functional.pad(labels, (0, 1), value=IGNORE_INDEX)[0, 1:]  # [seq]
        per_token = nn.functional.cross_entropy(
            logits[0], scored, ignore_index=IGNORE_INDEX, reduction="none"
        )  # [positions], 0 where ignored
        ignored = scored == IGNORE_INDEX  # [positions]
        probs = torch.softmax(logits[0], dim=-1)  # [positions, vocab]
        label_probs = probs.gather(-1, scored.clamp(min=0)[:, None])[:, 0]  # [positions]
        label_probs = torch.where(ignored, torch.full_like(label_probs, float("nan")), label_probs)
        loss = float(output.loss)

        module = "CrossEntropyLoss in forward" if encoder_decoder else "model.loss_function (ForCausalLMLoss)"
        note = (
            f"mean of {int((~ignored).sum())} per-token cross-entropies; {int(ignored.sum())} positions "
            "ignored (-100)"
        )
        if not encoder_decoder:
            note += "; labels shifted left inside the loss: logits at t score the token at t + 1"
        rec.add_event(
            names.LOSS,
            module,
            inputs={"logits": tensor_info(output.logits), "labels": tensor_info(labels)}
            | ({} if encoder_decoder else {"shift_labels": tensor_info(scored[None, :])}),
            outputs={"loss": f"{loss:.6f}"},
            tensors={"per_token_loss": per_token[None, :]},  # [1, positions]
            note=note,
        )
    events = rec.loose_events()

    decoder_input_ids = None
    shift_event = next((e for e in events if e.name == names.SHIFT_TOKENS_RIGHT), None)
    if shift_event is not None:
        decoder_input_ids = list(shift_event.outputs["decoder_input_ids"].values)

    bias = getattr(model, "final_logits_bias", None)  # [1, vocab]
    final_logits_bias = (
        read_only(bias[0].detach().float().numpy()) if isinstance(bias, torch.Tensor) else None
    )

    seen = set(example.input_ids) | set(example.source_ids) | set(example.target_ids)
    seen |= set(decoder_input_ids or []) | set(logits[0].argmax(-1).tolist())
    seen |= {i for i in example.labels if i != IGNORE_INDEX}
    return TrainingTrace(
        arch=rec.layout.arch,
        model_name=model_name or model_name_of(model),
        model_class=type(model).__name__,
        source_text=source,
        target_text=target or "",
        source_ids=example.source_ids,
        target_ids=example.target_ids,
        input_ids=example.input_ids,
        labels=example.labels,
        decoder_input_ids=decoder_input_ids,
        scored_labels=[int(i) for i in scored.tolist()],
        answer_start=example.answer_start,
        events=events,
        logits_shape=tuple(output.logits.shape),
        per_token_loss=read_only(per_token.numpy().astype(np.float32)),
        ignored=read_only(ignored.numpy()),
        predicted_ids=[int(i) for i in logits[0].argmax(-1).tolist()],
        label_probs=read_only(label_probs.numpy().astype(np.float32)),
        loss=loss,
        final_logits_bias=final_logits_bias,
        settings={
            "pad_token_id": config.pad_token_id,
            "decoder_start_token_id": getattr(config, "decoder_start_token_id", None),
            "pad_to": pad_to,
            "capture_attention": capture_attention,
        },
        config=config_summary(config, rec.layout),
        token_texts={i: token_text(i) for i in sorted(seen)},
        capture=rec.budget.summary(),
    )


# ---------------------------------------------------------------------------------------------
# One Trainer step


def default_pairs(model) -> list[tuple[str, str]]:
    """A tiny batch that fits the random and tiny models' vocabulary."""
    if getattr(model.config, "is_encoder_decoder", False):
        return [("the cat sat on the mat .", "the cat sat ."), ("tom saw a big dog", "a big dog")]
    return [("the cat sat on the", "mat ."), ("one two three", "four five")]


class _StepWatcher:
    """The TrainerCallback's state and hooks: turns what the Trainer does into TrainerEvents."""

    def __init__(self, model: nn.Module, max_grad_norm: float):
        self.model = model
        self.max_grad_norm = max_grad_norm
        self.events: list[TrainerEvent] = []
        self.handles: list[Any] = []
        self.grad_sq: dict[str, float] = {}  # layer -> sum of squared gradients, as backward writes them
        self.before_step: dict[str, torch.Tensor] = {}  # parameters as they were before optimizer.step
        self.lr_in_step: float | None = None
        self.lr_before_scheduler: float | None = None
        self.params_with_grad = 0
        self.groups = {name: _param_group(name) for name, _ in model.named_parameters()}

    def add(self, name: str, seen_at: str, **values: Any) -> None:
        self.events.append(TrainerEvent(name, values, seen_at))

    # -- hooks on the model and its parameters -----------------------------------------------

    def install(self) -> None:
        self.handles.append(self.model.register_forward_pre_hook(self._on_forward_begin, with_kwargs=True))
        self.handles.append(
            self.model.register_forward_hook(self._on_forward_end, with_kwargs=True, always_call=True)
        )
        for name, param in self.model.named_parameters():
            if param.requires_grad:
                self.handles.append(param.register_post_accumulate_grad_hook(self._grad_hook(name)))

    def install_optimizer_hooks(self, optimizer) -> None:
        inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer wraps it
        self.handles.append(inner.register_step_pre_hook(self._on_optimizer_step_begin))
        self.handles.append(inner.register_step_post_hook(self._on_optimizer_step_end))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def _on_forward_begin(self, module, args, kwargs) -> None:
        # What the DataLoader's collator built (num_items_in_batch is the Trainer's, not the batch's).
        tensors = {
            k: v for k, v in kwargs.items() if isinstance(v, torch.Tensor) and k != "num_items_in_batch"
        }
        batch = summarize_all(tensors)
        self.add(
            "batch",
            "model forward pre-hook",
            **{key: {"shape": list(info.shape), "values": _values(info)} for key, info in batch.items()},
        )

    def _on_forward_end(self, module, args, kwargs, output) -> None:
        if output is None:
            return  # forward raised; the Trainer will re-raise it
        logits = getattr(output, "logits", None)
        self.add(
            "forward",
            "model forward hook",
            logits_shape=list(logits.shape) if logits is not None else None,
            training=bool(module.training),
            num_items_in_batch=_plain(kwargs.get("num_items_in_batch")),
        )
        loss = getattr(output, "loss", None)
        labels = kwargs.get("labels")
        self.add(
            "loss",
            "model forward hook",
            loss=float(loss.detach()) if loss is not None else float("nan"),
            scored_tokens=int((labels != IGNORE_INDEX).sum()) if labels is not None else None,
        )

    def _grad_hook(self, name: str):
        group = self.groups[name]

        def hook(param: torch.Tensor) -> None:
            # Runs once backward has accumulated this parameter's gradient, before any clipping.
            self.grad_sq[group] = self.grad_sq.get(group, 0.0) + float(
                param.grad.detach().float().pow(2).sum()
            )

        return hook

    def _on_optimizer_step_begin(self, optimizer, args, kwargs) -> None:
        self.before_step = {name: p.detach().clone() for name, p in self.model.named_parameters()}
        self.lr_in_step = float(optimizer.param_groups[0]["lr"])

    def _on_optimizer_step_end(self, optimizer, args, kwargs) -> None:
        moved_sq: dict[str, float] = {}
        size_sq: dict[str, float] = {}
        for name, param in self.model.named_parameters():
            old = self.before_step[name]
            group = self.groups[name]
            moved_sq[group] = moved_sq.get(group, 0.0) + float((param.detach() - old).float().pow(2).sum())
            size_sq[group] = size_sq.get(group, 0.0) + float(old.float().pow(2).sum())
        self.before_step = {}
        self.add(
            "optimizer.step",
            "optimizer step hooks",
            optimizer=type(optimizer).__name__,
            lr=self.lr_in_step,
            update_norm={g: math.sqrt(v) for g, v in moved_sq.items()},
            relative_update={
                g: math.sqrt(v) / max(math.sqrt(size_sq[g]), 1e-12) for g, v in moved_sq.items()
            },
        )

    # -- the callback's moments --------------------------------------------------------------

    def pre_optimizer_step(self) -> None:
        # Backward has run and the Trainer has just clipped: the hooks saw the gradients before.
        norm_before = math.sqrt(sum(self.grad_sq.values()))
        self.add(
            "backward",
            "parameter post-accumulate-grad hooks",
            grad_norm={g: math.sqrt(v) for g, v in self.grad_sq.items()},
            total_norm=norm_before,
        )
        params = [p for p in self.model.parameters() if p.grad is not None]
        self.params_with_grad = len(params)
        norm_after = math.sqrt(sum(float(p.grad.detach().float().pow(2).sum()) for p in params))
        self.add(
            "clip_grad_norm",
            "on_pre_optimizer_step",
            norm_before=norm_before,
            norm_after=norm_after,
            max_grad_norm=self.max_grad_norm,
            clipped=bool(self.max_grad_norm > 0 and norm_before > self.max_grad_norm),
        )

    def optimizer_step(self, lr_scheduler) -> None:
        # After optimizer.step, before lr_scheduler.step: the rate this step used.
        self.lr_before_scheduler = _current_lr(lr_scheduler)

    def step_end(self, lr_scheduler) -> None:
        self.add(
            "scheduler.step",
            "on_step_end",
            scheduler=type(lr_scheduler).__name__,
            lr_before=self.lr_before_scheduler,
            lr_after=_current_lr(lr_scheduler),
        )
        left = sum(1 for p in self.model.parameters() if p.grad is not None and bool(p.grad.abs().sum() > 0))
        self.add(
            "zero_grad",
            "on_step_end",
            params_with_grad_before=self.params_with_grad,
            params_with_grad_after=left,
        )

    def log(self, logs: dict[str, Any]) -> None:
        if "loss" in logs and not any(e.name == "log" for e in self.events):
            self.add("log", "on_log", **{k: _plain(v) for k, v in logs.items()})


def _values(info) -> list | None:
    array = info.array()
    return None if array is None else array.tolist()


def _current_lr(lr_scheduler) -> float:
    return float(lr_scheduler.get_last_lr()[0])


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    return value


def _param_group(param_name: str) -> str:
    """The layer a parameter belongs to, named like the hook points: decoder.layers.3, lm_head, ..."""
    parts = param_name.split(".")
    if parts[0] == "model":
        parts = parts[1:]
    if "layers" in parts:
        at = parts.index("layers")
        stack = parts[at - 1] if at > 0 and parts[at - 1] in ("encoder", "decoder") else "decoder"
        return f"{stack}.layers.{parts[at + 1]}"
    return ".".join(parts[:-1]) or parts[0]  # the module holding it: embed_tokens, norm, lm_head, ...


def _fresh_copy(model) -> nn.Module:
    """A copy of the model to train, so the caller's model keeps its weights.

    Built from the config and the state dict rather than deep-copied, so that hooks another trace
    may have on the model are not copied along.
    """
    config = copy.deepcopy(model.config)
    config.use_cache = False  # training needs no cache; BART warns when labels meet use_cache
    with torch.random.fork_rng():
        clone = type(model)(config)
    clone.load_state_dict(model.state_dict())
    clone.generation_config = copy.deepcopy(model.generation_config)
    return clone


class _ListDataset(torch.utils.data.Dataset):
    def __init__(self, items: list[dict[str, list[int]]]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        return self.items[index]


def trace_trainer_step(
    model,
    tok,
    pairs: Sequence[tuple[str, str | None]] | None = None,
    *,
    learning_rate: float = 1e-3,
    max_grad_norm: float = 1.0,
    seed: int = 0,
    model_name: str | None = None,
) -> TrainerStepTrace:
    """Run one real `transformers.Trainer` step on a tiny batch and record what it did, in order.

    `pairs` are (source, target) examples as for `trace_training_step` (default: two that fit the
    model); they form one batch, padded by `DataCollatorForSeq2Seq` (labels with -100). A copy of
    the model is trained, so `model` keeps its weights. The schedule is linear with no warmup over
    the one step, so the learning rate visibly drops (to 0) when the scheduler steps.
    """
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainerCallback, TrainingArguments
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    _check_has_loss(model)
    pairs = list(pairs) if pairs is not None else default_pairs(model)
    if not pairs:
        raise StepwiseInputError("The batch is empty: give at least one (source, target) pair.")
    if len(pairs) > 8:
        raise StepwiseInputError(f"A tiny batch is at most 8 examples; got {len(pairs)}.")
    if not max_grad_norm > 0:
        raise StepwiseInputError(f"max_grad_norm must be above 0 to show clipping; got {max_grad_norm!r}.")
    examples = [_encode_pair(model, tok, source, target) for source, target in pairs]
    items = [
        {"input_ids": e.input_ids, "attention_mask": e.attention_mask, "labels": e.labels} for e in examples
    ]

    clone = _fresh_copy(model)
    watcher = _StepWatcher(clone, max_grad_norm)

    class StepwiseCallback(TrainerCallback):
        def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
            watcher.install_optimizer_hooks(optimizer)

        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            watcher.pre_optimizer_step()

        def on_optimizer_step(self, args, state, control, lr_scheduler=None, **kwargs):
            watcher.optimizer_step(lr_scheduler)

        def on_step_end(self, args, state, control, lr_scheduler=None, **kwargs):
            watcher.step_end(lr_scheduler)

        def on_log(self, args, state, control, logs=None, **kwargs):
            watcher.log(logs or {})

    python_state, numpy_state = random.getstate(), np.random.get_state()
    with tempfile.TemporaryDirectory(prefix="stepwise-trainer-") as output_dir, torch.random.fork_rng():
        args = TrainingArguments(
            output_dir=output_dir,
            max_steps=1,
            per_device_train_batch_size=len(items),
            gradient_accumulation_steps=1,
            learning_rate=learning_rate,
            lr_scheduler_type="linear",
            warmup_steps=0,
            max_grad_norm=max_grad_norm,
            logging_steps=1,
            report_to="none",
            save_strategy="no",
            use_cpu=True,
            seed=seed,
            disable_tqdm=True,
            dataloader_num_workers=0,
        )
        trainer = Trainer(
            model=clone,
            args=args,
            train_dataset=_ListDataset(items),
            data_collator=DataCollatorForSeq2Seq(tok, model=clone, label_pad_token_id=IGNORE_INDEX),
            callbacks=[StepwiseCallback()],
        )
        for noisy in (PrinterCallback, ProgressCallback):
            trainer.remove_callback(noisy)  # they print the logs; the trace holds them
        try:
            watcher.install()
            trainer.train()
        finally:
            watcher.remove()
            random.setstate(python_state)
            np.random.set_state(numpy_state)

    return TrainerStepTrace(
        arch="encoder-decoder" if getattr(model.config, "is_encoder_decoder", False) else "decoder-only",
        model_name=model_name or model_name_of(model),
        model_class=type(model).__name__,
        pairs=[(s, t) for s, t in pairs],
        events=watcher.events,
        settings={
            "max_steps": 1,
            "batch_size": len(items),
            "learning_rate": learning_rate,
            "lr_scheduler_type": "linear",
            "warmup_steps": 0,
            "max_grad_norm": max_grad_norm,
            "optimizer": str(getattr(args.optim, "value", args.optim)),  # a plain str, not the str enum
            "seed": seed,
        },
        log_history=[dict(entry) for entry in trainer.state.log_history],
    )


__all__ = [
    "IGNORE_INDEX",
    "TRAINER_EVENT_ORDER",
    "TrainerEvent",
    "TrainerStepTrace",
    "TrainingTrace",
    "default_pairs",
    "trace_trainer_step",
    "trace_training_step",
]
