"""Scenario "stale-positions": position_ids that do not advance with the cache.

A custom `prepare_inputs_for_generation` numbers the tokens it feeds 0, 1, 2, ... Without the
cache it feeds the whole sequence, so the numbers are right. With the cache it feeds one token
per step and calls it position 0 every time: RoPE rotates its query and key as if it were the
first token. Nothing crashes; generation quietly parts from the uncached run at step 1.
"""

from __future__ import annotations

import inspect

import torch
from transformers import LlamaForCausalLM

from models.random_models import build_random_llama
from models.scenarios import Expected, Scenario, Setup
from tracer.i18n import N_  # the app shows a scenario's words in its user's language

SEED = 7
PROMPT = "tom has a red ball and ann has a blue book ."


class BrokenPositionsLlama(LlamaForCausalLM):
    def prepare_inputs_for_generation(self, input_ids, **kwargs):
        model_inputs = super().prepare_inputs_for_generation(input_ids, **kwargs)
        fed = model_inputs["input_ids"]  # [batch, fed_len]
        # Number the tokens being fed: 0, 1, 2, ...
        model_inputs["position_ids"] = torch.arange(fed.shape[1], device=fed.device)[None, :]
        return model_inputs


class FixedPositionsLlama(LlamaForCausalLM):
    def prepare_inputs_for_generation(self, input_ids, **kwargs):
        model_inputs = super().prepare_inputs_for_generation(input_ids, **kwargs)
        fed = model_inputs["input_ids"]  # [batch, fed_len]
        # The fed tokens come after everything the cache already holds.
        cache = model_inputs.get("past_key_values")
        start = cache.get_seq_length() if cache is not None else 0
        model_inputs["position_ids"] = start + torch.arange(fed.shape[1], device=fed.device)[None, :]
        return model_inputs


_CLASSES = {"broken": BrokenPositionsLlama, "fixed": FixedPositionsLlama}


def build(variant: str) -> Setup:
    base, tok = build_random_llama(seed=SEED)
    model = _CLASSES[variant](base.config)
    model.load_state_dict(base.state_dict())
    model.generation_config = base.generation_config
    model.set_attn_implementation(base.config._attn_implementation)
    model.eval()
    return Setup(model, tok, prompt=PROMPT)


SCENARIO = Scenario(
    name="stale-positions",
    title=N_("Positions that do not advance with the cache"),
    description=N_(
        "A Llama whose prepare_inputs_for_generation makes its own position_ids by numbering the "
        "tokens it feeds from 0. No error: with the cache on, generation silently parts from the "
        "uncached run at step 1."
    ),
    explanation=N_(
        "Without the cache every step feeds the whole sequence, so numbering the fed tokens 0..n-1 "
        "gives every token its true position. With the cache only the new token is fed, and it is "
        "numbered 0 on every step, although the cache already holds the prompt and the tokens "
        "generated so far. RoPE rotates the new query and key by the wrong angle, so in layer 0 "
        "already the new token attends as if it were the first word of the text. The fix starts "
        "the numbering after the cache's length (or leaves position_ids to generate(), which "
        "advances them itself)."
    ),
    build=build,
    expected={"broken": Expected(False, step=1, layer=0), "fixed": Expected(True)},
    code={
        "broken": inspect.getsource(BrokenPositionsLlama),
        "fixed": inspect.getsource(FixedPositionsLlama),
    },
    notes={
        "broken": N_("silently diverges with the cache on"),
        "fixed": N_("positions start after the cache"),
    },
)
