"""The cache doctor: finds every broken scenario at the right step and layer, passes every fixed one
and every shipped or random model, never cries wolf on rounding noise, and its command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import LlamaForCausalLM

import models
import tracer
from models import scenarios
from models.random_models import build_random_llama
from tracer import names
from tracer.__main__ import main
from tracer.doctor import Tolerance, compare_traces
from tracer.loop import trace_loop
from tracer.trace import CaptureSummary, Event, Step, Trace

ROOT = Path(__file__).resolve().parents[1]
# The kind of suspect each broken (or tempting) variant must be explained by.
SUSPECT_KIND = {
    ("side-inputs", "broken"): ("side-input", "pixel_values"),
    ("side-inputs", "tempting"): ("dropped-side-input", "pixel_values"),
    ("stale-positions", "broken"): ("positions", "position_ids"),
    ("loop-mask", "broken"): ("mask", "attention_mask"),
    ("bart-reused-cache", "broken"): ("stale-cross-cache", "past_key_values"),
}
# One prompt each; the batch and beam scenarios are checked in test_doctor_batches.py.
SINGLE_PROMPT = {name for name, _variant in SUSPECT_KIND}
CASES = [(s.name, v) for s in scenarios.all_scenarios() if s.name in SINGLE_PROMPT for v in s.variants]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def reports():
    return {case: scenarios.check(*case, max_new_tokens=6) for case in CASES}


# ---------------------------------------------------------------------------------------------
# Scenarios


@pytest.mark.parametrize("case", CASES, ids=[f"{n}-{v}" for n, v in CASES])
def test_scenario_found_where_expected(reports, case):
    name, variant = case
    expected = scenarios.get(name).expected[variant]
    report = reports[case]
    assert report.consistent == expected.consistent, report.summary
    assert report.first_divergent_step == expected.step, report.summary
    assert report.first_divergent_layer == expected.layer, report.summary
    if expected.error is not None:
        assert report.cached_error is not None and report.cached_error.type == expected.error
        assert report.uncached_error is None
        assert report.kind == "error"
    else:
        assert report.cached_error is None and report.uncached_error is None
    if expected.consistent:
        assert report.suspects == []
        assert report.summary.startswith("Consistent")
    else:
        kind, input_name = SUSPECT_KIND[case]
        assert any(s.kind == kind and s.name == input_name for s in report.suspects), report.suspects
        assert input_name in report.summary


def test_patch_crash_is_the_one_from_the_issue(reports):
    report = reports[("side-inputs", "broken")]
    error = report.cached_error
    assert error.step == 1 and error.type == "RuntimeError"
    assert error.message == (
        "shape mismatch: value tensor of shape [3, 64] cannot be broadcast "
        "to indexing result of shape [0, 64]"
    )
    assert report.cached.steps[0].complete and len(report.uncached.generated_ids) == 6
    # The suspect names the patches with their shape, beside the single fed token.
    side = next(s for s in report.suspects if s.name == "pixel_values")
    assert side.shape == (3, 48) and "input_ids [1, 1]" in side.reason
    assert "placeholder" in report.summary


def test_tempting_fix_breaks_the_uncached_run(reports):
    report = reports[("side-inputs", "tempting")]
    cached, uncached = report.cached, report.uncached
    # With the cache the patches go with the prefill only, which is right...
    assert (
        "pixel_values" in cached.steps[0].prepare_inputs
        and "pixel_values" not in cached.steps[1].prepare_inputs
    )
    # ...but without it step 1 feeds the placeholders again, without their patches.
    assert uncached.steps[1].fed_shape == (1, uncached.steps[0].fed_shape[1] + 1)
    assert "pixel_values" not in uncached.steps[1].prepare_inputs
    assert any(s.run == "uncached" for s in report.suspects)


def test_positions_suspect_says_where_the_token_belongs(reports):
    report = reports[("stale-positions", "broken")]
    suspect = next(s for s in report.suspects if s.kind == "positions")
    prompt_len = len(report.cached.prompt_ids)
    assert "[0] at step 1" in suspect.reason and f"belong at [{prompt_len}]" in suspect.reason


def test_scenario_code_is_the_code_that_runs():
    for scenario in scenarios.all_scenarios():
        assert set(scenario.variants) <= set(scenario.code)
        for variant in scenario.variants:
            assert "def " in scenario.code[variant] or "class " in scenario.code[variant]


def test_unknown_scenario_or_variant():
    with pytest.raises(ValueError, match="side-inputs"):
        scenarios.get("nope")
    with pytest.raises(ValueError, match="broken, fixed"):
        scenarios.build("stale-positions", "tempting")


# ---------------------------------------------------------------------------------------------
# Real models: no false alarms


@pytest.mark.parametrize("name", ["random-llama", "random-bart"])
def test_random_models_are_consistent(name):
    model, tok = models.load(name)
    report = tracer.check_cache(model, tok, "tom has a red ball and ann has a blue book .", max_new_tokens=8)
    assert report.consistent, report.summary
    assert report.first_divergent_step is None and report.first_divergent_layer is None
    assert len(report.max_logit_diff) == 8 and max(report.max_logit_diff) < 1e-5
    assert report.cached.settings["use_cache"] and not report.uncached.settings["use_cache"]


@pytest.mark.parametrize("name", list(models.SHIPPED))
def test_shipped_models_are_consistent(name):
    if name not in models.available():
        pytest.skip(f"{name} is not trained yet (models/checkpoints/{name})")
    model, tok = models.load(name)
    prompt = "tom has a red ball . what does tom have ?" if "llama" in name else "the fifth of june"
    report = tracer.assert_cache_consistent(model, tok, prompt, max_new_tokens=8)
    assert report.consistent


def test_float32_noise_of_large_activations_is_no_alarm():
    # Larger weights give larger activations and larger rounding differences (~3e-5 relative):
    # still far inside the float32 tolerance.
    model, tok = build_random_llama(hidden_size=128, num_layers=3, num_heads=4, num_kv_heads=2, seed=3)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(5)
    report = tracer.check_cache(
        model, tok, "once upon a time there was a small fox . then", max_new_tokens=12
    )
    assert report.consistent, report.summary
    assert all(s.status == "same" for s in report.steps)


def test_bfloat16_model_is_consistent():
    model, tok = models.load("random-llama")
    model.to(torch.bfloat16)
    report = tracer.check_cache(model, tok, "the cat sat on the mat", max_new_tokens=8)
    assert report.consistent, report.summary
    assert report.dtype == "bfloat16" and report.tolerance == Tolerance.for_dtype(torch.bfloat16)


def test_tolerance_scales_with_dtype():
    f32, f16, bf16 = (Tolerance.for_dtype(t) for t in (torch.float32, torch.float16, torch.bfloat16))
    assert f32.rtol < f16.rtol < bf16.rtol and f32.atol < f16.atol < bf16.atol
    # Well above each dtype's rounding (machine epsilon), so noise never triggers it.
    assert f32.rtol >= 1000 * torch.finfo(torch.float32).eps
    assert bf16.rtol >= 5 * torch.finfo(torch.bfloat16).eps
    assert Tolerance.for_dtype("torch.float32") == f32


# ---------------------------------------------------------------------------------------------
# Small divergences, near ties, hand-made traces


class _NudgedLlama(LlamaForCausalLM):
    """Cached steps scale the logits by 1.002: a real divergence that never changes the argmax."""

    def forward(self, *args, past_key_values=None, **kwargs):
        had_cache = past_key_values is not None and past_key_values.get_seq_length() > 0
        out = super().forward(*args, past_key_values=past_key_values, **kwargs)
        if had_cache:
            out.logits = out.logits * 1.002
        return out


def test_small_divergence_that_never_flips_the_token_is_caught():
    base, tok = build_random_llama()
    model = _NudgedLlama(base.config)
    model.load_state_dict(base.state_dict())
    model.generation_config = base.generation_config
    model.eval()
    report = tracer.check_cache(model, tok, "the cat sat on the mat", max_new_tokens=6)
    assert report.cached.generated_ids == report.uncached.generated_ids  # the text is the same...
    assert not report.consistent  # ...but the numbers are not
    assert report.first_divergent_step == 1
    assert report.first_divergent_layer is None  # every decoder layer agrees; only the logits differ
    assert "still the same" in report.summary


def _fake_trace(logits: list[np.ndarray], hidden: list[np.ndarray], tokens: list[int]) -> Trace:
    steps = [
        Step(
            index=i,
            phase="prefill" if i == 0 else "decode",
            prepare_inputs_args={},
            prepare_inputs={},
            events=[
                Event(names.decoder_layer(0), "model.layers.0", tensors={"hidden_last": h[None]}),
                Event(names.FORWARD, "", tensors={"logits_last": z[None]}),
            ],
            cache=[],
            topk=[],
            chosen_id=t,
        )
        for i, (z, h, t) in enumerate(zip(logits, hidden, tokens, strict=True))
    ]
    return Trace(
        arch="decoder-only",
        model_name="fake",
        model_class="Fake",
        prompt_text="",
        prompt_ids=[0],
        sequence_ids=[0, *tokens],
        steps=steps,
        error=None,
        settings={},
        config={"num_layers": 1},
        token_texts={},
        capture=CaptureSummary(0),
    )


def test_rounding_noise_never_alarms_and_a_near_tie_flip_is_not_a_bug():
    rng = np.random.default_rng(0)
    logits = [rng.normal(size=50).astype(np.float32) for _ in range(4)]
    hidden = [rng.normal(size=16).astype(np.float32) * 30 for _ in range(4)]
    tol = Tolerance.for_dtype(torch.float32)
    for scale in (1e-7, 1e-6, 1e-5):  # relative noise up to 100x float32 epsilon
        noisy_logits = [z * (1 + rng.normal(size=z.shape) * scale).astype(np.float32) for z in logits]
        noisy_hidden = [h * (1 + rng.normal(size=h.shape) * scale).astype(np.float32) for h in hidden]
        report = compare_traces(
            _fake_trace(noisy_logits, noisy_hidden, [1, 2, 3, 4]),
            _fake_trace(logits, hidden, [1, 2, 3, 4]),
            tol,
        )
        assert report.consistent, (scale, report.summary)
    # The greedy token flips at step 1 although the logits agree within tolerance: a near tie.
    report = compare_traces(
        _fake_trace(logits, hidden, [1, 7, 3, 4]), _fake_trace(logits, hidden, [1, 2, 3, 4]), tol
    )
    assert report.consistent and report.steps[1].status == "noise-flip"
    assert [s.status for s in report.steps[2:]] == ["not compared", "not compared"]
    assert "near tie" in report.summary
    # A real difference in one layer at step 2 is a divergence, with its layer.
    moved = [h.copy() for h in hidden]
    moved[2] = moved[2] + 0.5
    report = compare_traces(
        _fake_trace(logits, moved, [1, 2, 3, 4]), _fake_trace(logits, hidden, [1, 2, 3, 4]), tol
    )
    assert not report.consistent and (report.first_divergent_step, report.first_divergent_layer) == (2, 0)


def test_bfloat16_tolerance_allows_half_precision_rounding_but_not_a_bug():
    rng = np.random.default_rng(1)
    z = rng.normal(size=64).astype(np.float32) * 10
    h = rng.normal(size=16).astype(np.float32)
    bf16 = Tolerance.for_dtype(torch.bfloat16)

    def rounded(x):  # what a bfloat16 model hands back, a few roundings away
        return torch.tensor(x * (1 + 3 * 2**-8 * rng.uniform(-1, 1, size=x.shape))).bfloat16().float().numpy()

    ok = compare_traces(_fake_trace([rounded(z)], [rounded(h)], [5]), _fake_trace([z], [h], [5]), bf16)
    assert ok.consistent, ok.summary
    bad = compare_traces(_fake_trace([z], [h + 0.5], [5]), _fake_trace([z], [h], [5]), bf16)
    assert not bad.consistent and bad.first_divergent_layer == 0


# ---------------------------------------------------------------------------------------------
# A hand-written loop, and assert_cache_consistent


def test_trace_loop_records_one_step_per_forward_call():
    scenario = scenarios.build("loop-mask", "fixed")
    model, tok = scenario.model, scenario.tok
    tr = trace_loop(model, tok, scenario.loop, scenario.prompt, max_new_tokens=4, use_cache=True)
    ids = tok(scenario.prompt, return_tensors="pt")
    expected = scenario.loop(model, ids["input_ids"], ids["attention_mask"], max_new_tokens=4, use_cache=True)
    assert tr.sequence_ids == expected[0].tolist()
    assert len(tr.steps) == 4 and all(s.complete for s in tr.steps)
    prompt_len = ids["input_ids"].shape[1]
    assert [s.fed_shape for s in tr.steps] == [(1, prompt_len), (1, 1), (1, 1), (1, 1)]
    assert [s.cache_seq_len() for s in tr.steps] == [prompt_len + i for i in range(4)]
    assert tr.steps[1].logits is not None and tr.steps[1].hidden(1) is not None
    # The recorder left nothing behind.
    assert not model._forward_pre_hooks and not model._forward_hooks
    assert "prepare_inputs_for_generation" not in vars(model)


def test_assert_cache_consistent_raises_with_the_summary():
    broken = scenarios.build("stale-positions", "broken")
    with pytest.raises(AssertionError, match="position_ids"):
        tracer.assert_cache_consistent(broken.model, broken.tok, max_new_tokens=4, **broken.check_kwargs())
    fixed = scenarios.build("stale-positions", "fixed")
    report = tracer.assert_cache_consistent(fixed.model, fixed.tok, max_new_tokens=4, **fixed.check_kwargs())
    assert report.consistent


def test_report_to_dict_is_json(reports):
    data = json.loads(json.dumps(reports[("side-inputs", "broken")].to_dict()))
    assert data["consistent"] is False and data["first_divergent_step"] == 1
    assert data["cached_error"]["type"] == "RuntimeError" and data["suspects"]


# ---------------------------------------------------------------------------------------------
# The command line


def test_cli_list_scenarios(capsys):
    assert main(["doctor", "--list-scenarios"]) == 0
    out = capsys.readouterr().out
    for scenario in scenarios.all_scenarios():
        assert scenario.name in out


def test_cli_exit_codes(capsys):
    assert main(["doctor", "--scenario", "loop-mask", "--max-new-tokens", "4"]) == 1
    assert "NOT CONSISTENT" in capsys.readouterr().out
    assert main(["doctor", "--scenario", "loop-mask", "--variant", "fixed", "--max-new-tokens", "4"]) == 0
    assert (
        main(["doctor", "--model", "random-llama", "--prompt", "the cat sat", "--max-new-tokens", "3"]) == 0
    )
    assert "CONSISTENT" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["doctor"], "Tell the doctor what to check"),
        (["doctor", "--model", "random-llama"], "--prompt"),
        (["doctor", "--scenario", "nope"], "No cache-bug scenario"),
        (["doctor", "--scenario", "stale-positions", "--variant", "tempting"], "no variant"),
        (["doctor", "--scenario", "loop-mask", "--model", "random-llama"], "not both"),
        (["doctor", "--model", "no/such/folder", "--prompt", "hi"], ""),
        (["doctor", "--model", "random-llama", "--prompt", "hi", "--max-new-tokens", "0"], "max_new_tokens"),
    ],
)
def test_cli_bad_usage_is_exit_2(capsys, argv, message):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_cli_json_and_real_process():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tracer",
            "doctor",
            "--scenario",
            "side-inputs",
            "--max-new-tokens",
            "3",
            "--json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    data = json.loads(result.stdout)
    assert data["first_divergent_step"] == 1 and data["cached_error"]["step"] == 1
    assert "[3, 64]" in data["cached_error"]["message"]


def test_cli_argparse_errors_are_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["doctor", "--scenario", "loop-mask", "--variant", "nope"])
    assert exit_info.value.code == 2 and "invalid choice" in capsys.readouterr().err
