"""Why a traced run stopped: which eos id, max_new_tokens, or another stopping criterion.

generate() stops a sequence when one of its stopping criteria says so after a token is chosen:
its own eos criterion (the last id of a row is an eos id; a row that chose one is finished, and
is fed the pad id from then on) and its length criterion (the sequence has reached max_length).
`run_stop` asks those two questions of the sequences generate() returned, as they stood at the
last token choice; their answers say why the run ended. When neither fired but the run ended
anyway, another criterion did (stop_strings, max_time, one of the caller's). An eos chosen on
the last allowed step is an eos stop: generate() marks that sequence finished by eos.

Read once the run is over, not by a criterion of its own at every token choice: the same
answers, without a few tensor ops per step inside the traced run.
"""

from __future__ import annotations

from collections.abc import Sequence

from tracer.trace import STOP_DETAILS

EOS = "eos"
MAX_NEW_TOKENS = "max_new_tokens"
OTHER_CRITERION = "other criterion"
ERROR = "error"


def run_stop(
    sequences: Sequence[Sequence[int]],
    start: int,
    eos_token_ids: Sequence[int],
    max_length: int,
    *,
    failed: bool,
    max_new_tokens: int,
) -> dict:
    """{"reason": eos | max_new_tokens | other criterion | error, "token_id": eos id, "detail": words}
    for a run that returned `sequences` ([batch][start + steps]: the decoder's first `start` ids,
    then one id per step)."""
    if failed:
        return {"reason": ERROR, "token_id": None, "detail": STOP_DETAILS["error"]}
    steps = len(sequences[0]) - start if sequences else 0
    if steps <= 0:
        return {"reason": OTHER_CRITERION, "token_id": None, "detail": STOP_DETAILS["nothing"]}
    last = steps - 1
    eos = set(eos_token_ids)
    # Each row's first eos step: after it the row is finished and its later ids (pads) don't count.
    finished_at = [next((t for t, i in enumerate(row[start:]) if i in eos), None) for row in sequences]
    eos_id = None
    if all(t is not None for t in finished_at) and last in finished_at:  # the last row finished now
        row = max(r for r, t in enumerate(finished_at) if t == last)
        eos_id = sequences[row][start + last]
    length_reached = len(sequences[0]) >= max_length
    if eos_id is not None:
        words = STOP_DETAILS["eos-last" if length_reached else "eos"]
        detail = words.format(token_id=eos_id, max_new_tokens=max_new_tokens)
        return {"reason": EOS, "token_id": eos_id, "detail": detail}
    if length_reached:
        detail = STOP_DETAILS["max_new_tokens"].format(max_new_tokens=max_new_tokens)
        return {"reason": MAX_NEW_TOKENS, "token_id": None, "detail": detail}
    return {"reason": OTHER_CRITERION, "token_id": None, "detail": STOP_DETAILS["other"]}


def row_stop(generated: list[int], eos_token_ids: list[int], run_stop: dict) -> dict:
    """Why one row of a batch ended: the first eos id among its `generated` ids (generate() pads the
    row after it), else the way the whole run ended."""
    for step, token_id in enumerate(generated):
        if token_id in eos_token_ids:
            detail = STOP_DETAILS["eos-row"].format(token_id=token_id, step=step)
            return {"reason": EOS, "token_id": token_id, "step": step, "detail": detail}
    return dict(run_stop)
