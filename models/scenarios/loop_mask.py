"""Scenario "loop-mask": a hand-written decoding loop that does not extend the attention mask.

Not every model is driven by generate(). A hand-written greedy loop feeds the model the new
token with the cache, and the attention mask the tokenizer made for the prompt. The mask is
never extended, so it covers the prompt only; transformers treats the positions it does not
cover as masked, and from step 1 on the new tokens cannot attend to the generated tokens, not
even to themselves. No error: the text quietly parts from the uncached loop at step 1.
(Without the cache the loop has to build a mask for the whole sequence, or the model rejects it.)
"""

from __future__ import annotations

import inspect

import torch

from models.random_models import build_random_llama
from models.scenarios import Expected, Scenario, Setup
from tracer.i18n import N_  # the app shows a scenario's words in its user's language

SEED = 11
PROMPT = "once upon a time there was a small fox ."


@torch.no_grad()
def broken_greedy_loop(model, input_ids, attention_mask, *, max_new_tokens: int, use_cache: bool = True):
    """Greedy decoding by hand. input_ids, attention_mask: [1, prompt_len]."""
    ids, cache = input_ids, None
    for _ in range(max_new_tokens):
        if use_cache and cache is not None:
            # Only the new token goes in; the cache holds the rest.
            out = model(input_ids=ids[:, -1:], attention_mask=attention_mask, past_key_values=cache)
        else:
            out = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=use_cache)
        cache = out.past_key_values if use_cache else None
        next_id = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)  # [1, 1]
        ids = torch.cat([ids, next_id], dim=-1)
    return ids


@torch.no_grad()
def fixed_greedy_loop(model, input_ids, attention_mask, *, max_new_tokens: int, use_cache: bool = True):
    """Greedy decoding by hand. input_ids, attention_mask: [1, prompt_len]."""
    ids, cache = input_ids, None
    for _ in range(max_new_tokens):
        if use_cache and cache is not None:
            out = model(input_ids=ids[:, -1:], attention_mask=attention_mask, past_key_values=cache)
        else:
            out = model(input_ids=ids, attention_mask=attention_mask, use_cache=use_cache)
        cache = out.past_key_values if use_cache else None
        next_id = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)  # [1, 1]
        ids = torch.cat([ids, next_id], dim=-1)
        # The mask covers every position: the cache's and the next token's.
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones((ids.shape[0], 1))], dim=-1)
    return ids


_LOOPS = {"broken": broken_greedy_loop, "fixed": fixed_greedy_loop}


def build(variant: str) -> Setup:
    model, tok = build_random_llama(seed=SEED)
    return Setup(model, tok, prompt=PROMPT, loop=_LOOPS[variant])


SCENARIO = Scenario(
    name="loop-mask",
    title=N_("A hand-written loop that does not extend the attention mask"),
    description=N_(
        "A greedy decoding loop written by hand (no generate()) feeds the new token with the cache and "
        "the prompt's attention mask, which it never extends. No error: the text parts from the "
        "uncached loop at step 1."
    ),
    explanation=N_(
        "The attention mask must cover every key position: the ones in the cache plus the tokens fed "
        "now. The loop keeps the mask the tokenizer made for the prompt, so at step 1 it is one "
        "position short, at step 2 two, and so on. transformers treats positions the mask does not "
        "cover as padding: the new token cannot attend to the tokens generated before it, not even "
        "to itself, from layer 0 on. generate() extends the mask by a column of ones after every "
        "step (_update_model_kwargs_for_generation); a hand-written loop must do the same."
    ),
    build=build,
    expected={"broken": Expected(False, step=1, layer=0), "fixed": Expected(True)},
    code={"broken": inspect.getsource(broken_greedy_loop), "fixed": inspect.getsource(fixed_greedy_loop)},
    notes={
        "broken": N_("silently diverges with the cache on"),
        "fixed": N_("extends the mask after every token"),
    },
)
