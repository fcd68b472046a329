"""Step rules: where a step begins and ends, one rule per kind of run.

The Recorder's hooks record events; a step rule decides which step they belong to:

- `GenerateSteps`: `generate()`. Each call of `prepare_inputs_for_generation` begins a step, and
  the token choice ends it: a StoppingCriteria that generate() calls right after choosing, with
  the processed scores (after temperature, top-k, ...), exactly the distribution sampled from.
- `LoopSteps`: a hand-written decoding loop that calls the model itself. Each forward call
  begins a step; the token it chose is the last id the loop feeds next (or, for the last step,
  the last id of the sequence the loop returns), drawn from the raw logits.
- `SinglePass`: one forward pass with no steps (the training trace): every event is loose.

A new kind of run (beams, say) is a new rule here, not flags inside the others.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from transformers import StoppingCriteria

from tracer import names
from tracer.record.events import TOP_K, OpenEvent, cache_parts, summarize_all, top_k
from tracer.trace import BeamChoice, BeamResult, RowChoice, TopToken

if TYPE_CHECKING:
    from tracer.record import Recorder


class StepRule:
    """Where steps begin and end. `install` puts the rule's own watchers on the model."""

    # How the token-choice event names what chose the token.
    choice_module = ""

    def install(self, rec: Recorder) -> None:
        self.rec = rec

    def close_current(self, chosen_ids: torch.Tensor, scores: torch.Tensor | None) -> None:
        """End the open step with the tokens chosen ([batch]) and the scores they came from."""
        step = self.rec.log.current
        if step is not None and not step.closed:
            self.rec.log.close_step(step, chosen_ids, scores, self.choice_module)


class GenerateSteps(StepRule):
    """generate(): prepare_inputs_for_generation begins a step, the token choice ends it."""

    choice_module = "generate (token choice)"

    def install(self, rec: Recorder) -> None:
        super().install(rec)
        rec.hooks.wrap_method("prepare_inputs_for_generation", self._wrap_prepare)

    def started(self, step, input_ids: Any, model_inputs: dict) -> None:
        """Called once a step's model inputs are prepared (a rule that follows more than tokens)."""

    def token_chosen(self, input_ids: torch.Tensor, scores: torch.Tensor | None) -> None:
        """generate() chose each row's token: the last column of `input_ids` [batch, len]."""
        self.close_current(input_ids[:, -1], scores)

    def token_choice(self) -> StoppingCriteria:
        """The criterion to hand generate(): it sees each chosen token, and never stops the run."""
        return _TokenChoice(self)

    def _wrap_prepare(self, original):
        parameters = list(inspect.signature(original).parameters)
        log = self.rec.log

        # functools.wraps keeps the signature: generate() reads it to decide which kwargs it accepts.
        @functools.wraps(original)
        def prepare_inputs_for_generation(*args, **kwargs):
            called_with = dict(zip(parameters, args, strict=False)) | kwargs
            step = log.open_step(args[0] if args else None)
            event = log.append(OpenEvent(names.PREPARE_INPUTS, "prepare_inputs_for_generation"))
            try:
                model_inputs = original(*args, **kwargs)
            except BaseException:
                event.inputs = step.prepare_inputs_args = summarize_all(called_with)
                event.error = "raised"
                log.failed_at = log.failed_at or names.PREPARE_INPUTS
                raise
            step.live_cache = model_inputs.get("past_key_values")
            log.feeding(fed_ids(model_inputs))
            log.describe_prepare(step, event, called_with, dict(model_inputs))
            self.started(step, args[0] if args else None, model_inputs)
            return model_inputs

        return prepare_inputs_for_generation


def fed_ids(model_inputs: dict) -> torch.Tensor | None:
    """The ids a step feeds the decoder ([batch, new positions]); None when it feeds embeddings."""
    if any(model_inputs.get(key) is not None for key in ("inputs_embeds", "decoder_inputs_embeds")):
        return None
    ids = model_inputs.get("decoder_input_ids")
    return model_inputs.get("input_ids") if ids is None else ids


class _TokenChoice(StoppingCriteria):
    """generate() calls stopping criteria right after the token is chosen; this one closes the step.

    With `output_scores=True` it gets the processed scores (after the logits processors and
    warpers). It never stops generation itself.
    """

    def __init__(self, rule: GenerateSteps):
        self.rule = rule
        self._never: torch.Tensor | None = None  # [batch] of False, made once: generate() only reads it

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        self.rule.token_chosen(input_ids, scores[-1] if scores else None)
        never = self._never
        if never is None or never.shape[0] != input_ids.shape[0] or never.device != input_ids.device:
            never = self._never = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        return never


class LoopSteps(StepRule):
    """A hand-written loop: each forward call begins a step; what the loop feeds next ends the last one.

    No prepare_inputs_for_generation call and no stopping criterion mark the steps, so the
    token a step chose is read from the next call's input (its last fed id), or for the last step
    from the sequence the loop returns (`finish`), and its distribution is the raw logits.
    """

    choice_module = "hand-written loop (next token fed)"

    def install(self, rec: Recorder) -> None:
        super().install(rec)
        self._last_logits: torch.Tensor | None = None  # [batch, vocab] of the newest position
        # Installed before the hook points, so the step is open before any event of the call.
        rec.hooks.on_call(rec.model, self._forward_starts, self._forward_ends)

    def _forward_starts(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        fed = dict(kwargs)
        if args:
            fed["input_ids"] = args[0]
        ids = fed.get("input_ids", fed.get("decoder_input_ids"))
        if isinstance(ids, torch.Tensor):
            self.close_current(ids[:, -1], self._last_logits)
        step = self.rec.log.open_step(
            ids, prepare_inputs=summarize_all({k: v for k, v in fed.items() if v is not None})
        )
        step.live_cache = fed.get("past_key_values")
        self.rec.log.feeding(fed_ids(fed))

    def _forward_ends(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        step = self.rec.log.current
        if step is None or output is None:
            return
        cache = getattr(output, "past_key_values", None)
        if cache is not None:  # the first call creates the cache inside the model
            step.live_cache = cache
        logits = getattr(output, "logits", None)  # [batch, seq, vocab]
        self._last_logits = logits[:, -1, :].detach() if isinstance(logits, torch.Tensor) else None

    def finish(self, sequence: torch.Tensor) -> None:
        """Close the last step with the last id of the sequence the loop returned ([batch, total])."""
        self.close_current(sequence[:, -1], self._last_logits)


class SinglePass(StepRule):
    """One forward pass (the training trace): no steps, every event in `Recorder.loose_events()`."""


# Beam search gives every prompt's first beam a score of 0 and the others -1e9, so the first step
# expands the first beam only (generate()'s own start, transformers/generation/utils.py).
_UNREACHED = -1e9


class BeamSteps(GenerateSteps):
    """Beam search: steps begin at prepare_inputs as in generate(); a step's beams are read off what follows.

    generate() runs `num_beams` sequences per prompt (rows b * num_beams + j of input_ids). At each
    step it ranks continuations (the candidates its stopping criteria are shown), keeps the best
    `num_beams` that did not finish, and reorders the cache by the beam each came from. Nothing of
    that selection is redone here: the candidates are read at the token choice, the kept beams off
    the next step's running sequences, and the reorder from the cache's own `reorder_cache` call,
    wrapped for the run. Once generate() returns, `result()` sets each step's token to the winning
    hypothesis's, so `trace.sequence_ids` and the steps tell one story.
    """

    choice_module = "beam search (continuations ranked)"

    def __init__(self, num_beams: int):
        self.num_beams = num_beams

    def install(self, rec: Recorder) -> None:
        super().install(rec)
        self._running: list[list[int]] | None = None  # the open step's running sequences [batch * beams][len]
        self._scores: list[float] = []  # their summed log-probabilities
        self._start_len = 0  # the decoder's length before the first new token
        self._wrapped: set[int] = set()  # ids of caches whose reorder_cache is wrapped
        self._reorder: tuple[list[int], list[bool]] | None = None  # since the last token choice
        # per closed step: [(parent flat, token, score, prob)] per flat candidate, and each beam's top-k
        self._candidates: list[list[tuple[int, int, float, float]]] = []
        self._beam_topk: list[list[list[TopToken]]] = []

    # -- a step begins: the beams the last step kept are this step's running sequences ---------

    def started(self, step, input_ids: Any, model_inputs: dict) -> None:
        if not isinstance(input_ids, torch.Tensor):
            return
        running = input_ids.tolist()
        if self._running is None:  # the first step
            self._start_len = len(running[0])
            self._scores = [0.0 if j % self.num_beams == 0 else _UNREACHED for j in range(len(running))]
        else:
            self._keep(running)
        self._running = running
        cache = model_inputs.get("past_key_values")
        if cache is not None and id(cache) not in self._wrapped and hasattr(cache, "reorder_cache"):
            self._wrapped.add(id(cache))
            self.rec.hooks.wrap_method("reorder_cache", self._wrap_reorder(cache), owner=cache)

    def _keep(self, running: list[list[int]]) -> None:
        """Record on the last closed step which of its candidates became the running beams `running`."""
        step = self.rec.log.steps[-2] if len(self.rec.log.steps) >= 2 else None
        if step is None or step.beams is None or not self._candidates:
            return
        candidates = self._candidates[-1]
        per_prompt = len(candidates) // max(len(running) // self.num_beams, 1)
        parents, tokens, scores, new_scores = [], [], [], []
        for b in range(len(running) // self.num_beams):
            kept_parents, kept_tokens, kept_scores = [], [], []
            used: set[int] = set()
            for j in range(self.num_beams):
                row = running[b * self.num_beams + j]
                match = next(
                    (
                        c
                        for c in range(b * per_prompt, (b + 1) * per_prompt)
                        if c not in used
                        and row[-1] == candidates[c][1]
                        and self._previous[candidates[c][0]] == row[:-1]
                    ),
                    None,
                )
                if match is None:  # not a ranked continuation: say so rather than guess
                    kept_parents.append(-1), kept_tokens.append(row[-1]), kept_scores.append(float("nan"))
                    new_scores.append(float("nan"))
                    continue
                used.add(match)
                parent, token, score, _ = candidates[match]
                kept_parents.append(parent - b * self.num_beams)
                kept_tokens.append(token)
                kept_scores.append(score)
                new_scores.append(score)
            parents.append(kept_parents), tokens.append(kept_tokens), scores.append(kept_scores)
        reorder, applied = self._reorder if self._reorder is not None else (None, [])
        step.beams = replace(
            step.beams,
            parents=parents,
            tokens=tokens,
            scores=scores,
            reorder=reorder,
            reorder_applied=applied,
        )
        self._scores = new_scores
        self._reorder = None

    # -- the token choice: generate() shows the ranked continuations --------------------------

    def token_chosen(self, candidates: torch.Tensor, scores: torch.Tensor | None) -> None:
        """generate() ranked the continuations `candidates` [batch * 2 * beams, len + 1], best first."""
        step = self.rec.log.current
        if step is None or step.closed or scores is None or self._running is None:
            return
        log_probs = scores.float()  # [batch * beams, vocab], after the logits processors
        probs = torch.softmax(log_probs, dim=-1)  # renormalised where a processor masked tokens
        rows = candidates.tolist()  # [batch * 2 * beams][len + 1]
        batch = len(self._running) // self.num_beams
        per_prompt = len(rows) // batch
        ranked: list[tuple[int, int, float, float]] = []
        cand_parents, cand_tokens, cand_scores = [], [], []
        for b in range(batch):
            beams = range(b * self.num_beams, (b + 1) * self.num_beams)
            parents_b, tokens_b, scores_b = [], [], []
            for row in rows[b * per_prompt : (b + 1) * per_prompt]:
                prefix, token = row[:-1], row[-1]
                options = [
                    (self._scores[j] + float(log_probs[j, token]), j)
                    for j in beams
                    if self._running[j] == prefix
                ]
                score, parent = max(options) if options else (float("nan"), b * self.num_beams)
                ranked.append((parent, token, score, float(probs[parent, token])))
                parents_b.append(parent - b * self.num_beams), tokens_b.append(token), scores_b.append(score)
            cand_parents.append(parents_b), cand_tokens.append(tokens_b), cand_scores.append(scores_b)
        self._previous = self._running
        self._candidates.append(ranked)
        top = top_k(probs, TOP_K)
        text = self.rec.token_text
        self._beam_topk.append(
            [
                [TopToken(int(i), text(int(i)), float(p)) for p, i in zip(values, ids, strict=True)]
                for values, ids in zip(top.values.tolist(), top.indices.tolist(), strict=True)
            ]
        )
        # Until the run ends, each prompt's step shows its best-ranked continuation.
        best = [b * per_prompt for b in range(batch)]
        parents_flat = torch.tensor([ranked[c][0] for c in best])
        self.rec.log.close_step(step, candidates[best, -1], log_probs[parents_flat], self.choice_module)
        step.beams = BeamChoice(cand_parents, cand_tokens, cand_scores)

    def _wrap_reorder(self, cache: Any):
        def make(original):
            @functools.wraps(original)
            def reorder_cache(beam_idx: torch.Tensor, *args, **kwargs):
                before = _row_fingerprints(cache)
                result = original(beam_idx, *args, **kwargs)
                after = _row_fingerprints(cache)
                index = beam_idx.to("cpu")
                applied = [
                    bool(torch.allclose(new, old[index], rtol=1e-4, atol=1e-5))
                    for old, new in zip(before, after, strict=True)
                ]
                self._reorder = (index.tolist(), applied)
                return result

            return reorder_cache

        return make

    # -- the run ended: what generate() returned ------------------------------------------------

    def result(self, output: Any) -> BeamResult | None:
        """generate()'s hypotheses, and every step's token set to the winner's (row b: prompt b's best)."""
        if output is None or getattr(output, "sequences_scores", None) is None:
            return None
        sequences = output.sequences.tolist()
        beam_indices = output.beam_indices.tolist()
        steps = [s for s in self.rec.log.steps if s.closed]
        batch = len(self._running or []) // self.num_beams or 1
        per_prompt = len(sequences) // batch
        for t, step in enumerate(steps):
            choices = []
            for b in range(batch):
                winner = sequences[b * per_prompt]
                position = self._start_len + t
                beam = beam_indices[b * per_prompt][t] if t < len(beam_indices[b * per_prompt]) else -1
                token = winner[position] if position < len(winner) else winner[-1]
                if beam < 0 or t >= len(self._candidates):  # the winner had ended: generate() pads it
                    choices.append(RowChoice(token, None, []))
                    continue
                prob = next(
                    (p for parent, tok, _, p in self._candidates[t] if parent == beam and tok == token), None
                )
                choices.append(RowChoice(token, prob, self._beam_topk[t][beam]))
            step.chosen_id, step.chosen_prob, step.topk = (
                choices[0].chosen_id,
                choices[0].chosen_prob,
                choices[0].topk,
            )
            step.rows = choices if batch > 1 else []
        return BeamResult(
            num_beams=self.num_beams,
            sequences=sequences,
            sequences_scores=[float(x) for x in output.sequences_scores.tolist()],
            beam_indices=beam_indices,
        )

    def stop_reason(self, *, failed: bool, max_new_tokens: int) -> dict:
        steps = sum(1 for s in self.rec.log.steps if s.closed)
        if failed:
            return {"reason": "error", "token_id": None, "detail": "the model raised"}
        if steps >= max_new_tokens:
            return {
                "reason": "max_new_tokens",
                "token_id": None,
                "detail": f"max_new_tokens={max_new_tokens} reached",
            }
        return {
            "reason": "eos",
            "token_id": None,
            "detail": f"beam search finished after {steps} steps: no running beam could beat a finished one",
        }


def _row_fingerprints(cache: Any) -> list[torch.Tensor]:
    """Per cache layer (self-attention, then cross), two numbers per batch row: the sums of its keys
    and of its values. Both: a cache that moves its keys but not its values is still wrong."""
    prints = []
    for _, part in cache_parts(cache):
        for layer in getattr(part, "layers", []):
            keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
            if isinstance(keys, torch.Tensor) and keys.dim() == 4 and keys.numel():
                sums = [keys.detach().float().sum(dim=(1, 2, 3))]  # [batch * beams]
                if isinstance(values, torch.Tensor) and values.shape[:1] == keys.shape[:1]:
                    sums.append(values.detach().float().sum(dim=(1, 2, 3)))
                prints.append(torch.stack(sums, dim=-1).cpu())  # [batch * beams, 2]
    return prints
