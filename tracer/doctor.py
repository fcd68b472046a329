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
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import numpy as np
import torch

from tracer import names, positions
from tracer.errors import StepwiseInputError
from tracer.generate import trace_generation
from tracer.i18n import N_, Gettext, templated, untranslated
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
    run: str  # "cached" | "uncached"; a row vs its prompt alone: "batch" | "alone"
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
    # Batches and beams
    "right-padding": N_(
        'Pad a decoder-only batch on the left: tokenizer(prompts, padding=True, padding_side="left", '
        'return_tensors="pt") (or tok.padding_side = "left"), and pass its attention_mask to generate(). '
        "Every row then ends in its own last token, the first new token is predicted from it, and generate() "
        "derives position_ids from the mask, so each row counts its positions from its first real token."
    ),
    "batch-positions": N_(
        "Derive position_ids from the attention mask, not from the column index: position_ids = "
        "attention_mask.cumsum(-1) - 1 (0 at the pads), then the slice of the fed tokens, as generate() "
        "does. A row's first real token is then position 0, however many pads come before it."
    ),
    "encoder-mask": N_(
        "Pass the batch's attention_mask to generate() beside input_ids: model.generate(**tokenizer(prompts, "
        'padding=True, return_tensors="pt")). An encoder-decoder model does not infer it from the pad ids, '
        "and its decoder's cross-attention needs it on every step, also when the encoder outputs were "
        "computed (with the mask) beforehand."
    ),
    "decoder-mask": N_(
        "Pass the tokenizer's attention_mask to generate() with the ids: model.generate(**tokenizer(prompts, "
        'padding=True, padding_side="left", return_tensors="pt")). Without it generate() guesses the '
        "mask from the pad ids, which fails when the pad token is the eos token (the usual tok.pad_token = "
        "tok.eos_token)."
    ),
    "encoder-left-padding": N_(
        "Pad the source on the right (BART's tokenizer does by default): its encoder numbers positions by "
        "column (learned absolute positions), so pads on the left move every real token of the row to "
        "another position. The attention mask hides the pads but cannot move the tokens back."
    ),
    "beam-reorder": N_(
        "Make the cache follow the beams: its reorder_cache(beam_idx) must index_select(0, beam_idx) the "
        "keys and the values of every layer (DynamicLayer.reorder_cache does both), for it is called after "
        "every beam-search step with the beams generate() kept. Subclass DynamicCache, or call its "
        "reorder_cache."
    ),
}


# What a report compared (CacheReport.compared), in words an app can say in its user's language
# (tracer.i18n.reword).
COMPARED = N_("{what} with use_cache=True vs use_cache=False, {method}, {count} new tokens{rest}")
COMPARED_BATCH = N_(", a batch of {size} prompts padded on the {side}")
COMPARED_EXTRA = N_("; the cached run also got {given}")
COMPARED_ROW = N_(
    "row {row} of a batch of {size} prompts (padded on the {side}) vs the same prompt generated alone, "
    "{method}, use_cache={use_cache}, {count} new tokens{rest}"
)
COMPARED_ROW_EXTRA = N_("; the batch also got {given}")
# The words inside those fields, for tracer.i18n.reword.
COMPARED_FIELDS = {
    "what": (N_("your decoding loop"),),
    "method": (N_("greedy"), N_("beam search with {beams} beams")),
    "rest": (
        N_(", a batch of {size} prompts padded on the {side}; the cached run also got {given}"),
        COMPARED_BATCH,
        COMPARED_EXTRA,
        COMPARED_ROW_EXTRA,
    ),
    "side": (N_("left"), N_("right")),
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
    # Batches and beams. The defaults are one prompt, cache on vs off: report files written before
    # these fields existed load as such.
    comparison: str = "cache"  # "cache": cache on vs off | "row-vs-alone": a batch's row vs its prompt alone
    row: int | None = None  # the batch row `steps` are of (the row that parts first, or the row compared)
    beam: int | None = None  # beam search: that row's beam `steps` are of
    num_beams: int = 1
    rows_compared: int = 1  # sequences compared one by one: rows x beams
    divergent_rows: list[int] = field(default_factory=list)  # the ones that part: row * num_beams + beam

    @property
    def sides(self) -> tuple[str, str]:
        """The two runs in words: ("cached", "uncached") or ("row 1 of the batch", "the prompt alone")."""
        return side_names(self)

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
    prompt: str | list[str] | None = None,
    *,
    input_ids: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    padding_side: str | None = None,
    num_beams: int = 1,
    max_new_tokens: int = 8,
    tolerance: Tolerance | None = None,
    loop: Callable[..., torch.Tensor] | None = None,
    cached_kwargs: dict[str, Any] | Callable[[], dict[str, Any]] | None = None,
    model_name: str | None = None,
    **model_kwargs: Any,
) -> CacheReport:
    """Run greedy generation (or beam search) with the cache on and off, and compare them step by step.

    `prompt` is a text or a batch of texts (padded on `padding_side`, as in `trace_generation`);
    or give `input_ids` [batch, len] with their `attention_mask`. Every row of a batch, and every
    beam with `num_beams > 1`, is compared one by one: the report's steps are of the first that
    parts (`row`, `beam`), and `divergent_rows` lists all that do.
    `model_kwargs` (e.g. pixel_values) go to both runs. `cached_kwargs` go to the cached run only:
    a dict, or a function returning one, called right before that run (e.g. a cache to start
    from). `loop`, if given, is a hand-written decoding loop compared instead of generate():
    `loop(model, input_ids, attention_mask, *, max_new_tokens, use_cache, **model_kwargs) -> ids`
    (see `trace_loop`). `tolerance` defaults to `Tolerance.for_dtype(model's dtype)`.
    """
    dtype = _model_dtype(model)
    tol = tolerance or Tolerance.for_dtype(dtype)
    if model_kwargs.get("do_sample"):
        raise templated(
            StepwiseInputError,
            N_(
                "The cache doctor compares greedy runs (one token per step, the most likely one) or beam "
                "search: drop do_sample=True; the other settings come from the model's generation_config."
            ),
        )
    # Greedy search (or the beams asked for) is the doctor's method, passed as the caller's settings
    # (and recorded so); the rest (no_repeat_ngram_size, eos ids, ...) comes from the model's
    # generation_config, as in generate().
    greedy = {"do_sample": False, "num_beams": num_beams}
    model_kwargs = {k: v for k, v in model_kwargs.items() if k not in greedy}
    common = dict(input_ids=input_ids, max_new_tokens=max_new_tokens, model_name=model_name)
    batch = dict(attention_mask=attention_mask, padding_side=padding_side)
    batch = {k: v for k, v in batch.items() if v is not None}

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
            **batch,
            **common,
            **model_kwargs,
            **extra,
        )

    uncached = run(False, {})
    extra = cached_kwargs() if callable(cached_kwargs) else dict(cached_kwargs or {})
    cached = run(True, extra)

    what = "your decoding loop" if loop is not None else "model.generate()"
    rest = ""
    if cached.batch is not None:
        rest += COMPARED_BATCH.format(size=cached.batch.size, side=cached.batch.padding_side)
    if extra:
        rest += COMPARED_EXTRA.format(given=", ".join(f"{k}={describe(v)}" for k, v in extra.items()))
    compared = COMPARED.format(what=what, method=_method(num_beams), count=max_new_tokens, rest=rest)
    return compare_traces(cached, uncached, tol, compared=compared, dtype=str(dtype).removeprefix("torch."))


def _method(num_beams: int) -> str:
    return "greedy" if num_beams == 1 else COMPARED_FIELDS["method"][1].format(beams=num_beams)


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
    cached: Trace,
    uncached: Trace,
    tol: Tolerance,
    *,
    compared: str = "",
    dtype: str = "float32",
    comparison: str = "cache",
    row: int = 0,
) -> CacheReport:
    """Compare two traces step by step, every sequence of them one by one (batch rows x beams).

    `comparison="cache"`: a cached and an uncached trace of the same prompt or batch.
    `comparison="row-vs-alone"`: row `row` of a batch (`cached`, with its beams) and the same
    prompt generated alone (`uncached`, the reference), compared over the steps both have.
    """
    num_beams = _num_beams(cached)
    if comparison == "row-vs-alone":
        pairs = [(row * num_beams + j, j) for j in range(num_beams)]
        last = min(len(cached.steps), len(uncached.steps))  # a row ended early is fed pads after its end
    else:
        pairs = [(i, i) for i in range(cached.batch_size * num_beams)]
        last = None
    results = [_compare_pair(cached, uncached, tol, a, b, num_beams, last) for a, b in pairs]
    chosen = min(range(len(results)), key=lambda k: _parting_order(results[k], k))
    rows, first_step, first_layer, kind = results[chosen]
    batch_row, beam = divmod(pairs[chosen][0], num_beams)
    report_args = dict(
        first_divergent_step=first_step,
        first_divergent_layer=first_layer,
        max_logit_diff=[math.nan if r.logit_diff is None else r.logit_diff for r in rows],
        cached_error=cached.error,
        uncached_error=uncached.error,
        kind=kind,
        compared=compared or "cached vs uncached traces",
        tolerance=tol,
        dtype=dtype,
        steps=rows,
        cached=cached,
        uncached=uncached,
        comparison=comparison,
        row=batch_row if (cached.batch is not None or comparison == "row-vs-alone") else None,
        beam=beam if num_beams > 1 else None,
        num_beams=num_beams,
        rows_compared=len(pairs),
        divergent_rows=[pairs[k][0] for k, r in enumerate(results) if r.kind != "consistent"],
    )
    suspects = _all_suspects(cached, uncached, first_step, comparison, batch_row)
    report = CacheReport(consistent=kind == "consistent", suspects=suspects, summary="", **report_args)
    # The English summary is the one the app says again in its user's language: one code path.
    return replace(report, summary=summary_in(report, untranslated))


class _Parting(NamedTuple):
    """How one pair of sequences compares: its steps, where it parts (if it does), and how."""

    rows: list[StepComparison]
    first_step: int | None
    first_layer: int | None
    kind: str


def _parting_order(result: _Parting, k: int) -> tuple[float, float, int]:
    """Sort key: the sequence that parts first (earliest step, then lowest layer) comes first."""
    if result.first_step is None:
        return (math.inf, math.inf, k)
    return (result.first_step, math.inf if result.first_layer is None else result.first_layer, k)


def _num_beams(tr: Trace) -> int:
    return int(tr.settings.get("num_beams") or 1)


def _compare_pair(
    cached: Trace, uncached: Trace, tol: Tolerance, a: int, b: int, num_beams: int, last: int | None
) -> _Parting:
    """Sequence `a` of `cached` against sequence `b` of `uncached`, step by step (up to `last`)."""
    rows: list[StepComparison] = []
    first_step: int | None = None
    first_layer: int | None = None
    kind = "consistent"
    flipped_at: int | None = None  # a near-tie token flip: the runs continue different texts after it
    num_layers = max(cached.num_layers, uncached.num_layers)
    ce, ue = cached.error, uncached.error

    if last is None:
        last = max(len(cached.steps), len(uncached.steps))
    last = max([last, *(e.step + 1 for e in (ce, ue) if e is not None)])
    for i in range(last):
        c = cached.steps[i] if i < len(cached.steps) else None
        u = uncached.steps[i] if i < len(uncached.steps) else None
        c_failed = ce is not None and ce.step == i
        u_failed = ue is not None and ue.step == i
        row = _compare_step(i, c, u, num_layers, tol, a, b, num_beams)
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
    return _Parting(rows, first_step, first_layer, kind)


def _newest(step: Step | None, event_name: str, key: str, row: int) -> np.ndarray | None:
    """Sequence `row`'s captured vector `key` ([batch, ...] in the event) at this step, if there is one."""
    event = None if step is None else step.event(event_name)
    if event is None or key not in event.tensors or row >= event.tensors[key].shape[0]:
        return None
    return event.tensors[key][row]


def _row_token(step: Step | None, row: int, num_beams: int) -> int | None:
    """The token sequence `row` took at this step: its choice, or with beams the token its beam kept."""
    if step is None:
        return None
    if num_beams > 1:
        prompt, beam = divmod(row, num_beams)
        kept = step.beams.tokens if step.beams is not None else []
        return kept[prompt][beam] if prompt < len(kept) and beam < len(kept[prompt]) else None
    if step.rows:
        return step.rows[row].chosen_id if row < len(step.rows) else None
    return step.chosen_id if row == 0 else None


def _compare_step(
    i: int,
    c: Step | None,
    u: Step | None,
    num_layers: int,
    tol: Tolerance,
    a: int = 0,
    b: int = 0,
    num_beams: int = 1,
) -> StepComparison:
    c_token = _row_token(c, a, num_beams)
    u_token = _row_token(u, b, num_beams)
    logit_diff = logit_limit = None
    layer_diffs, layer_limits = [], []
    if c is not None and u is not None:
        for layer in range(num_layers):
            hidden_a = _newest(c, names.decoder_layer(layer), "hidden_last", a)  # [hidden]
            hidden_b = _newest(u, names.decoder_layer(layer), "hidden_last", b)
            if hidden_a is None or hidden_b is None:
                break  # e.g. the step failed before this layer
            diff, limit = compare(hidden_a, hidden_b, tol)
            layer_diffs.append(diff)
            layer_limits.append(limit)
        logits_a = _newest(c, names.FORWARD, "logits_last", a)  # [vocab]
        logits_b = _newest(u, names.FORWARD, "logits_last", b)
        if logits_a is not None and logits_b is not None:
            logit_diff, logit_limit = compare(logits_a, logits_b, tol)
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


def _tolerance_words(tol: Tolerance, dtype: str, _: Gettext) -> str:
    return _("rtol {rtol:g}, atol {atol:g} for {dtype}").format(rtol=tol.rtol, atol=tol.atol, dtype=dtype)


def _agreeing(rows: list[StepComparison]) -> tuple[list[StepComparison], float]:
    """The steps compared and found the same (a near-tie flip counts), and their largest logit difference."""
    compared = [r for r in rows if r.compared and r.status in ("same", "noise-flip")]
    return compared, max((r.logit_diff for r in compared), default=0.0)


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
    tol_words = _tolerance_words(tol, dtype, _)
    if kind == "consistent":
        compared, worst = _agreeing(rows)
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
        lines += _fix_lines(suspects, _)
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
    """The report's summary in the language of `_`, from its rows, suspects and traces: with
    `untranslated`, the English `report.summary` (compare_traces writes it so, and the command line
    prints it)."""
    suspects = suspects_in(report, _)
    flipped = next((r.index for r in report.steps if r.status == "noise-flip"), None)
    if report.comparison == "row-vs-alone":
        return _alone_summary(report, suspects, flipped, _)
    summary = _summary(
        report.cached,
        report.uncached,
        report.steps,
        report.first_divergent_step,
        report.first_divergent_layer,
        report.kind,
        suspects,
        flipped,
        report.tolerance,
        report.dtype,
        _,
    )
    return " ".join([summary, *_batch_lines(report, _)])


def suspects_in(report: CacheReport, _: Gettext) -> list[Suspect]:
    """The report's suspects with their reasons in the language of `_` (found again from its traces)."""
    if _ is untranslated:
        return list(report.suspects)
    return _all_suspects(
        report.cached, report.uncached, report.first_divergent_step, report.comparison, report.row, _
    )


def _all_suspects(
    cached: Trace,
    uncached: Trace,
    step: int | None,
    comparison: str,
    row: int | None,
    _: Gettext = untranslated,
) -> list[Suspect]:
    """Every suspect of a comparison that parts at `step`; `row`: the batch row its steps are of."""
    if step is None:
        return []
    if comparison == "row-vs-alone":
        return find_row_suspects(cached, uncached, row or 0, step, _=_)
    suspects = find_suspects(cached, uncached, step, _=_)
    if _has_pads(cached):
        # find_suspects reads row 0's positions against the cache length, which a padded row does not follow.
        suspects = [s for s in suspects if s.kind != "positions"]
        suspects += _batch_position_suspects(cached, None, row or 0, step, "cached", _)
    return suspects + _beam_suspects(cached, step, "cached", _)


# ---------------------------------------------------------------------------------------------
# The report as text (the command line prints it)


def report_text(report: CacheReport) -> str:
    """The report as a few lines of text: one row per step, then the summary."""
    a, b = ("cached", "uncached") if report.comparison == "cache" else ("batch row", "alone")
    lines = [report.compared, f"{'step':>4}  {a:<14} {b:<14} {'logit diff':>11}  status"]
    for r in report.steps:
        diff = "-" if r.logit_diff is None else f"{r.logit_diff:.2e}"
        c = "(failed)" if r.cached_token is None else repr(report.cached.token_text(r.cached_token))
        u = "(failed)" if r.uncached_token is None else repr(report.uncached.token_text(r.uncached_token))
        lines.append(f"{r.index:>4}  {c:<14} {u:<14} {diff:>11}  {r.status}")
    lines.append("")
    lines.append(("CONSISTENT: " if report.consistent else "NOT CONSISTENT: ") + report.summary)
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Batches and beams: the two sides' names, suspects, and the summary's extra lines


def side_names(report: CacheReport, _: Gettext = untranslated) -> tuple[str, str]:
    """The two runs in words: ("cached", "uncached"), or ("row 1 of the batch", "the prompt alone")."""
    if report.comparison == "row-vs-alone":
        return _("row {row} of the batch").format(row=report.row), _("the prompt alone")
    return _("cached"), _("uncached")


def sequence_name(report: CacheReport, flat: int, _: Gettext = untranslated) -> str:
    """A compared sequence by its flat index (row * num_beams + beam), in words: "row 1", "row 1, beam 2"."""
    row, beam = divmod(flat, report.num_beams)
    if report.num_beams == 1:
        return _("row {row}").format(row=row)
    if report.row is None:
        return _("beam {beam}").format(beam=beam)
    return _("row {row}, beam {beam}").format(row=row, beam=beam)


def _pads(tr: Trace, row: int) -> tuple[list[bool], list[bool]]:
    """Row `row`'s prompt positions: (masked, pad id but not masked). A pad the mask does not cover is
    one generate() was not told about (no attention_mask passed, and not inferred)."""
    batch = tr.batch
    if batch is None:
        return [], []
    mask, ids = batch.attention_mask[row], batch.prompt_ids[row]
    masked = [m == 0 for m in mask]
    unmasked = [i == batch.pad_token_id and m != 0 for i, m in zip(ids, mask, strict=True)]
    return masked, unmasked


def _padding_side(tr: Trace) -> str:
    """Where the batch's pads are: read off the pads themselves, masked or not (a batch traced from ids
    without their mask records no side of its own)."""
    rows = [[m or u for m, u in zip(*_pads(tr, r), strict=True)] for r in range(tr.batch.size)]
    if any(row and row[-1] for row in rows):
        return "right"
    return "left" if any(any(row) for row in rows) else tr.batch.padding_side


def _has_pads(tr: Trace) -> bool:
    return tr.batch is not None and any(any(p) for r in range(tr.batch.size) for p in _pads(tr, r))


def find_row_suspects(
    batch: Trace, alone: Trace, row: int, step: int, *, _: Gettext = untranslated
) -> list[Suspect]:
    """Why row `row` of `batch` parts from its prompt generated `alone` at `step`: its padding, its
    positions, its encoder mask, a cache that ignores the beams' reorder. The reasons are in English
    unless `_` (a gettext) says them in another language."""
    suspects: list[Suspect] = []
    masked, unmasked = _pads(batch, row)
    pads = [m or u for m, u in zip(masked, unmasked, strict=True)]
    count = sum(pads)
    side = "right" if pads and pads[-1] else "left"
    pad_id = batch.batch.pad_token_id if batch.batch is not None else None
    pad_word = _("pad") if pad_id is None else f"{batch.token_text(pad_id)} (id {pad_id})"
    first = batch.steps[0] if batch.steps else None
    if batch.encoder_decoder:
        if any(unmasked):
            encoder_ran = first is not None and first.event(names.ENCODER) is not None
            given = first is not None and isinstance(first.prepare_inputs.get("attention_mask"), TensorInfo)
            readers = (
                _("the encoder and every decoder layer's cross-attention")
                if encoder_ran
                else _("every decoder layer's cross-attention (the encoder outputs were given)")
            )
            how = (
                _("its attention mask does not cover them")
                if given
                else _("no attention_mask reached generate()")
            )
            suspects.append(Suspect(step, "batch", "attention_mask", None, "encoder-mask", _(
                "Row {row}'s source holds {count} {pad} position(s), and {how}: {readers} read(s) the pads "
                "as if they were words of the source, from step 0 on."
            ).format(row=row, count=sum(unmasked), pad=pad_word, how=how, readers=readers)))  # fmt: skip
        elif side == "left" and any(masked):
            suspects.append(Suspect(step, "batch", "input_ids", (len(pads),), "encoder-left-padding", _(
                "Row {row}'s source is padded on the left with {count} pad(s): its real tokens sit at "
                "encoder positions {count}..{last} instead of 0..{alone_last}, and the encoder's learned "
                "positions count the columns, pads included."
            ).format(row=row, count=count, last=len(pads) - 1,
                     alone_last=len(pads) - count - 1)))  # fmt: skip
    elif any(unmasked) and not _masked_by_generate(first, row * _num_beams(batch), unmasked):
        suspects.append(Suspect(step, "batch", "attention_mask", None, "decoder-mask", _(
            "Row {row}'s prompt holds {count} {pad} position(s) that its attention mask does not cover: "
            "no attention_mask reached generate(), and it infers one from the pad ids only when the pad id "
            "is not an eos id. The row's tokens attend to the pads as if they were words."
        ).format(row=row, count=sum(unmasked), pad=pad_word)))  # fmt: skip
    if not batch.encoder_decoder and count and side == "right":
        suspects.append(Suspect(step, "batch", "input_ids", (len(pads),), "right-padding", _(
            "Row {row}'s prompt ends in {count} pad(s) (the batch is padded on the right): generate() "
            "appends each new token after the pads, so the first one is predicted at a pad position, not at "
            "the prompt's last word, and every later token sits behind the pads."
        ).format(row=row, count=count)))  # fmt: skip
    if not batch.encoder_decoder:
        suspects += _batch_position_suspects(batch, alone, row, step, "batch", _)
    suspects += _beam_suspects(batch, step, "batch", _) + _beam_suspects(alone, step, "alone", _)
    return suspects


def _masked_by_generate(step: Step | None, row: int, unmasked: list[bool]) -> bool:
    """Whether the mask the model got at `step` hides the pads the caller's mask did not (generate()
    infers a decoder-only model's mask from the pad ids when it can)."""
    fed = None if step is None else _row_values(step, "attention_mask", row)
    if fed is None or len(fed) != len(unmasked):
        return False
    return all(m == 0 for m, pad in zip(fed, unmasked, strict=True) if pad)


def _row_values(step: Step, key: str, row: int) -> list[int] | None:
    """Row `row` of the [batch, len] integers fed as `key` at this step (positions, a mask), if recorded."""
    info = step.prepare_inputs.get(key)
    if not isinstance(info, TensorInfo) or info.values is None or len(info.shape) != 2:
        return None
    if info.shape[0] == 1:  # [1, len]: one row of positions, broadcast over the batch
        row = 0
    return info.array()[row].tolist() if row < info.shape[0] else None


def _batch_position_suspects(
    batch: Trace, alone: Trace | None, row: int, step: int, run: str, _: Gettext = untranslated
) -> list[Suspect]:
    """position_ids of row `row` at `step` that do not follow its attention mask: compared with the
    prompt generated alone when there is one, else with the mask's own count (cumsum - 1)."""
    if batch.batch is None or step >= len(batch.steps):
        return []
    key = "decoder_position_ids" if batch.encoder_decoder else "position_ids"
    got = _row_values(batch.steps[step], key, row * _num_beams(batch))
    masked, unmasked = _pads(batch, row)
    # Every position so far, 1 where it is real: the prompt's, then one per token generated.
    mask = [0 if m or u else 1 for m, u in zip(masked, unmasked, strict=True)] + [1] * step
    if got is None or len(got) > len(mask):
        return []
    fed_mask = mask[len(mask) - len(got) :]
    got = [g for g, real in zip(got, fed_mask, strict=True) if real]
    if alone is not None:
        want = _row_values(alone.steps[step], key, 0) if step < len(alone.steps) else None
    else:
        counted = (np.cumsum(mask) - 1)[len(mask) - len(fed_mask) :].tolist()
        want = [c for c, real in zip(counted, fed_mask, strict=True) if real]
    if want is None or len(got) != len(want) or got == want:
        return []
    return [Suspect(step, run, key, (len(got),), "batch-positions", _(
        "{name} of row {row}'s real tokens at step {step} are {got}, but they belong at {want} (counted "
        "from the row's first real token, as its attention mask says): the positions are not derived from "
        "the mask."
    ).format(name=key, row=row, step=step, got=got, want=want))]  # fmt: skip


def _beam_suspects(tr: Trace, step: int, run: str, _: Gettext = untranslated) -> list[Suspect]:
    """The first beam-search reorder before `step` that some cache layer did not apply."""
    for s in tr.steps[:step]:
        beams = s.beams
        if beams is None or beams.reorder is None or all(beams.reorder_applied):
            continue
        stale = [i for i, ok in enumerate(beams.reorder_applied) if not ok]
        layers = ", ".join(map(str, stale))
        return [Suspect(step, run, "past_key_values", None, "beam-reorder", _(
            "After step {step}, beam search kept the beams {reorder} (each the row it continues) and called "
            "the cache's reorder_cache with them, but cache layer(s) {layers} did not move their rows so "
            "(keys and values compared): from step {next} each beam reads another beam's past."
        ).format(step=s.index, reorder=beams.reorder, layers=layers, next=s.index + 1))]  # fmt: skip
    return []


def _fix_lines(suspects: list[Suspect], _: Gettext = untranslated) -> list[str]:
    """What does not fit, and the usual fix for each kind of it, once."""
    if not suspects:
        return []
    kinds = list(dict.fromkeys(s.kind for s in suspects))
    return [
        _("What does not fit:") + " " + " ".join(s.reason for s in suspects),
        _("The usual fix:") + " " + " ".join(_(USUAL_FIX[k]) for k in kinds),
    ]


# The sequences a batch or beam search compared one by one, counted (a count with its noun: a bare
# "rows" would be a msgid every English "rows" of the app is checked against).
COUNTED_SEQUENCES = {
    "rows x beams": N_("{count} sequences (rows x beams)"),
    "beams": N_("{count} beams"),
    "rows": N_("{count} rows"),
}


def _batch_lines(report: CacheReport, _: Gettext = untranslated) -> list[str]:
    """The summary's lines on a batch or beams (cache on vs off): which sequences part, the reorders."""
    if report.rows_compared <= 1 and report.num_beams == 1:
        return []
    lines = []
    units = ("rows x beams" if report.row is not None else "beams") if report.num_beams > 1 else "rows"
    counted = _(COUNTED_SEQUENCES[units]).format(count=report.rows_compared)
    shown = sequence_name(report, (report.row or 0) * report.num_beams + (report.beam or 0), _)
    if report.divergent_rows:
        parted = ", ".join(sequence_name(report, r, _) for r in report.divergent_rows)
        lines.append(
            _(
                "{counted} were compared one by one; {parted} part(s). The steps above are of {shown}, the "
                "first to part."
            ).format(counted=counted, parted=parted, shown=shown)
        )
    else:
        lines.append(_("All {counted} were compared one by one, and all agree.").format(counted=counted))
    if report.num_beams > 1:
        moved = [s for s in report.cached.steps if s.beams is not None and s.beams.reorder is not None]
        missed = [s.index for s in moved if not all(s.beams.reorder_applied)]
        if moved and not missed:
            lines.append(
                _("Every layer of the cache applied each of the {count} beam reorder(s).").format(
                    count=len(moved)
                )
            )
        elif missed:
            lines.append(
                _("Some cache layers did not apply the beam reorder after step(s) {steps}.").format(
                    steps=", ".join(map(str, missed))
                )
            )
    if report.cached.batch is not None and not report.cached.encoder_decoder:
        right = [r for r in range(report.cached.batch.size) if (p := _pads(report.cached, r)[0]) and p[-1]]
        if right:
            lines.append(
                _(
                    "Row(s) {rows} are padded on the right: cache on and off may agree and still part from "
                    "the prompt generated alone; compare a row with its prompt alone "
                    "(tracer.compare_row_with_alone)."
                ).format(rows=", ".join(map(str, right)))
            )
    return lines


def _alone_summary(
    report: CacheReport, suspects: list[Suspect], flipped_at: int | None, _: Gettext = untranslated
) -> str:
    """The summary of a row compared with its prompt generated alone, in the language of `_` (as are
    `suspects`)."""
    batch, alone, rows, step = report.cached, report.uncached, report.steps, report.first_divergent_step
    tol_words = _tolerance_words(report.tolerance, report.dtype, _)
    if report.kind == "consistent":
        compared, worst = _agreeing(rows)
        fields = dict(row=report.row, count=len(compared), worst=worst, tolerance=tol_words)
        if report.num_beams > 1:
            line = _(
                "Row {row} of the batch equals the same prompt generated alone (all {beams} beams, one by "
                "one): the same logits and layer outputs over {count} step(s) (largest logit difference "
                "{worst:.2g}, within {tolerance})."
            ).format(beams=report.num_beams, **fields)
        else:
            line = _(
                "Row {row} of the batch equals the same prompt generated alone: the same logits and layer "
                "outputs over {count} step(s) (largest logit difference {worst:.2g}, within {tolerance})."
            ).format(**fields)
        lines = [line]
        if flipped_at is not None:
            r = rows[flipped_at]
            lines.append(
                _(
                    "At step {step} the token differs ({batch} vs {alone}) although the logits agree within "
                    "the tolerance: a near tie decided by rounding. Later steps continue different texts and "
                    "were not compared."
                ).format(
                    step=flipped_at,
                    batch=_tok(batch, r.cached_token, _),
                    alone=_tok(alone, r.uncached_token, _),
                )
            )
        return " ".join(lines)
    if report.kind in ("error", "both-failed"):
        e = batch.error or alone.error
        failing = {
            (True, False): _("Generating the batch fails at step {step}: {error}: {message}."),
            (False, True): _("Generating the prompt alone fails at step {step}: {error}: {message}."),
            (True, True): _(
                "Generating the batch and the prompt alone fails at step {step}: {error}: {message}."
            ),
        }[(batch.error is not None, alone.error is not None)]
        lines = [failing.format(step=step, error=e.type, message=e.message)]
    else:
        row = rows[step]
        if report.first_divergent_layer is not None:
            layer = report.first_divergent_layer
            where = _(
                "decoder layer {layer}'s output at the newest position differs by {diff:.3g} "
                "(noise allows {limit:.2g})"
            ).format(layer=layer, diff=row.layer_diffs[layer], limit=row.layer_limits[layer])
        elif row.logit_diff is not None:
            where = _("the logits differ by {diff:.3g} (noise allows {limit:.2g})").format(
                diff=row.logit_diff, limit=row.logit_limit
            )
        else:
            where = _("one run stopped while the other went on")
        parts = (
            _(
                "Row {row} of the batch, beam {beam} parts from the same prompt generated alone at step "
                "{step}: {where}."
            )
            if report.beam is not None
            else _(
                "Row {row} of the batch parts from the same prompt generated alone at step {step}: {where}."
            )
        )
        lines = [parts.format(row=report.row, beam=report.beam, step=step, where=where)]
        if row.cached_token is not None and row.cached_token == row.uncached_token:
            lines.append(
                _("The token is still the same there ({token}).").format(
                    token=_tok(batch, row.cached_token, _)
                )
            )
        elif row.cached_token is not None or row.uncached_token is not None:
            lines.append(
                _("The batch row takes {batch}, the prompt alone {alone}.").format(
                    batch=_tok(batch, row.cached_token, _), alone=_tok(alone, row.uncached_token, _)
                )
            )
    fix = _fix_lines(suspects, _)
    if fix:
        lines += fix
    elif report.kind == "divergence":
        lines.append(
            _(
                "No padding, position or mask problem was found; look at what this layer reads at this step "
                "(the row's keys, values, mask and positions beside the prompt alone's)."
            )
        )
    return " ".join(lines)


# ---------------------------------------------------------------------------------------------
# A row of a batch vs the same prompt generated alone


def compare_row_with_alone(
    model,
    tok=None,
    prompts: list[str] | None = None,
    row: int = 0,
    *,
    input_ids: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    padding_side: str | None = None,
    num_beams: int = 1,
    use_cache: bool = True,
    max_new_tokens: int = 8,
    tolerance: Tolerance | None = None,
    batch_kwargs: dict[str, Any] | Callable[[], dict[str, Any]] | None = None,
    model_name: str | None = None,
    **model_kwargs: Any,
) -> CacheReport:
    """Generate a batch and row `row`'s prompt alone (greedy, or beam search), and compare them step by step.

    A row of a correctly padded batch is the same computation as its prompt alone, up to rounding:
    the report says where it parts, and why (padding, positions, a missing encoder mask, a cache
    that ignores the beams' reorder). Give `prompts` (texts, padded on `padding_side`) or
    `input_ids` [batch, len] with or without their `attention_mask` (without: the pads are the pad
    id's positions, as they reach the model unmasked). `batch_kwargs` go to the batch run only
    (a dict, or a function returning one, called right before it); `model_kwargs` to both runs.
    The report's `cached` side is the batch, `uncached` the prompt alone (the reference).
    """
    if model_kwargs.get("do_sample"):
        raise templated(
            StepwiseInputError,
            N_("The doctor compares greedy runs or beam search, which repeat exactly: drop do_sample=True."),
        )
    size = (
        len(prompts)
        if prompts is not None and not isinstance(prompts, str)
        else (
            int(input_ids.shape[0])
            if input_ids is not None and getattr(input_ids, "dim", lambda: 1)() == 2
            else 1
        )
    )
    if size < 2:
        raise templated(
            StepwiseInputError,
            N_(
                "Comparing a row with its prompt alone needs a batch: give two prompts or more (or input_ids "
                "[batch, len] with batch >= 2)."
            ),
        )
    if not isinstance(row, int) or not 0 <= row < size:
        raise templated(
            StepwiseInputError,
            N_("row must be one of 0..{last} (the batch has {size} rows); got {row}."),
            last=size - 1,
            size=size,
            row=repr(row),
        )
    dtype = _model_dtype(model)
    tol = tolerance or Tolerance.for_dtype(dtype)
    settings = dict(
        do_sample=False,
        num_beams=num_beams,
        use_cache=use_cache,
        max_new_tokens=max_new_tokens,
        capture_attention=False,
        model_name=model_name,
    )
    model_kwargs = {k: v for k, v in model_kwargs.items() if k not in settings}
    extra = batch_kwargs() if callable(batch_kwargs) else dict(batch_kwargs or {})
    batch = trace_generation(
        model,
        tok,
        prompts,
        input_ids=input_ids,
        attention_mask=attention_mask,
        padding_side=padding_side,
        **settings,
        **model_kwargs,
        **extra,
    )
    if prompts is not None:
        alone = trace_generation(model, tok, prompts[row], **settings, **model_kwargs)
    else:
        masked, unmasked = _pads(batch, row)
        ids = batch.batch.prompt_ids[row]
        real = [i for i, m, u in zip(ids, masked, unmasked, strict=True) if not (m or u)]
        alone = trace_generation(model, tok, input_ids=torch.tensor([real]), **settings, **model_kwargs)
    given = ", ".join(f"{k}={describe(v)}" for k, v in extra.items())
    compared = COMPARED_ROW.format(
        row=row,
        size=size,
        side=_padding_side(batch),
        method=_method(num_beams),
        use_cache=use_cache,
        count=max_new_tokens,
        rest=COMPARED_ROW_EXTRA.format(given=given) if extra else "",
    )
    return compare_traces(
        batch,
        alone,
        tol,
        compared=compared,
        dtype=str(dtype).removeprefix("torch."),
        comparison="row-vs-alone",
        row=row,
    )
