"""tracer.stopping.run_stop: why a run ended, read off the sequences generate() returned."""

from __future__ import annotations

from tracer.stopping import EOS, ERROR, MAX_NEW_TOKENS, OTHER_CRITERION, run_stop

EOS_ID = 2
START = 3  # three prompt ids, then one id per step


def stop(sequences, max_new_tokens=4):
    return run_stop(
        sequences,
        START,
        [EOS_ID],
        START + max_new_tokens,
        max_new_tokens=max_new_tokens,
        failed=False,
    )


def test_the_length_limit_and_an_eos_before_it():
    assert stop([[7, 8, 9, 5, 6, 5, 6]])["reason"] == MAX_NEW_TOKENS
    ended = stop([[7, 8, 9, 5, EOS_ID]])
    assert (ended["reason"], ended["token_id"]) == (EOS, EOS_ID)
    assert "also the last" not in ended["detail"]


def test_an_eos_on_the_last_allowed_step_is_an_eos_stop():
    last = stop([[7, 8, 9, 5, 6, 5, EOS_ID]])
    assert (last["reason"], last["token_id"]) == (EOS, EOS_ID)
    assert "also the last of max_new_tokens=4" in last["detail"]


def test_a_batch_ends_with_its_last_row_to_finish_and_pads_after_an_eos_do_not_count():
    # Row 0 finished at step 0 and is padded (the pad here is the eos id, as in many checkpoints);
    # row 1 finishes at step 2: that is the stop. An eos in the prompt never counts.
    rows = [[EOS_ID, 8, 9, EOS_ID, EOS_ID, EOS_ID], [7, 8, 9, 5, 6, EOS_ID]]
    assert stop(rows)["reason"] == EOS
    # Row 1 never chose eos: the run went on to the length limit, whatever row 0 did.
    rows = [[7, 8, 9, EOS_ID, EOS_ID, EOS_ID, EOS_ID], [7, 8, 9, 5, 6, 5, 6]]
    assert stop(rows)["reason"] == MAX_NEW_TOKENS


def test_two_eos_ids_and_rows_finishing_on_the_same_step():
    rows = [[7, 8, 9, 5, EOS_ID], [7, 8, 9, 6, 3]]
    ended = run_stop(rows, START, [EOS_ID, 3], START + 4, max_new_tokens=4, failed=False)
    assert (ended["reason"], ended["token_id"]) == (EOS, 3)


def test_an_early_end_with_neither_is_another_criterion_and_a_failure_is_an_error():
    assert stop([[7, 8, 9, 5, 6]])["reason"] == OTHER_CRITERION
    assert stop([[7, 8, 9]])["detail"] == "no token was chosen"
    failed = run_stop([[7, 8, 9, 5]], START, [EOS_ID], START + 4, max_new_tokens=4, failed=True)
    assert failed["reason"] == ERROR
