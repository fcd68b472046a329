"""Scenario "bart-reused-cache": one BART cache reused for a new source sentence.

A translation service keeps one `EncoderDecoderCache` and, before each new sentence, empties
it with `crop(-cache.get_seq_length())`, as one would a decoder-only cache. But
`EncoderDecoderCache.crop` trims only the self-attention part. The cross-attention part still
holds the keys and values projected from the previous sentence's encoder output, and
`is_updated` still says so: BART's cross-attention then reads them from the cache and never
looks at the new encoder output. The decoder translates the old sentence. No error: it parts
from the uncached run at step 0.
"""

from __future__ import annotations

import inspect

from transformers import DynamicCache, EncoderDecoderCache

from models.random_models import build_random_bart
from models.scenarios import Expected, Scenario, Setup
from tracer.i18n import N_  # the app shows a scenario's words in its user's language

SEED = 13
FIRST_SOURCE = "ann saw a big dog in the park ."  # translated first, with the same cache
PROMPT = "tom has a red ball in the house ."  # the sentence the doctor checks: as long as the first


def broken_cache_for_next_sentence(cache: EncoderDecoderCache) -> EncoderDecoderCache:
    cache.crop(-cache.get_seq_length())  # "empty the cache": trims the self-attention part only
    return cache


def fixed_cache_for_next_sentence(cache: EncoderDecoderCache) -> EncoderDecoderCache:
    # A new source needs new cross-attention keys and values: start from an empty cache.
    return EncoderDecoderCache(DynamicCache(), DynamicCache())


_NEXT = {"broken": broken_cache_for_next_sentence, "fixed": fixed_cache_for_next_sentence}


def build(variant: str) -> Setup:
    model, tok = build_random_bart(seed=SEED)
    next_cache = _NEXT[variant]

    def cache_after_first_sentence() -> dict:
        # Translate the first sentence with the service's cache, then prepare it for the next one.
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        first = tok(FIRST_SOURCE, return_tensors="pt")
        model.generate(**first, max_new_tokens=4, past_key_values=cache, do_sample=False)
        return {"past_key_values": next_cache(cache)}

    return Setup(model, tok, prompt=PROMPT, cached_kwargs=cache_after_first_sentence)


SCENARIO = Scenario(
    name="bart-reused-cache",
    title=N_("A BART cache reused for a new source sentence"),
    description=N_(
        "One EncoderDecoderCache serves sentence after sentence; before each new one it is 'emptied' "
        "with crop(-cache.get_seq_length()). The cross-attention keys and values of the previous "
        "sentence stay, and the decoder reads them instead of the new encoder output: a silent "
        "divergence from step 0."
    ),
    explanation=N_(
        "BART's cross-attention projects the encoder output to keys and values once, on the first "
        "step, stores them in the cache's cross-attention part and sets is_updated[layer]; later it "
        "reads them from the cache. EncoderDecoderCache.crop() trims the self-attention part only, so "
        "after the crop the cache still holds the previous source's cross K/V with is_updated set, and "
        "the decoder attends to the old sentence from the first step, in layer 0. The fix: a fresh "
        "cache (or none) for every new source sentence."
    ),
    build=build,
    expected={"broken": Expected(False, step=0, layer=0), "fixed": Expected(True)},
    code={
        "broken": inspect.getsource(broken_cache_for_next_sentence),
        "fixed": inspect.getsource(fixed_cache_for_next_sentence),
    },
    notes={
        "broken": N_("decodes with the previous sentence's cross K/V"),
        "fixed": N_("a fresh cache per sentence"),
    },
)
