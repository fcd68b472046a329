"""Cache-bug scenarios: small models with a real KV-cache bug, and its correct fix beside it.

Each scenario builds a tiny random model (fixed seed, no download) in one of its variants:

- "broken": the bug as it is found in real custom models;
- "fixed": the correct fix, which works with the cache on and off;
- "tempting" (some scenarios): the fix people try first, and why it is wrong.

`build(variant)` returns a `Setup`: everything `tracer.check_cache` needs to compare generation
with and without the cache. The scenario also says where the doctor must find the bug
(`expected`), explains it, and carries the code of each variant (read from the very functions that
run, so the page never shows code that differs from what was checked).

A scenario about a batch compares one row of the batch with the same prompt generated alone
(`Setup.row`, `tracer.compare_row_with_alone`) instead of the cache on with the cache off.

`check(name, variant)` runs the doctor on a built variant. Data flows from models to the tracer:
this package uses the tracer's public `check_cache`, and the tracer never imports models.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

VARIANTS = ("broken", "fixed", "tempting")


@dataclass(frozen=True)
class Expected:
    """Where the doctor must find a variant's bug; `consistent=True` for a variant that has none."""

    consistent: bool
    step: int | None = None  # first divergent (or failing) step
    layer: int | None = None  # first divergent decoder layer, where one is defined
    error: str | None = None  # the exception type of a run that crashes, if one does


@dataclass
class Setup:
    """One built variant: the model and the inputs for `tracer.check_cache(...)`."""

    model: Any
    tok: Any
    prompt: str | None = None
    input_ids: Any = None  # [1, prompt_len] LongTensor, when the prompt is not plain text
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # to generate(), both runs
    # Extra kwargs for the cached run only, made right before it (e.g. a cache to start from).
    cached_kwargs: Callable[[], dict[str, Any]] | None = None
    # A hand-written decoding loop to compare instead of generate(); see tracer.loop.trace_loop.
    loop: Callable[..., Any] | None = None
    # Batches and beams.
    prompts: list[str] | None = None  # a batch of texts (or input_ids [batch, len] above)
    attention_mask: Any = None  # [batch, len] beside input_ids; None: not passed to generate()
    padding_side: str | None = None
    num_beams: int = 1
    row: int | None = None  # compare this row of the batch with its prompt alone (not cache on vs off)
    batch_kwargs: dict[str, Any] | None = None  # with `row`: kwargs for the batch run only

    def check_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for tracer.check_cache(model, tok, **these)."""
        kwargs: dict[str, Any] = dict(self.model_kwargs)
        if self.prompt is not None or self.prompts is not None:
            kwargs["prompt"] = self.prompt if self.prompt is not None else self.prompts
        else:
            kwargs["input_ids"] = self.input_ids
        if self.cached_kwargs is not None:
            kwargs["cached_kwargs"] = self.cached_kwargs
        if self.loop is not None:
            kwargs["loop"] = self.loop
        kwargs |= self._batch_settings()
        return kwargs

    def row_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for tracer.compare_row_with_alone(model, tok, **these)."""
        kwargs: dict[str, Any] = dict(self.model_kwargs, row=self.row)
        if self.prompts is not None:
            kwargs["prompts"] = self.prompts
        else:
            kwargs["input_ids"] = self.input_ids
            kwargs["attention_mask"] = self.attention_mask
        if self.batch_kwargs:
            kwargs["batch_kwargs"] = self.batch_kwargs
        return kwargs | self._batch_settings()

    def _batch_settings(self) -> dict[str, Any]:
        settings: dict[str, Any] = {}
        if self.padding_side is not None:
            settings["padding_side"] = self.padding_side
        if self.attention_mask is not None and self.row is None:
            settings["attention_mask"] = self.attention_mask
        if self.num_beams != 1:
            settings["num_beams"] = self.num_beams
        return settings


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    description: str  # what the model does and what goes wrong, in a few sentences
    explanation: str  # why it goes wrong, and what the fix changes
    build: Callable[[str], Setup]
    expected: dict[str, Expected]  # variant -> where the doctor must find it
    code: dict[str, str]  # variant -> the source that differs between variants
    notes: dict[str, str] = field(default_factory=dict)  # variant -> a word on that variant
    # Fewer new tokens cannot show the bug (beam search: the cache is reordered after a few steps).
    min_new_tokens: int = 1
    # What the doctor compares: "cache" (on vs off) or "row-vs-alone" (a batch row vs its prompt alone).
    comparison: str = "cache"

    @property
    def variants(self) -> tuple[str, ...]:
        return tuple(v for v in VARIANTS if v in self.expected)


def _registry() -> dict[str, Scenario]:
    from models.scenarios import (
        bart_batch_mask,
        bart_cache,
        batch_padding,
        beam_reorder,
        loop_mask,
        side_inputs,
        stale_positions,
    )

    return {
        s.name: s
        for s in (
            side_inputs.SCENARIO,
            stale_positions.SCENARIO,
            loop_mask.SCENARIO,
            bart_cache.SCENARIO,
            batch_padding.SCENARIO,
            bart_batch_mask.SCENARIO,
            beam_reorder.SCENARIO,
        )
    }


def names() -> list[str]:
    return list(_registry())


def all_scenarios() -> list[Scenario]:
    return list(_registry().values())


def get(name: str) -> Scenario:
    """The scenario called `name`; ValueError listing the names if there is none."""
    scenarios = _registry()
    if name not in scenarios:
        raise ValueError(f"No cache-bug scenario {name!r}: choose one of {', '.join(scenarios)}.")
    return scenarios[name]


def build(name: str, variant: str = "broken") -> Setup:
    scenario = get(name)
    if variant not in scenario.expected:
        raise ValueError(
            f"Scenario {name!r} has no variant {variant!r}: choose one of {', '.join(scenario.variants)}."
        )
    return scenario.build(variant)


def check(name: str, variant: str = "broken", max_new_tokens: int = 8):
    """Build a variant of a scenario and run the cache doctor on it: a `tracer.CacheReport`.

    Cache on vs off; or, for a scenario about a batch, its row vs the same prompt alone. A scenario
    that needs more new tokens to show its bug than asked for gets them (`min_new_tokens`).
    """
    # The tracer is the heavier import; the registry needs none of it.
    from tracer import check_cache, compare_row_with_alone

    setup = build(name, variant)
    max_new_tokens = max(max_new_tokens, get(name).min_new_tokens)
    common = dict(max_new_tokens=max_new_tokens, model_name=f"{name} ({variant})")
    if setup.row is not None:
        return compare_row_with_alone(setup.model, setup.tok, **common, **setup.row_kwargs())
    return check_cache(setup.model, setup.tok, **common, **setup.check_kwargs())
