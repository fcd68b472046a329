"""The traced run is the real run on checkpoints shaped like the real families.

Each test builds a checkpoint folder (random weights, a config and generation_config.json shaped
like the family's, a word tokenizer saved beside it), loads it with `models.load` and holds the
trace to transformers itself: `generate()`'s tokens, its resolved generation config, its
sliding-window cache.
"""

from __future__ import annotations

import pytest
import torch
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

import models
import tracer
from models.random_models import _special_ids, random_tokenizer
from tracer import names
from tracer.__main__ import main as cli_main
from tracer.errors import StepwiseInputError, TracingNotSupported

PROMPT = "the cat sat on the mat and the dog ran to the park"
SOURCE = "march one two three"


def _save(folder, model, tok, generation: dict | None = None):
    if generation is not None:
        model.generation_config = GenerationConfig(**{**model.generation_config.to_dict(), **generation})
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder


def _decoder_config(config_cls, tok, **extra):
    return config_cls(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        **_special_ids(tok),
        **extra,
    )


@pytest.fixture(scope="module")
def bart_large_style(tmp_path_factory):
    """bart-large's generation_config.json: beams, no repeated trigrams, early stopping; 4 encoder
    heads but 2 decoder heads (the config must report both)."""
    tok = random_tokenizer(encoder_decoder=True)
    config = BartConfig(
        vocab_size=len(tok),
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=48,
        max_position_embeddings=16,
        decoder_start_token_id=tok.eos_token_id,
        forced_bos_token_id=None,
        forced_eos_token_id=None,
        **_special_ids(tok),
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("bart-large-style")
    generation = dict(num_beams=4, no_repeat_ngram_size=3, early_stopping=True, eos_token_id=None)
    return _save(folder, BartForConditionalGeneration(config), tok, generation)


@pytest.fixture(scope="module")
def instruct_llama(tmp_path_factory):
    """An instruct Llama's generation_config.json: sampling at temperature 0.6 with top_p 0.9."""
    tok = random_tokenizer(encoder_decoder=False)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("instruct-llama")
    generation = dict(do_sample=True, temperature=0.6, top_p=0.9, eos_token_id=None)
    return _save(folder, LlamaForCausalLM(_decoder_config(LlamaConfig, tok)), tok, generation)


def _counting_forwards(model):
    calls = []
    handle = model.register_forward_pre_hook(lambda *a: calls.append(1))
    return calls, handle


# -- 1. the checkpoint's generation_config is part of the run --------------------------------


def test_a_checkpoints_beams_are_refused_naming_source_and_fix(bart_large_style):
    model, tok = models.load(bart_large_style)
    calls, handle = _counting_forwards(model)
    try:
        with pytest.raises(TracingNotSupported) as info:
            tracer.trace_generation(model, tok, SOURCE, max_new_tokens=4)
    finally:
        handle.remove()
    message = str(info.value)
    assert "num_beams=4 from the checkpoint's generation_config.json" in message
    assert "pass num_beams=1 to trace greedy search" in message
    assert calls == []  # refused before generating


def test_the_checkpoints_other_settings_apply_and_are_recorded(bart_large_style):
    model, tok = models.load(bart_large_style)
    tr = tracer.trace_generation(model, tok, SOURCE, max_new_tokens=6, num_beams=1)
    enc = tok(SOURCE, return_tensors="pt")
    expected = model.generate(**enc, max_new_tokens=6, num_beams=1)
    assert tr.sequence_ids == expected[0].tolist()
    assert tr.settings["no_repeat_ngram_size"] == 3
    assert tr.settings["sources"]["no_repeat_ngram_size"] == "checkpoint"
    assert tr.settings["early_stopping"] is True
    assert tr.settings["num_beams"] == 1 and tr.settings["sources"]["num_beams"] == "caller"
    # Every recorded setting is the one generate() resolves from the same arguments.
    resolved, _ = model._prepare_generation_config(None, max_new_tokens=6, num_beams=1)
    for key, source in tr.settings["sources"].items():
        assert tr.settings[key] == getattr(resolved, key), key
        assert source in ("caller", "checkpoint", "transformers default")


def test_an_instruct_checkpoint_samples_with_its_own_temperature_and_top_p(instruct_llama):
    model, tok = models.load(instruct_llama)
    tr = tracer.trace_generation(model, tok, PROMPT, max_new_tokens=5, seed=11)
    assert tr.error is None
    assert (tr.settings["do_sample"], tr.settings["temperature"], tr.settings["top_p"]) == (True, 0.6, 0.9)
    assert {tr.settings["sources"][k] for k in ("do_sample", "temperature", "top_p")} == {"checkpoint"}
    enc = tok(PROMPT, return_tensors="pt")
    torch.manual_seed(11)
    expected = model.generate(**enc, max_new_tokens=5)
    assert tr.sequence_ids == expected[0].tolist()
    # The recorded distribution is the processed one: top_p 0.9 leaves no mass outside the nucleus.
    step = tr.steps[0]
    logits = torch.tensor(step.logits, dtype=torch.float64)
    probs = torch.softmax(logits / 0.6, dim=-1).sort(descending=True).values
    nucleus = int((probs.cumsum(0) < 0.9).sum()) + 1
    assert len([t for t in step.topk if t.prob > 0]) <= max(nucleus, 1)

    # A caller's override wins field by field; the rest stays the checkpoint's.
    tr = tracer.trace_generation(model, tok, PROMPT, max_new_tokens=2, seed=11, temperature=1.3)
    assert tr.settings["temperature"] == 1.3 and tr.settings["sources"]["temperature"] == "caller"
    assert tr.settings["top_p"] == 0.9 and tr.settings["sources"]["top_p"] == "checkpoint"


def test_several_sequences_are_refused_before_generating(instruct_llama):
    model, tok = models.load(instruct_llama)
    calls, handle = _counting_forwards(model)
    try:
        with pytest.raises(TracingNotSupported, match=r"num_return_sequences=2 from your arguments"):
            tracer.trace_generation(model, tok, PROMPT, max_new_tokens=2, num_return_sequences=2)
        with pytest.raises(TracingNotSupported, match="pass num_return_sequences=1"):
            tracer.trace_generation(model, tok, PROMPT, do_sample=False, num_return_sequences=2)
    finally:
        handle.remove()
    assert calls == []


def test_a_list_of_prompts_says_batches_are_not_traced_yet(instruct_llama):
    model, tok = models.load(instruct_llama)
    for run in (tracer.trace_generation, tracer.check_cache):
        with pytest.raises(TracingNotSupported, match="Batches of several prompts are not traced yet"):
            run(model, tok, ["the cat", "the dog"], max_new_tokens=2)


def test_the_cli_uses_the_checkpoints_settings_and_names_the_fix(bart_large_style, tmp_path, capsys):
    out = tmp_path / "run.trace"
    args = ["record", "--model", str(bart_large_style), "--prompt", SOURCE, "--max-new-tokens", "3"]
    assert cli_main([*args, "--out", str(out)]) == 2
    assert "num_beams=4 from the checkpoint's generation_config.json" in capsys.readouterr().err
    assert cli_main([*args, "--greedy", "--out", str(out)]) == 0
    tr = tracer.load_trace(out)
    assert tr.settings["no_repeat_ngram_size"] == 3 and tr.settings["num_beams"] == 1


def test_the_doctor_runs_greedy_over_the_checkpoints_settings(bart_large_style):
    model, tok = models.load(bart_large_style)
    report = tracer.check_cache(model, tok, SOURCE, max_new_tokens=4)
    assert report.consistent
    enc = tok(SOURCE, return_tensors="pt")
    expected = model.generate(**enc, max_new_tokens=4, num_beams=1, do_sample=False)
    assert report.cached.sequence_ids == expected[0].tolist()
    assert report.cached.settings["sources"]["no_repeat_ngram_size"] == "checkpoint"
    with pytest.raises(StepwiseInputError, match="compares greedy runs"):
        tracer.check_cache(model, tok, SOURCE, max_new_tokens=2, do_sample=True)


# -- 4. why the run stopped ------------------------------------------------------------------


def test_an_eos_on_the_last_allowed_step_is_an_eos_stop(instruct_llama):
    model, tok = models.load(instruct_llama)
    enc = tok(PROMPT, return_tensors="pt")
    free = model.generate(**enc, max_new_tokens=6, do_sample=False)[0, enc["input_ids"].shape[1] :].tolist()
    last = free.index(free[2]) + 1  # the step where that token is first chosen
    unused = next(i for i in range(len(tok)) if i not in free)
    model.generation_config.eos_token_id = [unused, free[2]]
    try:
        tr = tracer.trace_generation(model, tok, PROMPT, max_new_tokens=last, do_sample=False)
        expected = model.generate(**enc, max_new_tokens=last, do_sample=False)
        assert tr.sequence_ids == expected[0].tolist()
        assert tr.eos_token_ids == [unused, free[2]]
        assert tr.stop["reason"] == "eos" and tr.stop["token_id"] == free[2]
        from tracer.plots import generation as g

        assert "eos ids" in g.trace_summary(tr)
        assert f"end-of-sequence id {free[2]}" in g.step_story(tr, len(tr.steps) - 1)

        shorter = tracer.trace_generation(model, tok, PROMPT, max_new_tokens=last - 1, do_sample=False)
        assert shorter.stop["reason"] == "max_new_tokens"
        # Another criterion: generate()'s time limit ends the run after its first token.
        timed = tracer.trace_generation(model, tok, PROMPT, max_new_tokens=5, do_sample=False, max_time=1e-9)
        assert len(timed.generated_ids) == len(
            model.generate(**enc, max_new_tokens=5, do_sample=False, max_time=1e-9)[0]
        ) - len(enc["input_ids"][0])
        assert timed.stop["reason"] == "other criterion"
    finally:
        model.generation_config.eos_token_id = None


# -- 5. smaller things -----------------------------------------------------------------------


def test_bart_runs_as_many_new_tokens_as_generate_does(bart_large_style):
    model, tok = models.load(bart_large_style)
    positions = model.config.max_position_embeddings
    tr = tracer.trace_generation(model, tok, SOURCE, max_new_tokens=positions, num_beams=1)
    expected = model.generate(**tok(SOURCE, return_tensors="pt"), max_new_tokens=positions, num_beams=1)
    assert tr.error is None and tr.sequence_ids == expected[0].tolist()
    with pytest.raises(StepwiseInputError, match="decoder positions"):
        tracer.trace_generation(model, tok, SOURCE, max_new_tokens=positions + 1, num_beams=1)


def test_the_config_reports_encoder_and_decoder_heads(bart_large_style):
    model, tok = models.load(bart_large_style)
    tr = tracer.trace_generation(model, tok, SOURCE, max_new_tokens=2, num_beams=1)
    assert tr.config["num_heads"] == 2 == tr.steps[1].attention("self", 0).shape[0]
    assert tr.config["encoder_heads"] == 4 == tr.steps[0].attention("encoder", 0).shape[0]


def test_load_keeps_a_half_precision_checkpoints_dtype_with_auto(tmp_path):
    tok = random_tokenizer(encoder_decoder=False)
    model = LlamaForCausalLM(_decoder_config(LlamaConfig, tok)).to(torch.bfloat16)
    _save(tmp_path, model, tok)
    assert models.load(tmp_path)[0].dtype == torch.float32  # the default: exact cache comparisons
    assert models.load(tmp_path, dtype="auto")[0].dtype == torch.bfloat16


_ = (MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM, names)
