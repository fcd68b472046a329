"""trace_generation(): run one real `model.generate()` under the Recorder and return a Trace.

The traced run is the real run: the same `generate()` call a user would make (greedy or seeded
sampling, cache on or off), with the recorder's hooks watching. Nothing of the decoding loop is
re-implemented here; this module only checks the input, sets up the call and packs the result.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from tracer.errors import StepwiseInputError, TracingNotSupported
from tracer.generation_settings import refuse_untraceable, resolve_settings, split_generation_kwargs
from tracer.i18n import N_, templated
from tracer.record import DEFAULT_BUDGET_BYTES, BeamSteps, GenerateSteps, Recorder, describe
from tracer.stopping import row_stop, run_stop
from tracer.trace import Batch, BeamResult, Trace

__all__ = ["StepwiseInputError", "TracingNotSupported", "trace_generation"]


def trace_generation(
    model,
    tok=None,
    prompt: str | Sequence[str] | None = None,
    *,
    input_ids: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    padding_side: str | None = None,
    max_new_tokens: int | None = None,
    use_cache: bool | None = None,
    do_sample: bool | None = None,
    seed: int | None = None,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    num_beams: int | None = None,
    feed_embeddings: bool = False,
    capture_attention: bool = True,
    budget_bytes: int = DEFAULT_BUDGET_BYTES,
    model_name: str | None = None,
    progress: Callable[[int], None] | None = None,
    **model_kwargs: Any,
) -> Trace:
    """Trace `model.generate()` on a prompt or a batch of prompts, step by step.

    Give `prompt` (a text or a list of texts, with `tok`) or `input_ids` ([batch, prompt_len] or
    [prompt_len], with its `attention_mask` when a batch is padded). A batch of texts is padded by
    the tokenizer on `padding_side` (default: left for a decoder-only model, the tokenizer's own
    side for an encoder-decoder one); every row is recorded and `trace.row(r)` is row r.
    Generation settings left as None come from the model's own `generation_config`, exactly as in
    `generate()`; the ones given (here or as extra keyword arguments such as `num_return_sequences`,
    `length_penalty`, `no_repeat_ngram_size=3`) override it field by field. `trace.settings`
    records every setting in force and `trace.settings["sources"]` where each came from. Beam
    search (`num_beams > 1`) records each step's beams and the cache reorder after it
    (`step.beams`) and what generate() returned (`trace.beam_result`). Settings Stepwise does not
    trace (group beam search, contrastive search, ...) raise TracingNotSupported before anything runs.

    `feed_embeddings=True` feeds the prompt as `inputs_embeds` (the model's own embeddings of
    its ids): step 0 then feeds `inputs_embeds [1, P, hidden]`, later steps `input_ids [1, 1]`.
    Other extra keyword arguments (e.g. `pixel_values`) go to `generate()` unchanged.
    `budget_bytes` caps the captured arrays (attention grows as T^3 with the cache off, and with
    the number of rows); past it, events keep shapes only and `trace.capture` says what was left out.

    `progress`, if given, is called with the number of finished steps after each token choice
    (the app's progress bar); it runs inside generate(), so it should be quick.

    A model that raises mid-generation gives a Trace whose `error` names the step, with every
    step before it complete and the failing step's events up to the failure.
    """
    encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
    fed = encode_prompt(tok, prompt, input_ids, attention_mask, padding_side, encoder_decoder)
    input_ids = fed.input_ids
    for unsupported in ("streamer", "stopping_criteria", "assistant_model"):
        if unsupported in model_kwargs:
            raise TracingNotSupported(f"Tracing with {unsupported}= is not supported yet.")
    generation_config = model_kwargs.pop("generation_config", None)
    overrides, model_kwargs = split_generation_kwargs(model_kwargs)
    named = dict(max_new_tokens=max_new_tokens, use_cache=use_cache, do_sample=do_sample)
    named |= dict(temperature=temperature, top_k=top_k, top_p=top_p, num_beams=num_beams)
    overrides |= {key: value for key, value in named.items() if value is not None}
    start_len = 1 if encoder_decoder else int(input_ids.shape[1])  # what the decoder starts from
    resolved = resolve_settings(model, overrides, input_len=start_len, generation_config=generation_config)
    refuse_untraceable(resolved)
    values = resolved.values
    max_new_tokens = values["max_new_tokens"]
    do_sample_now = bool(values.get("do_sample"))
    beams = int(values.get("num_beams") or 1)
    _check_settings(model, input_ids, max_new_tokens, do_sample_now, values.get("temperature"))
    if feed_embeddings or "inputs_embeds" in model_kwargs:
        given = model_kwargs.get("inputs_embeds")
        model_kwargs["inputs_embeds"] = _prompt_embeddings(model, input_ids, given)
    if values.get("do_sample") and seed is None:
        seed = secrets.randbelow(2**31)  # recorded, so a sampled trace can be replayed exactly

    # The caller's own settings as given (generate() merges them with the model's, field by field),
    # the length as resolved, and what the recorder needs: the stopping criterion below reads the
    # processed scores, which need return_dict_in_generate and output_scores.
    generate_kwargs: dict[str, Any] = {
        **overrides,
        "max_new_tokens": max_new_tokens,
        "return_dict_in_generate": True,
        "output_scores": True,
    }
    if generation_config is not None:
        generate_kwargs["generation_config"] = generation_config
    if fed.attention_mask is not None:
        generate_kwargs["attention_mask"] = fed.attention_mask

    token_text = token_texter(tok)
    steps = BeamSteps(beams) if beams > 1 else GenerateSteps()
    output = None
    with Recorder(
        model, steps, capture_attention=capture_attention, budget_bytes=budget_bytes, token_text=token_text
    ) as rec:
        criteria = [steps.token_choice()]
        if progress is not None:
            criteria.append(_Progress(progress))
        generate_kwargs["stopping_criteria"] = StoppingCriteriaList(criteria)
        try:
            if values.get("do_sample"):
                torch.manual_seed(seed)
            output = model.generate(input_ids=input_ids, **generate_kwargs, **model_kwargs)
            sequences = output.sequences.tolist()
        except Exception as exc:  # a model error: keep what was recorded, say where it failed
            rec.fail(exc)
            sequences = _sequences_so_far(rec, model, input_ids, encoder_decoder)
    settings = {key: _jsonable(value) for key, value in values.items()}
    settings |= {
        "seed": seed,
        "feed": "inputs_embeds" if "inputs_embeds" in model_kwargs else "input_ids",
        "capture_attention": capture_attention,
        "model_kwargs": {key: describe(value) for key, value in model_kwargs.items()},
        "sources": dict(resolved.sources),
    }
    if fed.batch_size > 1:
        settings["padding_side"] = fed.padding_side
    beam_result = steps.result(output) if beams > 1 else None
    if beams > 1:
        stop = steps.stop_reason(failed=rec.error is not None, max_new_tokens=max_new_tokens)
    else:
        stop = run_stop(
            sequences,
            start_len,
            resolved.eos_token_ids(),
            start_len + max_new_tokens,
            failed=rec.error is not None,
            max_new_tokens=max_new_tokens,
        )
    batch = None
    if fed.batch_size > 1:
        eos_ids = resolved.eos_token_ids()
        prompt_len = int(input_ids.shape[1])
        start = 1 if encoder_decoder else prompt_len
        mask = fed.attention_mask if fed.attention_mask is not None else torch.ones_like(input_ids)
        batch = Batch(
            prompt_texts=fed.texts,
            prompt_ids=input_ids.tolist(),
            attention_mask=mask.tolist(),
            sequence_ids=sequences,
            padding_side=fed.padding_side,
            pad_token_id=_int_or_none(values.get("pad_token_id")),
            stops=[row_stop(row[start:], eos_ids, stop) for row in sequences[: fed.batch_size]]
            if beams == 1
            else [],
        )
    return pack_trace(
        model,
        rec,
        model_name,
        fed.texts[0],
        input_ids[0].tolist(),
        sequences[0],
        settings,
        token_text,
        stop=stop,
        batch=batch,
        beam_result=beam_result,
    )


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    return None if value is None else int(value)


def _sequences_so_far(
    rec: Recorder, model, input_ids: torch.Tensor, encoder_decoder: bool
) -> list[list[int]]:
    """Each row's ids up to a failure: what the decoder started from and the tokens chosen before it."""
    start = rec.log.start_rows
    if start is None:  # generate() failed before the first step, so it never showed its start
        if encoder_decoder:
            first = model.generation_config.decoder_start_token_id
            start = [[] if first is None else [int(first)] for _ in range(len(input_ids))]
        else:
            start = input_ids.tolist()
    chosen = [s.row_ids() for s in rec.log.steps if s.closed]
    return [row + [ids[r] for ids in chosen if r < len(ids)] for r, row in enumerate(start)]


def _jsonable(value: Any) -> Any:
    """A setting as JSON-ready data (the trace file's metadata is JSON): objects become their text."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple) and all(isinstance(v, bool | int | float | str) for v in value):
        return list(value)
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return describe(value)


def _prompt_embeddings(model, input_ids: torch.Tensor, given: torch.Tensor | None) -> torch.Tensor:
    """The prompt as inputs_embeds [1, P, hidden]: the caller's, or the model's own embeddings of the ids."""
    if getattr(model.config, "is_encoder_decoder", False):
        raise templated(
            TracingNotSupported,
            N_(
                "Feeding the prompt as embeddings is traced for decoder-only models: in generate() an "
                "encoder-decoder model's inputs_embeds go to its encoder, and the decoder is fed ids from "
                "the first step. Feed the prompt as input_ids."
            ),
        )
    if given is None:
        with torch.no_grad():
            return model.get_input_embeddings()(input_ids)  # [1, P, hidden]
    if not isinstance(given, torch.Tensor) or given.dim() != 3 or given.shape[:2] != input_ids.shape:
        shape = list(given.shape) if isinstance(given, torch.Tensor) else type(given).__name__
        raise StepwiseInputError(
            f"inputs_embeds must be [1, prompt_len, hidden] beside the prompt's input_ids "
            f"{list(input_ids.shape)}; got {shape}. Give the ids of the same prompt too (they label "
            "its positions), or pass feed_embeddings=True to embed the ids with the model's own table."
        )
    return given


def pack_trace(
    model,
    rec: Recorder,
    model_name: str | None,
    prompt_text: str,
    prompt_ids: list[int],
    sequence_ids: list[int],
    settings: dict[str, Any],
    token_text,
    stop: dict[str, Any] | None = None,
    batch: Batch | None = None,
    beam_result: BeamResult | None = None,
) -> Trace:
    """The Trace of a finished (or failed) recording: its steps, texts of every id seen, the config."""
    steps = rec.frozen_steps()
    seen_ids = set(prompt_ids) | set(sequence_ids) | {t.token_id for s in steps for t in s.topk}
    seen_ids |= {t.token_id for s in steps for row in s.rows for t in row.topk}
    if batch is not None:
        seen_ids |= {i for row in batch.prompt_ids + batch.sequence_ids for i in row}
    if beam_result is not None:
        seen_ids |= {i for row in beam_result.sequences for i in row}
        seen_ids |= {i for s in steps if s.beams for row in s.beams.candidate_tokens for i in row}
    config = model.config
    return Trace(
        arch=rec.layout.arch,
        model_name=model_name or model_name_of(model),
        model_class=type(model).__name__,
        prompt_text=prompt_text,
        prompt_ids=prompt_ids,
        sequence_ids=sequence_ids,
        steps=steps,
        error=rec.error,
        settings=settings,
        config=config_summary(config, rec.layout, model),
        token_texts={i: token_text(i) for i in sorted(seen_ids)},
        capture=rec.budget.summary(),
        stop=stop or {},
        batch=batch,
        beam_result=beam_result,
    )


class _Progress(StoppingCriteria):
    """Reports each finished step to a callback; never stops generation itself."""

    def __init__(self, callback: Callable[[int], None]):
        self.callback = callback
        self.steps = 0

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        self.steps += 1
        self.callback(self.steps)
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


class Prompt(NamedTuple):
    """A prompt or a batch of them, as generate() is fed them."""

    input_ids: torch.Tensor  # [batch, prompt_len], pads included
    attention_mask: torch.Tensor | None  # [batch, prompt_len], 0 at a pad; None when all ones
    texts: list[str]
    padding_side: str  # "left" | "right": where the pads of a batch are

    @property
    def batch_size(self) -> int:
        return int(self.input_ids.shape[0])


def encode_prompt(
    tok,
    prompt: str | Sequence[str] | None,
    input_ids: torch.Tensor | None,
    attention_mask: torch.Tensor | None = None,
    padding_side: str | None = None,
    encoder_decoder: bool = False,
) -> Prompt:
    """The ids [batch, prompt_len] of a prompt (text with `tok`, or ids), or of a batch of prompts.

    A batch of texts is padded by the tokenizer on `padding_side`: by default on the left for a
    decoder-only model (it continues each row from its last real token) and on the tokenizer's own
    side for an encoder-decoder one. Ids of a batch come with their `attention_mask` (0 at a pad).
    """
    if padding_side not in (None, "left", "right"):
        raise StepwiseInputError(f'padding_side must be "left" or "right"; got {padding_side!r}.')
    if (prompt is None) == (input_ids is None):
        raise StepwiseInputError("Give either a prompt (text, with its tokenizer) or input_ids, not both.")
    if prompt is not None:
        if tok is None:
            raise StepwiseInputError(
                "A text prompt needs the model's tokenizer: pass tok, or pass input_ids."
            )
        texts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not texts or not all(isinstance(text, str) for text in texts):
            raise StepwiseInputError("The prompt must be a text, or a non-empty list of texts.")
        for i, text in enumerate(texts):
            if not text.strip():
                if len(texts) == 1:
                    empty = N_("The prompt is empty: type a few words for the model to continue.")
                    raise templated(StepwiseInputError, empty)
                raise templated(
                    StepwiseInputError,
                    N_("Prompt {number} of the batch is empty: type a few words for the model to continue."),
                    number=i + 1,
                )
        side = padding_side or ("left" if not encoder_decoder else getattr(tok, "padding_side", "right"))
        if len(texts) == 1:
            encoding = tok(texts[0], return_tensors="pt")
            return Prompt(encoding["input_ids"], encoding.get("attention_mask"), texts, side)
        if tok.pad_token_id is None:
            raise templated(
                StepwiseInputError,
                N_(
                    "A batch of prompts of different lengths needs a pad token, and this tokenizer has none: "
                    "set tok.pad_token = tok.eos_token (the usual choice), or trace one prompt at a time."
                ),
            )
        encoding = tok(texts, return_tensors="pt", padding=True, padding_side=side)
        return Prompt(encoding["input_ids"], encoding["attention_mask"], texts, side)
    if not isinstance(input_ids, torch.Tensor):
        input_ids = torch.as_tensor(input_ids, dtype=torch.long)
    if input_ids.dim() == 1:
        input_ids = input_ids[None, :]
    if input_ids.dim() != 2:
        raise StepwiseInputError(f"input_ids must be [batch, seq]; got shape {list(input_ids.shape)}.")
    if input_ids.shape[1] == 0 or input_ids.shape[0] == 0:
        raise StepwiseInputError("The prompt is empty (input_ids has no tokens).")
    if attention_mask is not None:
        attention_mask = torch.as_tensor(attention_mask, dtype=torch.long)
        if attention_mask.dim() == 1:
            attention_mask = attention_mask[None, :]
        if tuple(attention_mask.shape) != tuple(input_ids.shape):
            raise StepwiseInputError(
                f"attention_mask {list(attention_mask.shape)} must have the shape of input_ids "
                f"{list(input_ids.shape)}: 1 at a real token, 0 at a pad."
            )
        if not bool(attention_mask.any(dim=1).all()):
            raise StepwiseInputError("A row of attention_mask is all zeros: every prompt needs a real token.")
    side = padding_side or _padding_side_of(attention_mask)
    texts = [
        tok.decode(row[mask.bool()] if mask is not None else row) if tok is not None else ""
        for row, mask in zip(
            input_ids, attention_mask if attention_mask is not None else [None] * len(input_ids), strict=True
        )
    ]
    return Prompt(input_ids, attention_mask, texts, side)


def _padding_side_of(attention_mask: torch.Tensor | None) -> str:
    """Where a batch's pads are, read off its mask: "right" if a row ends in a pad, else "left"."""
    if attention_mask is not None and bool((attention_mask[:, -1] == 0).any()):
        return "right"
    return "left"


def _check_settings(model, input_ids, max_new_tokens, do_sample: bool, temperature) -> None:
    config = model.config
    max_positions = getattr(config, "max_position_embeddings", None)
    prompt_len = int(input_ids.shape[1])
    name = type(model).__name__
    if max_positions and prompt_len > max_positions:
        raise templated(
            StepwiseInputError,
            N_(
                "The prompt is {length} tokens long, but {name} has only {positions} positions: "
                "shorten the prompt to at most {positions} tokens."
            ),
            length=prompt_len,
            name=name,
            positions=max_positions,
        )
    check_max_new_tokens(max_new_tokens)
    if do_sample and not (temperature is not None and temperature > 0):
        raise templated(
            StepwiseInputError,
            N_("Sampling needs a temperature above 0; got {temperature}."),
            temperature=repr(temperature),
        )
    if not max_positions:
        return
    # The last chosen token is never fed, so a run feeds its start and all new tokens but one.
    if getattr(config, "is_encoder_decoder", False):
        decoder_len = max_new_tokens  # the decoder start token, then every new token but the last
        if decoder_len > max_positions:
            raise templated(
                StepwiseInputError,
                N_(
                    "max_new_tokens={count} needs {needed} decoder positions, but {name} has "
                    "{positions}: lower max_new_tokens to at most {positions}."
                ),
                count=max_new_tokens,
                needed=decoder_len,
                name=name,
                positions=max_positions,
            )
    elif prompt_len + max_new_tokens - 1 > max_positions:
        raise templated(
            StepwiseInputError,
            N_(
                "The prompt ({length} tokens) plus max_new_tokens ({count}) needs {needed} positions, "
                "more than the {positions} {name} has: lower max_new_tokens to at most {most}, or shorten "
                "the prompt."
            ),
            length=prompt_len,
            count=max_new_tokens,
            needed=prompt_len + max_new_tokens - 1,
            positions=max_positions,
            name=name,
            most=max_positions - prompt_len + 1,
        )


def check_max_new_tokens(max_new_tokens) -> None:
    """Refuse a max_new_tokens that is not a whole number of at least 1 (every step rule needs one)."""
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise StepwiseInputError(
            f"max_new_tokens must be a whole number of at least 1; got {max_new_tokens!r}."
        )


def model_name_of(model) -> str:
    """The name a trace shows for a model: its hub/local path, else its class name."""
    return getattr(model.config, "name_or_path", "") or type(model).__name__


def token_texter(tok):
    """A function id -> readable text of that one token (or "<id>" without a tokenizer)."""
    if tok is None:
        return lambda token_id: f"<{token_id}>"

    # A run asks for the same ids again and again (each step's top-k, then every id the trace shows).
    @functools.cache
    def token_text(token_id: int) -> str:
        return tok.decode([int(token_id)], skip_special_tokens=False, clean_up_tokenization_spaces=False)

    return token_text


def _buffer_shape(model, name: str) -> list[int] | None:
    buffer = getattr(model, name, None)
    return list(buffer.shape) if isinstance(buffer, torch.Tensor) else None


def config_summary(config, layout, model=None) -> dict[str, Any]:
    """The few config numbers a trace keeps (layers, heads, sizes), the same keys for every family."""

    def first(*keys):
        return next((getattr(config, k) for k in keys if getattr(config, k, None) is not None), None)

    # BART's num_attention_heads is an alias of encoder_attention_heads: read the decoder's own first.
    num_heads = first("decoder_attention_heads", "num_attention_heads")
    hidden = first("hidden_size", "d_model")
    return {
        "num_layers": layout.num_layers,
        "encoder_layers": len(layout.encoder_self_attn),
        "num_heads": num_heads,  # the decoder's
        "encoder_heads": first("encoder_attention_heads") if layout.encoder_self_attn else None,
        "num_kv_heads": first("num_key_value_heads") or num_heads,
        "hidden_size": hidden,
        "head_dim": first("head_dim") or (hidden // num_heads if hidden and num_heads else None),
        "vocab_size": first("vocab_size"),
        "ffn_dim": first("intermediate_size", "decoder_ffn_dim"),  # the decoder MLP's inner width
        "final_logits_bias": _buffer_shape(model, "final_logits_bias"),
        "max_positions": first("max_position_embeddings"),
        "model_type": getattr(config, "model_type", ""),
    }
