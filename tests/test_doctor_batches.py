"""The cache doctor on padded batches and beam search, checked against transformers itself.

- the batch and beam scenarios (broken, fixed, tempting) are found at their step and layer, with
  the suspect and the usual fix named;
- a row of a batch vs its prompt generated alone (`compare_row_with_alone`): a left-padded Llama
  row and a right-padded BART row with its mask equal the prompt alone, as transformers' own
  generate() gives them; right padding (Llama), left padding and a missing mask (BART) are found;
- cache on vs off over a batch and over beams (2 and 4): every row and beam compared one by one,
  the row that parts first named; a cache that ignores (or half-does) the beam reorder is caught;
- the report's new fields save, load, and older report files still load;
- the doctor page (AppTest) and the command line run the new scenarios.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.numpy import load as load_arrays
from safetensors.numpy import save as save_arrays
from streamlit.testing.v1 import AppTest
from transformers import DynamicCache, LlamaForCausalLM

import tracer
from models import scenarios
from models.random_models import build_random_llama
from tracer.__main__ import main
from tracer.doctor import USUAL_FIX, find_row_suspects, report_text
from tracer.errors import StepwiseInputError
from tracer.records import _read_header_metadata, record_from_bytes

BATCH_SCENARIOS = ("batch-right-padding", "bart-batch-mask", "beam-reorder")
CASES = [(name, v) for name in BATCH_SCENARIOS for v in scenarios.get(name).variants]
# The suspect each broken (or tempting) variant must be explained by: (kind, input name).
SUSPECT_KIND = {
    ("batch-right-padding", "broken"): ("right-padding", "input_ids"),
    ("batch-right-padding", "tempting"): ("right-padding", "input_ids"),
    ("bart-batch-mask", "broken"): ("encoder-mask", "attention_mask"),
    ("bart-batch-mask", "tempting"): ("encoder-mask", "attention_mask"),
    ("beam-reorder", "broken"): ("beam-reorder", "past_key_values"),
    ("beam-reorder", "tempting"): ("beam-reorder", "past_key_values"),
}
LLAMA_PROMPTS = ["the cat sat on the mat and", "a dog", "one two three four"]
BART_PROMPTS = ["the cat sat on the mat", "a dog ran", "one two three four five six"]
PAGE = str(Path(__file__).resolve().parents[1] / "stepwise_app" / "pages" / "cache_doctor.py")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def reports():
    return {case: scenarios.check(*case, max_new_tokens=6) for case in CASES}


def _new_tokens(out: torch.Tensor, start: int) -> list[list[int]]:
    return out[:, start:].tolist()


# ---------------------------------------------------------------------------------------------
# Scenarios


@pytest.mark.parametrize("case", CASES, ids=[f"{n}-{v}" for n, v in CASES])
def test_batch_scenario_found_where_expected(reports, case):
    name, variant = case
    scenario = scenarios.get(name)
    expected = scenario.expected[variant]
    report = reports[case]
    assert report.comparison == scenario.comparison
    assert report.consistent == expected.consistent, report.summary
    assert report.first_divergent_step == expected.step, report.summary
    assert report.first_divergent_layer == expected.layer, report.summary
    assert report.cached_error is None and report.uncached_error is None
    if expected.consistent:
        assert report.suspects == [] and report.divergent_rows == []
        return
    kind, input_name = SUSPECT_KIND[case]
    assert any(s.kind == kind and s.name == input_name for s in report.suspects), report.suspects
    assert USUAL_FIX[kind] in report.summary  # the usual fix, named
    if scenario.comparison == "row-vs-alone":
        assert report.row == 1 and report.divergent_rows == [1]
        assert report.summary.startswith(
            f"Row 1 of the batch parts from the same prompt generated alone at step {expected.step}"
        )


def test_row_scenarios_speak_of_the_row_and_the_prompt_alone(reports):
    report = reports[("batch-right-padding", "broken")]
    assert report.sides == ("row 1 of the batch", "the prompt alone")
    assert "use_cache=True vs use_cache=False" not in report.compared
    assert report.compared.startswith(
        "row 1 of a batch of 2 prompts (padded on the right) vs the same prompt"
    )
    text = report_text(report)
    assert "batch row" in text and "alone" in text and "cached" not in text.split("\n")[1]
    fixed = reports[("batch-right-padding", "fixed")]
    assert fixed.summary.startswith("Row 1 of the batch equals the same prompt generated alone")
    # The tempting fix does make the positions right (step 1 continues at the prompt's length alone)...
    tempting = reports[("batch-right-padding", "tempting")]
    batch_positions = tempting.cached.steps[1].prepare_inputs["position_ids"].array()[1].tolist()
    alone_positions = tempting.uncached.steps[1].prepare_inputs["position_ids"].array()[0].tolist()
    assert batch_positions == alone_positions
    # ...but the first token is still predicted at a pad: the same step and layer as the bug.
    assert (tempting.first_divergent_step, tempting.first_divergent_layer) == (0, 0)


def test_bart_scenarios_say_who_reads_the_pads(reports):
    broken = next(s for s in reports[("bart-batch-mask", "broken")].suspects if s.kind == "encoder-mask")
    assert "the encoder and every decoder layer's cross-attention" in broken.reason
    assert "no attention_mask reached generate()" in broken.reason
    # Traced from ids without their mask, the batch's side is read off the pads themselves.
    assert "(padded on the right)" in reports[("bart-batch-mask", "broken")].compared
    tempting = next(s for s in reports[("bart-batch-mask", "tempting")].suspects if s.kind == "encoder-mask")
    assert "the encoder outputs were given" in tempting.reason and "the encoder and" not in tempting.reason


def test_beam_scenario_names_the_reorder_that_was_not_applied(reports):
    for variant in ("broken", "tempting"):
        report = reports[("beam-reorder", variant)]
        step = report.first_divergent_step
        # The reorder after the step before the divergence moved a beam, and the cache did not follow.
        before = report.cached.steps[step - 1].beams
        assert before.reorder != sorted(set(before.reorder)) or len(set(before.reorder)) < len(before.reorder)
        assert not all(before.reorder_applied)
        assert all(all(s.beams.reorder_applied) for s in report.cached.steps[: step - 1] if s.beams.reorder)
        suspect = next(s for s in report.suspects if s.kind == "beam-reorder")
        assert f"After step {step - 1}" in suspect.reason and str(before.reorder) in suspect.reason
        assert report.num_beams == 4 and report.rows_compared == 4 and report.beam is not None
    fixed = reports[("beam-reorder", "fixed")]
    assert all(all(s.beams.reorder_applied) for s in fixed.cached.steps if s.beams.reorder is not None)
    assert "Every layer of the cache applied each of the" in fixed.summary


def test_a_scenario_gets_the_new_tokens_its_bug_needs():
    report = scenarios.check("beam-reorder", "broken", max_new_tokens=2)
    assert len(report.steps) == scenarios.get("beam-reorder").min_new_tokens
    assert report.first_divergent_step == scenarios.get("beam-reorder").expected["broken"].step


# ---------------------------------------------------------------------------------------------
# A row of a batch vs its prompt alone, against transformers' own generate()


@pytest.mark.parametrize("size", [2, 3])
@pytest.mark.parametrize("side", ["left", "right"])
def test_llama_row_vs_alone(llama, side, size):
    model, tok = llama
    prompts = LLAMA_PROMPTS[:size]
    enc = tok(prompts, return_tensors="pt", padding=True, padding_side=side)
    batch_out = model.generate(**enc, max_new_tokens=4, do_sample=False)
    for row in range(size):
        report = tracer.compare_row_with_alone(model, tok, prompts, row, padding_side=side, max_new_tokens=4)
        alone = tok(prompts[row], return_tensors="pt")
        alone_out = model.generate(**alone, max_new_tokens=4, do_sample=False)
        # The two sides are generate()'s own runs.
        assert report.cached.batch.sequence_ids == batch_out.tolist()
        assert report.uncached.sequence_ids == alone_out[0].tolist()
        padded = 0 in enc["attention_mask"][row].tolist()
        if side == "left" or not padded:
            # A left-padded row is the prompt alone: generate() gives the same tokens, and so do the numbers.
            assert (
                _new_tokens(batch_out, enc["input_ids"].shape[1])[row]
                == _new_tokens(alone_out, alone["input_ids"].shape[1])[0]
            )
            assert report.consistent, report.summary
            assert report.summary.startswith(f"Row {row} of the batch equals")
        else:
            assert (report.first_divergent_step, report.first_divergent_layer) == (0, 0), report.summary
            assert [s.kind for s in report.suspects] == ["right-padding"]
            assert USUAL_FIX["right-padding"] in report.summary


@pytest.mark.parametrize("size", [2, 3])
@pytest.mark.parametrize("side", ["left", "right"])
def test_bart_row_vs_alone(bart, side, size):
    model, tok = bart
    prompts = BART_PROMPTS[:size]
    enc = tok(prompts, return_tensors="pt", padding=True, padding_side=side)
    batch_out = model.generate(**enc, max_new_tokens=4, do_sample=False)
    for row in range(size):
        report = tracer.compare_row_with_alone(model, tok, prompts, row, padding_side=side, max_new_tokens=4)
        alone_out = model.generate(
            **tok(prompts[row], return_tensors="pt"), max_new_tokens=4, do_sample=False
        )
        assert report.cached.batch.sequence_ids == batch_out.tolist()
        assert report.uncached.sequence_ids == alone_out[0].tolist()
        padded = 0 in enc["attention_mask"][row].tolist()
        if side == "right" or not padded:
            # BART's own side, with its mask: the row is its source alone.
            assert batch_out[row, : alone_out.shape[1]].tolist() == alone_out[0].tolist()
            assert report.consistent, report.summary
        else:
            # Left pads move the source's words to other learned positions: the mask cannot undo that.
            assert (report.first_divergent_step, report.first_divergent_layer) == (0, 0), report.summary
            assert [s.kind for s in report.suspects] == ["encoder-left-padding"]


@pytest.mark.parametrize("size", [2, 3])
def test_bart_row_without_its_mask_reads_the_pads(bart, size):
    model, tok = bart
    enc = tok(BART_PROMPTS[:size], return_tensors="pt", padding=True)  # right, BART's side
    for row in range(size):
        report = tracer.compare_row_with_alone(
            model, tok, input_ids=enc["input_ids"], row=row, max_new_tokens=3
        )
        # The prompt alone is the row's ids without its pads, as the tokenizer gives it.
        assert report.uncached.prompt_ids == tok(BART_PROMPTS[row])["input_ids"]
        if 0 in enc["attention_mask"][row].tolist():
            assert (report.first_divergent_step, report.first_divergent_layer) == (0, 0), report.summary
            assert [s.kind for s in report.suspects] == ["encoder-mask"]
        else:
            assert report.consistent, report.summary
    # With its mask, the same ids are right.
    report = tracer.compare_row_with_alone(
        model, tok, input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], row=1, max_new_tokens=3
    )
    assert report.consistent, report.summary


def test_positions_counted_by_column_not_by_mask_are_named():
    # stale-positions' fix counts positions from the cache length: by column, pads included.
    setup = scenarios.build("stale-positions", "fixed")
    model, tok = setup.model, setup.tok
    prompts = LLAMA_PROMPTS[:2]
    batch = tracer.trace_generation(
        model, tok, prompts, max_new_tokens=3, capture_attention=False
    )  # left pads
    alone = tracer.trace_generation(model, tok, prompts[1], max_new_tokens=3, capture_attention=False)
    pads = batch.batch.attention_mask[1].count(0)
    for step in range(3):
        [suspect] = find_row_suspects(batch, alone, 1, step)
        assert suspect.kind == "batch-positions" and suspect.name == "position_ids"
        real = len(alone.prompt_ids)
        want = list(range(real)) if step == 0 else [real + step - 1]
        assert f"belong at {want}" in suspect.reason
        assert f"are {[p + pads for p in want]}" in suspect.reason
    # Row 0 has no pads: its columns are its positions.
    alone_0 = tracer.trace_generation(model, tok, prompts[0], max_new_tokens=3, capture_attention=False)
    assert find_row_suspects(batch, alone_0, 0, 1) == []
    # RoPE sees relative positions only, so the shift changes nothing: the row equals its prompt alone.
    assert tracer.compare_row_with_alone(model, tok, prompts, 1, max_new_tokens=3).consistent


def test_positions_that_do_not_advance_are_found_in_a_padded_batch():
    setup = scenarios.build("stale-positions", "broken")  # every fed token numbered from 0
    report = tracer.check_cache(setup.model, setup.tok, LLAMA_PROMPTS[:2], max_new_tokens=3)
    assert (report.first_divergent_step, report.first_divergent_layer) == (1, 0)
    assert report.divergent_rows == [0, 1] and report.row == 0
    # Judged by each row's own mask, not by the cache length (which counts row 1's pads too).
    [suspect] = report.suspects
    prompt_len = len(report.cached.batch.prompt_ids[0])
    assert (
        suspect.kind == "batch-positions" and f"are [0], but they belong at [{prompt_len}]" in suspect.reason
    )
    assert USUAL_FIX["batch-positions"] in report.summary


def test_a_decoder_only_batch_without_its_mask_when_pad_is_eos():
    model, tok = build_random_llama()
    tok.pad_token = tok.eos_token  # the usual choice; generate() then cannot tell a pad from an end
    model.generation_config.pad_token_id = model.generation_config.eos_token_id = tok.eos_token_id
    enc = tok(LLAMA_PROMPTS[:2], return_tensors="pt", padding=True, padding_side="left")
    report = tracer.compare_row_with_alone(model, tok, input_ids=enc["input_ids"], row=1, max_new_tokens=3)
    assert (report.first_divergent_step, report.first_divergent_layer) == (0, 0), report.summary
    # Without the mask the positions count the pads too: both named, the mask first.
    assert [s.kind for s in report.suspects] == ["decoder-mask", "batch-positions"]
    assert USUAL_FIX["decoder-mask"] in report.summary
    # generate() infers the mask when the pad id is not an eos id: then the ids alone are right.
    model, tok = build_random_llama()
    enc = tok(LLAMA_PROMPTS[:2], return_tensors="pt", padding=True, padding_side="left")
    report = tracer.compare_row_with_alone(model, tok, input_ids=enc["input_ids"], row=1, max_new_tokens=3)
    assert report.consistent, report.summary
    assert tracer.doctor.find_row_suspects(report.cached, report.uncached, 1, 0) == []


@pytest.mark.parametrize("num_beams", [2, 4])
def test_row_vs_alone_with_beams(llama, num_beams):
    model, tok = llama
    prompts = LLAMA_PROMPTS[:2]
    report = tracer.compare_row_with_alone(model, tok, prompts, 1, num_beams=num_beams, max_new_tokens=4)
    expected = model.generate(
        **tok(prompts[1], return_tensors="pt"), max_new_tokens=4, num_beams=num_beams, do_sample=False
    )
    assert report.uncached.sequence_ids == expected[0].tolist()
    assert report.consistent, report.summary
    assert report.rows_compared == num_beams and report.num_beams == num_beams


def test_row_vs_alone_refuses_what_it_cannot_compare(llama):
    model, tok = llama
    with pytest.raises(StepwiseInputError, match="needs a batch"):
        tracer.compare_row_with_alone(model, tok, ["just one prompt"], 0)
    with pytest.raises(StepwiseInputError, match=r"row must be one of 0\.\.1"):
        tracer.compare_row_with_alone(model, tok, LLAMA_PROMPTS[:2], 2)
    with pytest.raises(StepwiseInputError, match="do_sample"):
        tracer.compare_row_with_alone(model, tok, LLAMA_PROMPTS[:2], 0, do_sample=True)


# ---------------------------------------------------------------------------------------------
# Cache on vs off over a batch and over beams


class _RowOneNudged(LlamaForCausalLM):
    """Cached steps scale row 1's logits by 1.002: a divergence in one row of the batch only."""

    def forward(self, *args, past_key_values=None, **kwargs):
        had_cache = past_key_values is not None and past_key_values.get_seq_length() > 0
        out = super().forward(*args, past_key_values=past_key_values, **kwargs)
        if had_cache:
            out.logits[1] = out.logits[1] * 1.002
        return out


def test_a_batch_is_compared_row_by_row_and_names_the_row_that_parts():
    base, tok = build_random_llama()
    model = _RowOneNudged(base.config)
    model.load_state_dict(base.state_dict())
    model.generation_config = base.generation_config
    model.eval()
    report = tracer.check_cache(model, tok, LLAMA_PROMPTS, max_new_tokens=4)
    assert not report.consistent and report.rows_compared == 3
    assert report.divergent_rows == [1] and report.row == 1
    assert (report.first_divergent_step, report.first_divergent_layer) == (1, None)
    assert "row 1 part(s)" in report.summary and "The steps above are of row 1" in report.summary


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("which", ["llama", "bart"])
def test_a_padded_batch_is_consistent_with_the_cache_on_and_off(request, which, side):
    model, tok = request.getfixturevalue(which)
    prompts = (BART_PROMPTS if which == "bart" else LLAMA_PROMPTS)[:3]
    report = tracer.check_cache(model, tok, prompts, padding_side=side, max_new_tokens=4)
    assert report.consistent, report.summary
    assert report.rows_compared == 3 and report.divergent_rows == []
    enc = tok(prompts, return_tensors="pt", padding=True, padding_side=side)
    assert (
        report.cached.batch.sequence_ids == model.generate(**enc, max_new_tokens=4, do_sample=False).tolist()
    )
    # Right padding agrees with itself with the cache on and off; the doctor points to the real check.
    assert ("compare_row_with_alone" in report.summary) == (which == "llama" and side == "right")


class _NoReorder(DynamicCache):
    def reorder_cache(self, beam_idx):  # the bug: the beams keep their own past
        pass


class _KeysOnly(DynamicCache):
    def reorder_cache(self, beam_idx):  # half the fix: the values stay where they were
        for layer in self.layers:
            if layer.is_initialized:
                layer.keys = layer.keys.index_select(0, beam_idx)


@pytest.mark.parametrize("num_beams", [2, 4])
@pytest.mark.parametrize("which", ["llama", "bart"])
def test_beams_are_compared_one_by_one_with_the_reorder_evidence(request, which, num_beams):
    model, tok = request.getfixturevalue(which)
    prompt = (BART_PROMPTS if which == "bart" else LLAMA_PROMPTS)[0]
    report = tracer.check_cache(model, tok, prompt, num_beams=num_beams, max_new_tokens=5)
    assert report.consistent, report.summary
    assert report.rows_compared == num_beams and report.num_beams == num_beams
    expected = model.generate(
        **tok(prompt, return_tensors="pt"), max_new_tokens=5, num_beams=num_beams, do_sample=False
    )
    assert report.cached.sequence_ids == expected[0].tolist() == report.uncached.sequence_ids
    reorders = [s.beams for s in report.cached.steps if s.beams.reorder is not None]
    assert reorders and all(all(b.reorder_applied) for b in reorders)
    assert all(s.beams.reorder is None for s in report.uncached.steps)  # no cache, nothing to reorder


@pytest.mark.parametrize("cache_class", [_NoReorder, _KeysOnly], ids=["no-reorder", "keys-only"])
def test_a_cache_that_does_not_follow_the_beams_is_found_after_its_reorder(llama, cache_class):
    model, tok = llama
    report = tracer.check_cache(
        model,
        tok,
        LLAMA_PROMPTS[0],
        num_beams=4,
        max_new_tokens=6,
        cached_kwargs=lambda: {"past_key_values": cache_class(config=model.config)},
    )
    assert not report.consistent and report.first_divergent_layer == 0, report.summary
    step = report.first_divergent_step
    # The values count too: a cache that moves its keys only is not said to have followed the beams.
    missed = [
        s.index
        for s in report.cached.steps
        if s.beams.reorder is not None and not all(s.beams.reorder_applied)
    ]
    assert missed and missed[0] == step - 1
    assert [s.kind for s in report.suspects] == ["beam-reorder"]


def test_a_batch_with_beams_compares_every_beam_of_every_row(bart):
    model, tok = bart
    report = tracer.check_cache(model, tok, BART_PROMPTS[:2], num_beams=2, max_new_tokens=4)
    assert report.consistent, report.summary
    assert report.rows_compared == 4 and "All 4 sequences (rows x beams)" in report.summary


# ---------------------------------------------------------------------------------------------
# The report's file, the page, the command line


def test_a_row_report_saves_and_loads_and_old_reports_still_load(reports, tmp_path):
    report = reports[("bart-batch-mask", "broken")]
    back = tracer.load_record(report.save(tmp_path / "row.report"))
    assert (back.comparison, back.row, back.rows_compared, back.divergent_rows) == ("row-vs-alone", 1, 1, [1])
    assert back.sides == report.sides and back.summary == report.summary
    assert json.loads(json.dumps(report.to_dict()))["comparison"] == "row-vs-alone"
    assert "batch row token" in report._repr_html_()  # a notebook shows it with its own sides
    # A report written before these fields existed: its JSON has none of them.
    data = reports[("beam-reorder", "fixed")].to_bytes()
    header = _read_header_metadata(data, "test")
    meta = json.loads(header["trace"])
    for name in ("comparison", "row", "beam", "num_beams", "rows_compared", "divergent_rows"):
        del meta[name]
    old = save_arrays(load_arrays(data), metadata=header | {"trace": json.dumps(meta)})
    loaded = record_from_bytes(old, "old.report")
    assert (loaded.comparison, loaded.row, loaded.num_beams, loaded.rows_compared) == ("cache", None, 1, 1)
    assert loaded.sides == ("cached", "uncached") and loaded.consistent


def test_doctor_page_runs_a_batch_scenario():
    at = AppTest.from_file(PAGE, default_timeout=90).run()
    at.selectbox(key="doctor_scenario").set_value(scenarios.get("batch-right-padding").title).run()
    assert not at.exception, at.exception
    assert (
        at.error[0].value
        == "**Row 1 of the batch parts from its prompt generated alone at step 0, from decoder layer 0 on.**"
    )
    captions = " ".join(c.value for c in at.caption)
    assert "compares row 1 of the batch with the prompt alone" in captions
    assert "b being the prompt alone" in captions and "cache on and off" not in captions
    steps = at.dataframe[0].value
    assert {"batch row token", "alone token"} <= set(steps.columns)
    assert any("ends in" in w.value and "pad" in w.value for w in at.warning)
    at.radio(key="doctor_variant_batch-right-padding").set_value("fixed").run()
    assert not at.exception, at.exception
    assert "equals its prompt generated alone" in at.success[0].value


def test_doctor_page_shows_the_beam_reorders():
    at = AppTest.from_file(PAGE, default_timeout=90).run()
    at.selectbox(key="doctor_scenario").set_value(scenarios.get("beam-reorder").title).run()
    assert not at.exception, at.exception
    assert "at step 2, from decoder layer 0 on" in at.error[0].value
    reorders = next(df.value for df in at.dataframe if "beams kept (reorder)" in df.value.columns)
    assert reorders["moved"].str.endswith("did not").any() and (reorders["moved"] == "all layers").any()


def test_doctor_page_compares_a_row_of_the_sidebar_model():
    at = AppTest.from_file(PAGE, default_timeout=90)
    at.session_state["model"] = "random-llama"
    at.session_state["prompt"] = "the cat sat on the mat and"
    at.run()
    at.radio(key="doctor_source").set_value("A row of a batch vs its prompt alone").run()
    assert not at.exception, at.exception
    assert at.text_area(key="doctor_batch_prompts").value == "the cat sat on the mat and\nthe cat sat"
    at.radio(key="doctor_padding_side").set_value("right").run()
    at.button(key="doctor_run_row").click().run()
    assert not at.exception, at.exception
    assert "Row 1 of the batch parts from its prompt generated alone at step 0" in at.error[0].value
    at.radio(key="doctor_padding_side").set_value("left").run()
    at.button(key="doctor_run_row").click().run()
    assert "Row 1 of the batch equals its prompt generated alone" in at.success[0].value
    at.text_area(key="doctor_batch_prompts").set_value("only one prompt").run()
    at.button(key="doctor_run_row").click().run()
    assert not at.exception, at.exception
    assert "needs a batch" in at.error[0].value


def test_cli_lists_and_runs_the_batch_scenarios(capsys):
    assert main(["doctor", "--list-scenarios"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in BATCH_SCENARIOS)
    assert main(["doctor", "--scenario", "bart-batch-mask", "--max-new-tokens", "3"]) == 1
    out = capsys.readouterr().out
    assert "row 1 of a batch of 2 prompts" in out and "NOT CONSISTENT: Row 1 of the batch parts" in out
    assert (
        main(["doctor", "--scenario", "bart-batch-mask", "--variant", "fixed", "--max-new-tokens", "3"]) == 0
    )


def test_cli_checks_a_batch_a_row_and_beams_of_a_model(capsys):
    batch = ["doctor", "--model", "random-llama", "--prompt", LLAMA_PROMPTS[0], "--prompt", LLAMA_PROMPTS[1]]
    assert main([*batch, "--padding-side", "right", "--row", "1", "--max-new-tokens", "3"]) == 1
    out = capsys.readouterr().out
    assert "NOT CONSISTENT: Row 1 of the batch parts from the same prompt generated alone at step 0" in out
    assert main([*batch, "--padding-side", "left", "--row", "1", "--max-new-tokens", "3"]) == 0
    assert "CONSISTENT: Row 1 of the batch equals" in capsys.readouterr().out
    assert main([*batch, "--padding-side", "right", "--max-new-tokens", "3"]) == 0  # cache on and off agree
    assert "All 2 rows were compared one by one" in capsys.readouterr().out
    single = ["doctor", "--model", "random-llama", "--prompt", LLAMA_PROMPTS[0], "--max-new-tokens", "3"]
    assert main([*single, "--num-beams", "2"]) == 0
    assert "All 2 beams were compared one by one" in capsys.readouterr().out
    assert main([*single, "--row", "0"]) == 2
    assert "needs a batch" in capsys.readouterr().err
    assert main(["doctor", "--scenario", "beam-reorder", "--num-beams", "2"]) == 2
    assert "brings its own batch and beams" in capsys.readouterr().err
