"""Why a traced run stopped: which eos id, max_new_tokens, or another stopping criterion.

generate() stops a sequence when one of its stopping criteria says so after a token is chosen.
`StopWatch` is handed to generate() beside them and, at every token choice, asks transformers'
own `EosTokenCriteria` and `MaxLengthCriteria` (with the run's eos ids and length) the same
question on the same ids; the last step's answers say why the run ended. When neither fired but
the run ended anyway, another criterion did (stop_strings, max_time, one of the caller's). An eos
chosen on the last allowed step is an eos stop: generate() marks that sequence finished by eos.
"""

from __future__ import annotations

import torch
from transformers import EosTokenCriteria, MaxLengthCriteria, StoppingCriteria

from tracer.trace import STOP_DETAILS

EOS = "eos"
MAX_NEW_TOKENS = "max_new_tokens"
OTHER_CRITERION = "other criterion"
ERROR = "error"


class StopWatch(StoppingCriteria):
    """Records, per token choice, whether an eos id or the length limit would stop; never stops itself.

    A batch ends when every row has chosen an eos id (a finished row is then fed the pad id) or
    at the length limit, so the watch keeps which rows are still running.
    """

    def __init__(self, eos_token_ids: list[int], max_length: int):
        self.eos = EosTokenCriteria(eos_token_ids) if eos_token_ids else None
        self.max_length = MaxLengthCriteria(max_length)
        self.running: torch.Tensor | None = None  # [batch] bool: rows that have not chosen an eos
        # per step: (an eos id chosen this step, if every row has now finished; length reached)
        self.checks: list[tuple[int | None, bool]] = []

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        if self.running is None:
            self.running = torch.ones(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        eos_hit = self.eos(input_ids, scores) & self.running if self.eos is not None else None  # [batch]
        last_eos = None
        if eos_hit is not None and bool(eos_hit.any()):
            self.running = self.running & ~eos_hit
            row = int(eos_hit.nonzero()[-1, 0])
            last_eos = int(input_ids[row, -1]) if not bool(self.running.any()) else None
        self.checks.append((last_eos, bool(self.max_length(input_ids, scores)[0])))
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    def reason(self, *, failed: bool, max_new_tokens: int) -> dict:
        """{"reason": eos | max_new_tokens | other criterion | error, "token_id": eos id, "detail": words}."""
        if failed:
            return {"reason": ERROR, "token_id": None, "detail": STOP_DETAILS["error"]}
        if not self.checks:
            return {"reason": OTHER_CRITERION, "token_id": None, "detail": STOP_DETAILS["nothing"]}
        eos_id, length_reached = self.checks[-1]
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
