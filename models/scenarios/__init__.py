"""Cache-bug scenarios: small models with a real KV-cache bug, and its correct fix beside it.

Each scenario builds a tiny random model (fixed seed, no download) in one of its variants:

- "broken": the bug as it is found in real custom models;
- "fixed": the correct fix, which works with the cache on and off;
- "tempting" (some scenarios): the fix people try first, and why it is wrong.

`build(variant)` returns a `Setup`: everything `tracer.check_cache` needs to compare generation
with and without the cache. The scenario also says where the doctor must find the bug
(`expected`), explains it, and carries the code of each variant (read from the very functions that
run, so the page never shows code that differs from what was checked).

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

    def check_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for tracer.check_cache(model, tok, **these)."""
        kwargs: dict[str, Any] = dict(self.model_kwargs)
        if self.prompt is not None:
            kwargs["prompt"] = self.prompt
        else:
            kwargs["input_ids"] = self.input_ids
        if self.cached_kwargs is not None:
            kwargs["cached_kwargs"] = self.cached_kwargs
        if self.loop is not None:
            kwargs["loop"] = self.loop
        return kwargs


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

    @property
    def variants(self) -> tuple[str, ...]:
        return tuple(v for v in VARIANTS if v in self.expected)


def _registry() -> dict[str, Scenario]:
    from models.scenarios import bart_cache, loop_mask, side_inputs, stale_positions

    return {
        s.name: s
        for s in (side_inputs.SCENARIO, stale_positions.SCENARIO, loop_mask.SCENARIO, bart_cache.SCENARIO)
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
    """Build a variant of a scenario and run the cache doctor on it: a `tracer.CacheReport`."""
    from tracer import check_cache  # the tracer is the heavier import; the registry needs none of it

    setup = build(name, variant)
    return check_cache(
        setup.model,
        setup.tok,
        max_new_tokens=max_new_tokens,
        model_name=f"{name} ({variant})",
        **setup.check_kwargs(),
    )
