"""Scenario "beam-reorder": a custom cache that does not follow the beams.

Beam search keeps the best few continuations after every step; a kept beam often continues
another beam's text, so generate() calls the cache's `reorder_cache(beam_idx)` to move every
layer's keys and values with their beams. A cache class that overrides `reorder_cache` for its
own bookkeeping and never moves the tensors leaves each beam reading another beam's past. Nothing
crashes; cached beam search parts from uncached beam search a step after the first reorder that
moves a beam (here step 2, so the scenario needs at least 4 new tokens to show it clearly). The
tempting fix moves the keys and forgets the values.
"""

from __future__ import annotations

import inspect

from transformers import DynamicCache

from models.random_models import build_random_llama
from models.scenarios import Expected, Scenario, Setup

PROMPT = "the cat sat on the mat and"
NUM_BEAMS = 4


class BrokenBeamCache(DynamicCache):
    """A cache that remembers which beams survived each step (for a beam-search viewer)."""

    def reorder_cache(self, beam_idx):
        self.history = [*getattr(self, "history", []), beam_idx.tolist()]


class FixedBeamCache(DynamicCache):
    """A cache that remembers which beams survived each step (for a beam-search viewer)."""

    def reorder_cache(self, beam_idx):
        self.history = [*getattr(self, "history", []), beam_idx.tolist()]
        super().reorder_cache(beam_idx)  # every layer's keys and values follow their beams


class TemptingBeamCache(DynamicCache):
    """A cache that remembers which beams survived each step (for a beam-search viewer)."""

    def reorder_cache(self, beam_idx):
        self.history = [*getattr(self, "history", []), beam_idx.tolist()]
        for layer in self.layers:  # "attention looks up the keys": move them with their beams
            if layer.is_initialized:
                layer.keys = layer.keys.index_select(0, beam_idx.to(layer.keys.device))


_CACHES = {"broken": BrokenBeamCache, "fixed": FixedBeamCache, "tempting": TemptingBeamCache}


def build(variant: str) -> Setup:
    model, tok = build_random_llama()
    cache_class = _CACHES[variant]

    def fresh_cache() -> dict:
        # The cached run generates into this cache; the uncached run has none.
        return {"past_key_values": cache_class(config=model.config)}

    return Setup(model, tok, prompt=PROMPT, num_beams=NUM_BEAMS, cached_kwargs=fresh_cache)


SCENARIO = Scenario(
    name="beam-reorder",
    title="A custom cache that does not follow the beams",
    description=(
        "Beam search with 4 beams into a custom cache class whose reorder_cache keeps a log of the beams "
        "but never moves the keys and values. No error: cached beam search parts from uncached beam "
        "search at step 2."
    ),
    explanation=(
        "After every step beam search keeps the best 4 continuations; a kept beam may continue another "
        "beam's text (beam 3 continuing beam 0, say). generate() then calls the cache's "
        "reorder_cache(beam_idx) so that every layer's keys and values follow their beams. This cache "
        "overrides reorder_cache for its own log and never moves the tensors: after step 1, a beam that "
        "continues another one reads its old row's past, and from step 2 its layer-0 output differs from "
        "the uncached run, which recomputes every beam's past from its text. The fix calls "
        "super().reorder_cache(beam_idx). The tempting fix moves the keys only: attention then weighs the "
        "right past, but averages the wrong beam's values. The doctor checks every layer's keys and "
        "values after each reorder (reorder_applied) and names the step whose reorder was not applied."
    ),
    build=build,
    expected={
        "broken": Expected(False, step=2, layer=0),
        "fixed": Expected(True),
        "tempting": Expected(False, step=2, layer=0),
    },
    code={
        "broken": inspect.getsource(BrokenBeamCache),
        "fixed": inspect.getsource(FixedBeamCache),
        "tempting": inspect.getsource(TemptingBeamCache),
    },
    notes={
        "broken": "the beams keep their own past: parts at step 2",
        "fixed": "keys and values follow their beams",
        "tempting": "keys follow the beams, values do not",
    },
    min_new_tokens=4,
)
