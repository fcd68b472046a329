"""The cache doctor: does generation with the KV cache part from generation without it, and why?

`check_cache(model, tok, prompt)` runs greedy traced generation twice, with the cache on and off,
and compares the two runs step by step: the logits at the newest position, every decoder block's
output at the newest position, and the chosen tokens. The first step where they part (or where
one run crashes) is the bug's step; the first decoder layer whose output differs there is its
layer. Then it reads what was fed at that step and names the inputs whose shapes or values do
not fit (`suspects`), and writes a plain-language `summary` with the usual fix.

Tolerance. The two runs compute the same numbers with matmuls of different shapes, so they
differ by rounding: about 1e-7 relative in float32, more in half precision. Two vectors (the
uncached one is the reference `b`) agree when

    max |a - b| <= atol + rtol * max |b|

with (rtol, atol) scaled by the model's dtype (`Tolerance.for_dtype`): float32 1e-3 / 1e-5,
float16 2e-2 / 1e-3, bfloat16 6e-2 / 1e-2; that is ~10^4 float32 and ~15-30 half-precision ulps,
well above the rounding differences (tens of ulps at most, even through deep stacks), and far
below what a real cache bug does (a wrong position, mask or K/V moves the hidden state by 1e-2 and more).
Because hidden states are compared too, a divergence that never flips the greedy token is
caught; and a greedy token that flips while the logits agree within tolerance (a near tie
decided by rounding, common in bfloat16) is not called a bug: the later steps are then not
compared, as the two runs continue different texts.

A hand-written decoding loop can be checked the same way (`loop=`), and so can a cache the
caller starts the cached run from (`cached_kwargs=`); `CacheReport.compared` says what was
compared. Plain Python: no Streamlit here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from tracer import names, positions
from tracer.errors import StepwiseInputError
from tracer.generate import trace_generation
from tracer.i18n import N_, Gettext, untranslated
from tracer.loop import trace_loop
from tracer.record import describe
from tracer.records import SavedRecord, plain_data
from tracer.trace import Step, TensorInfo, Trace, TraceError

# ---------------------------------------------------------------------------------------------
# Tolerance


@dataclass(frozen=True)
class Tolerance:
    """Two vectors agree when max|a - b| <= atol + rtol * max|b| (b: the uncached reference)."""

    rtol: float
    atol: float

    @staticmethod
    def for_dtype(dtype: torch.dtype | str) -> Tolerance:
        name = str(dtype).removeprefix("torch.")
        if name == "bfloat16":  # 8 bits of mantissa: eps 7.8e-3
            return Tolerance(rtol=6e-2, atol=1e-2)
        if name == "float16":  # 11 bits: eps 9.8e-4
            return Tolerance(rtol=2e-2, atol=1e-3)
        return Tolerance(rtol=1e-3, atol=1e-5)  # float32 (and float64): eps 1.2e-7

    def limit(self, reference: np.ndarray) -> float:
        """The largest difference from `reference` that is still rounding noise."""
        return self.atol + self.rtol * float(np.max(np.abs(reference)))


def compare(a: np.ndarray, b: np.ndarray, tol: Tolerance) -> tuple[float, float]:
    """(max |a - b|, the limit it must stay under). b is the reference (uncached run)."""
    if a.shape != b.shape:
        return math.inf, tol.limit(b)
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))), tol.limit(b)


# ---------------------------------------------------------------------------------------------
# The report


@dataclass(frozen=True)
class StepComparison:
    """One step of the two runs side by side."""

    index: int
    status: str  # "same" | "diverged" | "error" | "both-failed" | "noise-flip" | "not compared" | "missing"
    cached_token: int | None
    uncached_token: int | None
    logit_diff: float | None  # max |cached - uncached| of the newest position's logits
    logit_limit: float | None  # the tolerance it was held to
    layer_diffs: tuple[float, ...] = ()  # per decoder layer: max |diff| of the block's newest output
    layer_limits: tuple[float, ...] = ()

    @property
    def compared(self) -> bool:
        return self.logit_diff is not None


@dataclass(frozen=True)
class Suspect:
    """An input whose shape or values do not fit what was fed at the bug's step."""

    step: int
    run: str  # "cached" | "uncached"
    name: str  # the input's name, e.g. "pixel_values"
    shape: tuple[int, ...] | None
    kind: str  # a key of USUAL_FIX: "side-input", "dropped-side-input", "positions", "mask", ...
    reason: str  # plain words: what does not fit

    def __str__(self) -> str:
        return self.reason


# The usual fix for each kind of suspect, said once in the summary (msgids: an app shows them
# through its user's gettext).
USUAL_FIX = {
    "side-input": N_(
        "Pass such inputs only together with the tokens they belong to: in prepare_inputs_for_generation, "
        "add them when the fed input_ids contain their placeholder tokens (the prefill, and every step "
        "with use_cache=False). Passing them 'only on the first iteration' looks equivalent but breaks "
        "use_cache=False, where every step feeds the placeholders again."
    ),
    "positions": N_(
        "Start the new tokens' positions after the cache: position_ids = past_key_values.get_seq_length() "
        "+ arange(number of fed tokens), or let generate() make position_ids (it advances them itself)."
    ),
    "mask": N_(
        "Extend the attention mask by a column of ones for every generated token, so it covers the cache "
        "and the fed tokens, as generate() does in _update_model_kwargs_for_generation."
    ),
    "stale-cross-cache": N_(
        "Give every new source sentence a fresh EncoderDecoderCache (or none): crop() trims only the "
        "self-attention part, and once its cross-attention part is filled BART reads keys and values "
        "from it instead of projecting the new encoder output."
    ),
    "dropped-side-input": N_(
        "Pass such inputs whenever their placeholder tokens are fed, not only on the first iteration: "
        "with use_cache=False every step feeds them again. Decide from the fed input_ids (do they contain "
        "the placeholders?), which is right with the cache on and off."
    ),
    "reused-cache": N_(
        "Start generation from an empty cache unless the cache really holds this prompt's prefix."
    ),
}


# What a report compared (CacheReport.compared), in words an app can say in its user's language
# (tracer.i18n.reword).
COMPARED = {
    "generate": N_("model.generate() with use_cache=True vs use_cache=False, greedy, {count} new tokens"),
    "loop": N_("your decoding loop with use_cache=True vs use_cache=False, greedy, {count} new tokens"),
    "generate+extra": N_(
        "model.generate() with use_cache=True vs use_cache=False, greedy, {count} new tokens; "
        "the cached run also got {extra}"
    ),
    "loop+extra": N_(
        "your decoding loop with use_cache=True vs use_cache=False, greedy, {count} new tokens; "
        "the cached run also got {extra}"
    ),
}


@dataclass(frozen=True)
class CacheReport(SavedRecord):
    """Cached vs uncached generation, step by step. See the module docstring for the tolerance."""

    record_kind = "cache-report"

    consistent: bool
    first_divergent_step: int | None  # the first step whose outputs part, or where one run failed
    first_divergent_layer: int | None  # the first decoder layer whose newest output differs there
    max_logit_diff: list[float]  # per step (NaN where a step was not compared)
    cached_error: TraceError | None
    uncached_error: TraceError | None
    suspects: list[Suspect]
    summary: str
    kind: str  # "consistent" | "error" | "divergence" | "both-failed"
    compared: str  # what was compared, e.g. "model.generate(use_cache=True) vs use_cache=False"
    tolerance: Tolerance
    dtype: str
    steps: list[StepComparison]
    cached: Trace = field(repr=False)
    uncached: Trace = field(repr=False)

    def _repr_html_(self) -> str:  # Jupyter: a report that ends a cell shows this summary
        from tracer.notebook import report_html

        return report_html(self)

    @property
    def divergent(self) -> StepComparison | None:
        step = self.first_divergent_step
        return None if step is None else next((s for s in self.steps if s.index == step), None)

    def to_dict(self) -> dict[str, Any]:
        """The report as strict JSON data without the two traces (the command line's --json): the
        same walk over the fields as the trace file, plus the tokens each run chose."""
        data = plain_data(self, leave_out=("cached", "uncached"))
        data["cached_tokens"] = self.cached.generated_ids
        data["uncached_tokens"] = self.uncached.generated_ids
        return data


# ---------------------------------------------------------------------------------------------
# Running the two sides


def check_cache(
    model,
    tok=None,
    prompt: str | None = None,
    *,
    input_ids: torch.Tensor | None = None,
    max_new_tokens: int = 8,
    tolerance: Tolerance | None = None,
    loop: Callable[..., torch.Tensor] | None = None,
    cached_kwargs: dict[str, Any] | Callable[[], dict[str, Any]] | None = None,
    model_name: str | None = None,
    **model_kwargs: Any,
) -> CacheReport:
    """Run greedy generation with the cache on and off, and compare them step by step.

    `model_kwargs` (e.g. pixel_values) go to both runs. `cached_kwargs` go to the cached run only:
    a dict, or a function returning one, called right before that run (e.g. a cache to start
    from). `loop`, if given, is a hand-written decoding loop compared instead of generate():
    `loop(model, input_ids, attention_mask, *, max_new_tokens, use_cache, **model_kwargs) -> ids`
    (see `trace_loop`). `tolerance` defaults to `Tolerance.for_dtype(model's dtype)`.
    """
    dtype = _model_dtype(model)
    tol = tolerance or Tolerance.for_dtype(dtype)
    if model_kwargs.get("do_sample") or model_kwargs.get("num_beams", 1) != 1:
        raise StepwiseInputError(
            "The cache doctor compares greedy runs (one token per step, the most likely one): drop "
            "do_sample=True and num_beams; the other settings come from the model's generation_config."
        )
    # Greedy search is the doctor's method, passed as the caller's settings (and recorded so); the
    # rest (no_repeat_ngram_size, eos ids, ...) comes from the model's generation_config, as in generate().
    greedy = {"do_sample": False, "num_beams": 1}
    model_kwargs = {k: v for k, v in model_kwargs.items() if k not in greedy}
    common = dict(input_ids=input_ids, max_new_tokens=max_new_tokens, model_name=model_name)

    def run(use_cache: bool, extra: dict[str, Any]) -> Trace:
        if loop is not None:
            return trace_loop(
                model, tok, loop, prompt, use_cache=use_cache, **common, **model_kwargs, **extra
            )
        return trace_generation(
            model,
            tok,
            prompt,
            use_cache=use_cache,
            capture_attention=False,
            **greedy,
            **common,
            **model_kwargs,
            **extra,
        )

    uncached = run(False, {})
    extra = cached_kwargs() if callable(cached_kwargs) else dict(cached_kwargs or {})
    cached = run(True, extra)

    words = COMPARED[("loop" if loop is not None else "generate") + ("+extra" if extra else "")]
    given = ", ".join(f"{k}={describe(v)}" for k, v in extra.items())
    compared = words.format(count=max_new_tokens, extra=given)
    return compare_traces(cached, uncached, tol, compared=compared, dtype=str(dtype).removeprefix("torch."))


def assert_cache_consistent(model, tok=None, prompt: str | None = None, **kwargs: Any) -> CacheReport:
    """`check_cache(...)`, raising AssertionError with the summary when the runs part. For test suites."""
    report = check_cache(model, tok, prompt, **kwargs)
    if not report.consistent:
        raise AssertionError(report.summary)
    return report


def _model_dtype(model) -> torch.dtype:
    param = next(model.parameters(), None)
    return torch.float32 if param is None else param.dtype


# ---------------------------------------------------------------------------------------------
# Comparing two traces


def compare_traces(
    cached: Trace, uncached: Trace, tol: Tolerance, *, compared: str = "", dtype: str = "float32"
) -> CacheReport:
    """Compare a cached and an uncached trace of the same prompt, step by step."""
    rows: list[StepComparison] = []
    first_step: int | None = None
    first_layer: int | None = None
    kind = "consistent"
    flipped_at: int | None = None  # a near-tie token flip: the runs continue different texts after it
    num_layers = max(cached.num_layers, uncached.num_layers)
    ce, ue = cached.error, uncached.error

    last = max(len(cached.steps), len(uncached.steps), *(e.step + 1 for e in (ce, ue) if e is not None))
    for i in range(last):
        c = cached.steps[i] if i < len(cached.steps) else None
        u = uncached.steps[i] if i < len(uncached.steps) else None
        c_failed = ce is not None and ce.step == i
        u_failed = ue is not None and ue.step == i
        row = _compare_step(i, c, u, num_layers, tol)
        if first_step is not None or flipped_at is not None:
            rows.append(_with_status(row, "not compared"))
            continue
        if c_failed or u_failed:
            both = c_failed and u_failed and ce.type == ue.type
            rows.append(_with_status(row, "both-failed" if both else "error"))
            first_step, kind = i, "both-failed" if both else "error"
            where = (ce if c_failed else ue).where
            first_layer = _diverged_layer(row, tol) if not both else None
            if first_layer is None and not both:
                parsed = names.parse_layer(where or "")
                first_layer = parsed[1] if parsed and parsed[0] == "decoder" else None
            continue
        if c is None or u is None or not row.compared:
            rows.append(_with_status(row, "missing"))
            if c is None or u is None:
                first_step, kind = i, "divergence"  # one run stopped earlier than the other
            continue
        layer = _diverged_layer(row, tol)
        if layer is not None or row.logit_diff > row.logit_limit:
            rows.append(_with_status(row, "diverged"))
            first_step, first_layer, kind = i, layer, "divergence"
        elif row.cached_token != row.uncached_token:
            rows.append(_with_status(row, "noise-flip"))
            flipped_at = i
        else:
            rows.append(row)

    # Steps of a run that stopped early past the comparison (cache on and off stop together when consistent).
    report_args = dict(
        first_divergent_step=first_step,
        first_divergent_layer=first_layer,
        max_logit_diff=[math.nan if r.logit_diff is None else r.logit_diff for r in rows],
        cached_error=ce,
        uncached_error=ue,
        kind=kind,
        compared=compared or "cached vs uncached traces",
        tolerance=tol,
        dtype=dtype,
        steps=rows,
        cached=cached,
        uncached=uncached,
    )
    suspects = find_suspects(cached, uncached, first_step) if first_step is not None else []
    summary = _summary(
        cached, uncached, rows, first_step, first_layer, kind, suspects, flipped_at, tol, dtype
    )
    return CacheReport(consistent=kind == "consistent", suspects=suspects, summary=summary, **report_args)


def _compare_step(i: int, c: Step | None, u: Step | None, num_layers: int, tol: Tolerance) -> StepComparison:
    c_token = None if c is None else c.chosen_id
    u_token = None if u is None else u.chosen_id
    logit_diff = logit_limit = None
    layer_diffs, layer_limits = [], []
    if c is not None and u is not None:
        for layer in range(num_layers):
            a, b = c.hidden(layer), u.hidden(layer)
            if a is None or b is None:
                break  # e.g. the step failed before this layer
            diff, limit = compare(a, b, tol)
            layer_diffs.append(diff)
            layer_limits.append(limit)
        if c.logits is not None and u.logits is not None:
            logit_diff, logit_limit = compare(c.logits, u.logits, tol)
    return StepComparison(
        i, "same", c_token, u_token, logit_diff, logit_limit, tuple(layer_diffs), tuple(layer_limits)
    )


def _with_status(row: StepComparison, status: str) -> StepComparison:
    return StepComparison(
        row.index,
        status,
        row.cached_token,
        row.uncached_token,
        row.logit_diff,
        row.logit_limit,
        row.layer_diffs,
        row.layer_limits,
    )


def _diverged_layer(row: StepComparison, tol: Tolerance) -> int | None:
    return next(
        (k for k, (d, lim) in enumerate(zip(row.layer_diffs, row.layer_limits, strict=True)) if d > lim), None
    )


# ---------------------------------------------------------------------------------------------
# Suspects: what was fed at the bug's step that does not fit

# Inputs whose shapes follow the fed tokens or the cache, checked by their own rules below.
_SEQUENCE_INPUTS = {
    "input_ids", "decoder_input_ids", "inputs_embeds", "attention_mask", "decoder_attention_mask",
    "position_ids", "decoder_position_ids", "past_key_values", "use_cache", "logits_to_keep",
    "encoder_outputs", "cache_position", "output_attentions", "output_hidden_states", "return_dict",
}  # fmt: skip


def find_suspects(cached: Trace, uncached: Trace, step: int, *, _: Gettext = untranslated) -> list[Suspect]:
    """Inputs of the cached run at `step` (and before it) whose shapes or values don't fit what was fed.

    The reasons are in English unless `_` (a gettext) says them in another language."""
    suspects: list[Suspect] = []

    def add(run: str, name: str, shape, kind: str, reason: str) -> None:
        suspects.append(Suspect(step, run, name, None if shape is None else tuple(shape), kind, reason))

    if step >= len(cached.steps):
        return suspects
    s, first = cached.steps[step], cached.steps[0]
    fed, fed0 = _fed_len(s), _fed_len(first)
    before = _cache_len_before(cached, step)

    # Side inputs fed again with the same shape as at the prefill, though far fewer tokens are fed.
    if step > 0 and fed is not None and fed0 is not None and fed < fed0:
        for name, info in _side_inputs(s):
            at_prefill = first.prepare_inputs.get(name)
            if isinstance(at_prefill, TensorInfo) and at_prefill.shape == info.shape:
                rows = info.shape[0] if info.shape else 0
                add("cached", name, info.shape, "side-input", _(
                    "{name} {shape} is fed again at step {step}, the same as at the prefill, "
                    "beside input_ids {fed_shape}: only {fed} new token(s) reach the model, not the "
                    "{rows} positions these rows belong to, which the cache already holds."
                ).format(name=name, shape=list(info.shape), step=step, fed_shape=list(s.fed_shape), fed=fed,
                         rows=rows))  # fmt: skip

    # Side inputs given at the prefill but dropped at a later step of the uncached run, which feeds
    # every token again, the ones those inputs belong to included ("drop them after the first
    # iteration" is right with the cache only).
    if 0 < step < len(uncached.steps):
        u0, ui = uncached.steps[0], uncached.steps[step]
        u_fed, u0_fed = _fed_len(ui), _fed_len(u0)
        if u_fed is not None and u0_fed is not None and u_fed >= u0_fed:
            for name, info in _side_inputs(u0):
                if not isinstance(ui.prepare_inputs.get(name), TensorInfo):
                    add("uncached", name, info.shape, "dropped-side-input", _(
                        "{name} {shape} was fed at the prefill but not at step {step} of the "
                        "uncached run, which feeds all {fed} tokens again (input_ids "
                        "{fed_shape}), the ones {name} belongs to included."
                    ).format(name=name, shape=list(info.shape), step=step, fed=u_fed,
                             fed_shape=list(ui.fed_shape)))  # fmt: skip

    # position_ids that do not continue after the cache.
    for key in ("position_ids", "decoder_position_ids"):
        info = s.prepare_inputs.get(key)
        if isinstance(info, TensorInfo) and info.values is not None and before is not None and fed:
            got = info.array().reshape(-1, info.shape[-1])[0].tolist()
            want = list(range(before, before + fed))
            if got != want:
                add("cached", key, info.shape, "positions", _(
                    "{name} {got} at step {step}, but the cache has already seen {before} positions, so the "
                    "fed token(s) belong at {want}: the positions do not advance with the cache."
                ).format(name=key, got=got, step=step, before=before, want=want))  # fmt: skip

    # An attention mask that does not cover cache + fed tokens (BART's attention_mask is the
    # encoder's, over the source, so only its decoder mask is checked).
    for key in ("decoder_attention_mask",) if cached.encoder_decoder else ("attention_mask",):
        info = _fed_input(s, key)
        if not (isinstance(info, TensorInfo) and len(info.shape) == 2 and before is not None and fed):
            continue
        if info.shape[-1] != before + fed:
            add("cached", key, info.shape, "mask", _(
                "{name} {shape} at step {step} covers {covered} positions, but the cache "
                "has seen {before} and {fed} token(s) are fed ({total} in all): the mask was not "
                "extended, so the newest positions count as padding."
            ).format(name=key, shape=list(info.shape), step=step, covered=info.shape[-1], before=before,
                     fed=fed, total=before + fed))  # fmt: skip

    # A cache that was not empty when generation started.
    for kind in ("cross", "self"):
        event = first.event(names.decoder_cross_attn(0) if kind == "cross" else names.decoder_self_attn(0))
        held = _int(event.inputs.get("cache_len_before")) if event is not None else None
        if not held:
            continue
        if kind == "cross":
            add("cached", "past_key_values", None, "stale-cross-cache", _(
                "past_key_values already held cross-attention keys/values for {held} source positions at "
                "step 0, before this source's encoder output was projected: they come from an earlier source "
                "sentence, and the decoder reads them instead of the new ones."
            ).format(held=held))  # fmt: skip
        else:
            add("cached", "past_key_values", None, "reused-cache", _(
                "past_key_values already held {held} self-attention positions at step 0 (a reused cache)."
            ).format(held=held))  # fmt: skip
    return suspects


def _side_inputs(step: Step) -> list[tuple[str, TensorInfo]]:
    """Tensors fed at this step besides the ones that follow the tokens or the cache (pixel_values, ...)."""
    return [
        (name, info)
        for name, info in step.prepare_inputs.items()
        if name not in _SEQUENCE_INPUTS and isinstance(info, TensorInfo)
    ]


def _fed_len(step: Step) -> int | None:
    return step.fed_len


def _fed_input(step: Step, key: str):
    """What the model got as `key` at this step: from prepare_inputs, else from the forward call."""
    info = step.prepare_inputs.get(key)
    if info is None:
        forward = step.event(names.FORWARD)
        info = None if forward is None else forward.inputs.get(key)
    return info


def _cache_len_before(tr: Trace, step: int) -> int | None:
    """Self-attention positions the cache had seen when `step` started (None with the cache off).

    Positions seen, not kept: a sliding-window layer keeps only the last W-1, but the fed tokens'
    positions and the mask continue after every position seen.
    """
    event = tr.steps[step].event(names.decoder_self_attn(0))
    if event is not None and positions.KEPT_BEFORE in event.inputs:
        return positions.seen_before(event.inputs)
    if step == 0:
        return 0
    return tr.steps[step - 1].cache_seen("self")


def _int(value) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------
# The summary


def _summary(
    cached: Trace,
    uncached: Trace,
    rows: list[StepComparison],
    step: int | None,
    layer: int | None,
    kind: str,
    suspects: list[Suspect],
    flipped_at: int | None,
    tol: Tolerance,
    dtype: str,
    _: Gettext = untranslated,
) -> str:
    lines: list[str] = []
    tol_words = _("rtol {rtol:g}, atol {atol:g} for {dtype}").format(
        rtol=tol.rtol, atol=tol.atol, dtype=dtype
    )
    if kind == "consistent":
        compared = [r for r in rows if r.compared and r.status in ("same", "noise-flip")]
        worst = max((r.logit_diff for r in compared), default=0.0)
        lines.append(
            _(
                "Consistent: with and without the cache the model computes the same logits and layer outputs "
                "over {count} step(s) (largest logit difference {worst:.2g}, within {tolerance})."
            ).format(count=len(compared), worst=worst, tolerance=tol_words)
        )
        if flipped_at is not None:
            r = rows[flipped_at]
            lines.append(
                _(
                    "At step {step} the greedy token differs ({cached} vs {uncached}) although the logits "
                    "agree within the tolerance: a near tie decided by rounding, not a cache bug. Later "
                    "steps continue different texts and were not compared."
                ).format(
                    step=flipped_at,
                    cached=_tok(cached, r.cached_token, _),
                    uncached=_tok(uncached, r.uncached_token, _),
                )
            )
        return " ".join(lines)

    if kind == "both-failed":
        e = cached.error
        return _(
            "Both runs failed at step {step} with the same error, with and without the cache: {error}: "
            "{message}. The model fails either way; this is not a cache bug."
        ).format(step=step, error=e.type, message=e.message)

    row = rows[step]
    if kind == "error":
        failed = "cached" if cached.error and cached.error.step == step else "uncached"
        e = cached.error if failed == "cached" else uncached.error
        where = _(" in {where}").format(where=e.where) if e.where else ""
        text = (
            _(
                "The cached run fails at step {step}{where}: {error}: {message}. "
                "The uncached run gets past it."
            )
            if failed == "cached"
            else _(
                "The uncached run fails at step {step}{where}: {error}: {message}. "
                "The cached run gets past it."
            )
        )
        lines.append(text.format(step=step, where=where, error=e.type, message=e.message))
    else:
        r_step = cached.steps[step] if step < len(cached.steps) else None
        ids_name = "decoder_input_ids" if cached.encoder_decoder else "input_ids"
        fed = ""
        if r_step is not None and r_step.fed_shape:
            fed = _(" (fed {name} {shape})").format(name=ids_name, shape=list(r_step.fed_shape))
        if layer is not None:
            diff, limit = row.layer_diffs[layer], row.layer_limits[layer]
            where = _(
                "decoder layer {layer}'s output at the newest position differs by {diff:.3g} "
                "(noise allows {limit:.2g})"
            ).format(layer=layer, diff=diff, limit=limit)
        elif row.logit_diff is not None:
            where = _("the logits differ by {diff:.3g} (noise allows {limit:.2g})").format(
                diff=row.logit_diff, limit=row.logit_limit
            )
        else:
            where = _("one run stopped while the other went on")
        lines.append(
            _("Cached generation parts from uncached generation at step {step}{fed}: {where}.").format(
                step=step, fed=fed, where=where
            )
        )
        if row.cached_token == row.uncached_token and row.cached_token is not None:
            lines.append(
                _(
                    "The greedy token is still the same there ({token}), so the bug is silent at first."
                ).format(token=_tok(cached, row.cached_token, _))
            )
        else:
            lines.append(
                _("The cache on chooses {cached}, the cache off {uncached}.").format(
                    cached=_tok(cached, row.cached_token, _), uncached=_tok(uncached, row.uncached_token, _)
                )
            )
    if suspects:
        lines.append(_("What does not fit:") + " " + " ".join(s.reason for s in suspects))
        kinds = list(dict.fromkeys(s.kind for s in suspects))
        lines.append(_("The usual fix:") + " " + " ".join(_(USUAL_FIX[k]) for k in kinds))
    elif kind == "error":
        lines.append(
            _(
                "No fed input has an obviously wrong shape; compare what the failing step was fed with the "
                "prefill (the two runs side by side), and check what the model recomputes from inputs the "
                "cache already holds."
            )
        )
    else:
        lines.append(
            _(
                "No fed input has an obviously wrong shape or position; look at what this layer reads from "
                "the cache (keys, values, mask, positions) at this step."
            )
        )
    return " ".join(lines)


def _tok(tr: Trace, token_id: int | None, _: Gettext = untranslated) -> str:
    return _("nothing") if token_id is None else repr(tr.token_text(token_id))


def summary_in(report: CacheReport, _: Gettext) -> str:
    """The report's summary said again in the language of `_` (report.summary is the English one,
    as the command line prints it), from the same rows, suspects and traces."""
    flipped = next((r.index for r in report.steps if r.status == "noise-flip"), None)
    return _summary(
        report.cached,
        report.uncached,
        report.steps,
        report.first_divergent_step,
        report.first_divergent_layer,
        report.kind,
        suspects_in(report, _),
        flipped,
        report.tolerance,
        report.dtype,
        _,
    )


def suspects_in(report: CacheReport, _: Gettext) -> list[Suspect]:
    """The report's suspects with their reasons in the language of `_`."""
    step = report.first_divergent_step
    return [] if step is None else find_suspects(report.cached, report.uncached, step, _=_)


# ---------------------------------------------------------------------------------------------
# The report as text (the command line prints it)


def report_text(report: CacheReport) -> str:
    """The report as a few lines of text: one row per step, then the summary."""
    lines = [report.compared, f"{'step':>4}  {'cached':<14} {'uncached':<14} {'logit diff':>11}  status"]
    for r in report.steps:
        diff = "-" if r.logit_diff is None else f"{r.logit_diff:.2e}"
        c = "(failed)" if r.cached_token is None else repr(report.cached.token_text(r.cached_token))
        u = "(failed)" if r.uncached_token is None else repr(report.uncached.token_text(r.uncached_token))
        lines.append(f"{r.index:>4}  {c:<14} {u:<14} {diff:>11}  {r.status}")
    lines.append("")
    lines.append(("CONSISTENT: " if report.consistent else "NOT CONSISTENT: ") + report.summary)
    return "\n".join(lines)
