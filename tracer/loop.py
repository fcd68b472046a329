"""Trace a hand-written decoding loop instead of generate(): each forward call of the model is one step.

The cache doctor runs a loop next to generate() to compare them; this is the loop's step rule
beside generation's (tracer/generate.py), sharing its input checks, token text and packing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from tracer.errors import TracingNotSupported
from tracer.generate import check_max_new_tokens, encode_prompt, pack_trace, token_texter
from tracer.record import DEFAULT_BUDGET_BYTES, LoopSteps, Recorder, describe
from tracer.trace import Trace


def trace_loop(
    model,
    tok,
    loop: Callable[..., torch.Tensor],
    prompt: str | None = None,
    *,
    input_ids: torch.Tensor | None = None,
    max_new_tokens: int = 8,
    use_cache: bool = True,
    model_name: str | None = None,
    budget_bytes: int = DEFAULT_BUDGET_BYTES,
    **model_kwargs: Any,
) -> Trace:
    """Trace a hand-written decoding loop instead of generate().

    The loop is called as `loop(model, input_ids, attention_mask, max_new_tokens=..., use_cache=...,
    **model_kwargs)` with [1, prompt_len] tensors and returns the ids [1, total]. Each call of the
    model's forward is one step; the token a step chose is the last id the loop feeds next (or,
    for the last step, the last id it returns), and its distribution is the raw logits.
    """
    input_ids, attention_mask, texts, _ = encode_prompt(tok, prompt, input_ids)
    prompt_text = texts[0]
    if input_ids.shape[0] != 1:
        raise TracingNotSupported("A hand-written loop is traced on one prompt at a time, not a batch.")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    check_max_new_tokens(max_new_tokens)
    token_text = token_texter(tok)
    prompt_ids = input_ids[0].tolist()
    steps = LoopSteps()
    with Recorder(
        model, steps, capture_attention=False, budget_bytes=budget_bytes, token_text=token_text
    ) as rec:
        try:
            sequence = loop(
                model,
                input_ids,
                attention_mask,
                max_new_tokens=max_new_tokens,
                use_cache=use_cache,
                **model_kwargs,
            )
            steps.finish(sequence)
            sequence_ids = sequence[0].tolist()
        except Exception as exc:  # a model error: keep what was recorded, say where it failed
            rec.fail(exc)
            sequence_ids = prompt_ids + [s.chosen_id for s in rec.log.steps if s.closed]
    settings = {
        "max_new_tokens": max_new_tokens,
        "use_cache": use_cache,
        "do_sample": False,
        "loop": getattr(loop, "__name__", type(loop).__name__),
        "capture_attention": False,
        "model_kwargs": {key: describe(value) for key, value in model_kwargs.items()},
    }
    return pack_trace(model, rec, model_name, prompt_text, prompt_ids, sequence_ids, settings, token_text)
