"""The traced run is the real run on checkpoints shaped like the real families.

Each test builds a checkpoint folder (random weights, a config and generation_config.json shaped
like the family's, a word tokenizer saved beside it), loads it with `models.load` and holds the
trace to transformers itself: `generate()`'s tokens, its resolved generation config, its
sliding-window cache.
"""

from __future__ import annotations

import numpy as np
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
from stepwise_app import ui
from tests.checkpoints import decoder_config, encoder_decoder_config, random_tokenizer, save_checkpoint
from tests.test_app import navigation_app  # noqa: F401 - an autouse fixture the app tests need
from tracer.__main__ import main as cli_main
from tracer.errors import StepwiseInputError, TracingNotSupported

PROMPT = "the cat sat on the mat and the dog ran to the park"
SOURCE = "march one two three"


@pytest.fixture(scope="module")
def bart_large_style(tmp_path_factory):
    """bart-large's generation_config.json: beams, no repeated trigrams, early stopping; 4 encoder
    heads but 2 decoder heads (the config must report both)."""
    tok = random_tokenizer(encoder_decoder=True)
    config = encoder_decoder_config(
        BartConfig, tok, decoder_attention_heads=2, decoder_ffn_dim=48, max_position_embeddings=16
    )
    folder = tmp_path_factory.mktemp("bart-large-style")
    generation = dict(num_beams=4, no_repeat_ngram_size=3, early_stopping=True, eos_token_id=None)
    return save_checkpoint(folder, BartForConditionalGeneration, config, tok, generation)


@pytest.fixture(scope="module")
def instruct_llama(tmp_path_factory):
    """An instruct Llama's generation_config.json: sampling at temperature 0.6 with top_p 0.9."""
    tok = random_tokenizer(encoder_decoder=False)
    folder = tmp_path_factory.mktemp("instruct-llama")
    generation = dict(do_sample=True, temperature=0.6, top_p=0.9, eos_token_id=None)
    return save_checkpoint(folder, LlamaForCausalLM, decoder_config(LlamaConfig, tok), tok, generation)


def _counting_forwards(model):
    calls = []
    handle = model.register_forward_pre_hook(lambda *a: calls.append(1))
    return calls, handle


# -- 1. the checkpoint's generation_config is part of the run --------------------------------


def test_a_checkpoints_beams_are_traced_as_generate_runs_them(bart_large_style):
    model, tok = models.load(bart_large_style)
    tr = tracer.trace_generation(model, tok, SOURCE, max_new_tokens=4)
    assert tr.settings["num_beams"] == 4 and tr.settings["sources"]["num_beams"] == "checkpoint"
    enc = tok(SOURCE, return_tensors="pt")
    expected = model.generate(**enc, max_new_tokens=4, return_dict_in_generate=True, output_scores=True)
    assert tr.beam_result.sequences == expected.sequences.tolist()
    assert tr.beam_result.sequences_scores == pytest.approx(expected.sequences_scores.tolist(), abs=1e-5)
    assert tr.sequence_ids == expected.sequences[0].tolist()
    assert all(s.beams is not None for s in tr.steps)


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
    # A GenerationConfig passed by the caller counts as the caller's, field by field, as in generate().
    own = GenerationConfig(num_beams=1, no_repeat_ngram_size=2)
    tr = tracer.trace_generation(model, tok, SOURCE, max_new_tokens=6, generation_config=own)
    expected = model.generate(**enc, max_new_tokens=6, generation_config=own)
    assert tr.sequence_ids == expected[0].tolist()
    assert (tr.settings["no_repeat_ngram_size"], tr.settings["sources"]["no_repeat_ngram_size"]) == (
        2,
        "caller",
    )
    assert tr.settings["sources"]["early_stopping"] == "checkpoint"


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


def test_a_list_of_prompts_is_traced_as_a_padded_batch(instruct_llama):
    model, tok = models.load(instruct_llama)
    prompts = ["the cat", "the dog ran to the park"]
    tr = tracer.trace_generation(model, tok, prompts, max_new_tokens=2, do_sample=False)
    enc = tok(prompts, return_tensors="pt", padding=True, padding_side="left")
    expected = model.generate(**enc, max_new_tokens=2, do_sample=False)
    assert tr.batch.sequence_ids == expected.tolist()
    assert tr.settings["do_sample"] is False and tr.settings["sources"]["temperature"] == "checkpoint"


def test_the_cli_traces_the_checkpoints_beams_or_greedy_over_its_settings(bart_large_style, tmp_path):
    out = tmp_path / "run.trace"
    args = ["record", "--model", str(bart_large_style), "--prompt", SOURCE, "--max-new-tokens", "3"]
    assert cli_main([*args, "--out", str(out)]) == 0
    beams = tracer.load_trace(out)
    assert beams.settings["num_beams"] == 4 and beams.beam_result is not None
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
        chosen_bar = g.topk_figure(tr, len(tr.steps) - 1).data[0].y[0]  # greedy: the top bar
        assert chosen_bar.endswith("(eos)")

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
    save_checkpoint(tmp_path, LlamaForCausalLM, decoder_config(LlamaConfig, tok), tok, dtype=torch.bfloat16)
    assert models.load(tmp_path)[0].dtype == torch.float32  # the default: exact cache comparisons
    assert models.load(tmp_path, dtype="auto")[0].dtype == torch.bfloat16


# -- 2. sliding-window attention -------------------------------------------------------------

WINDOW = 4


@pytest.fixture(scope="module")
def mistral(tmp_path_factory):
    """Mistral with a sliding window of 4: its cache keeps the last 3 positions per layer."""
    tok = random_tokenizer(encoder_decoder=False)
    folder = tmp_path_factory.mktemp("mistral")
    config = decoder_config(MistralConfig, tok, sliding_window=WINDOW)
    return save_checkpoint(folder, MistralForCausalLM, config, tok, dict(eos_token_id=None))


@pytest.fixture(scope="module")
def qwen2_sliding(tmp_path_factory):
    """Qwen2 with use_sliding_window: transformers decides per layer which ones slide."""
    tok = random_tokenizer(encoder_decoder=False)
    folder = tmp_path_factory.mktemp("qwen2")
    config = decoder_config(
        Qwen2Config, tok, sliding_window=WINDOW, use_sliding_window=True, max_window_layers=1
    )
    return save_checkpoint(folder, Qwen2ForCausalLM, config, tok, dict(eos_token_id=None))


def _generate_with_attentions(model, tok, prompt, new_tokens):
    enc = tok(prompt, return_tensors="pt")
    return model.generate(
        **enc,
        max_new_tokens=new_tokens,
        do_sample=False,
        output_attentions=True,
        return_dict_in_generate=True,
    )


@pytest.mark.parametrize("fixture", ["mistral", "qwen2_sliding"])
def test_sliding_window_rows_know_their_key_positions(request, fixture):
    from tracer.plots import generation as g

    model, tok = models.load(request.getfixturevalue(fixture))
    tr = tracer.trace_generation(model, tok, PROMPT, max_new_tokens=4)
    out = _generate_with_attentions(model, tok, PROMPT, 4)
    assert tr.sequence_ids == out.sequences[0].tolist()
    prompt_len = len(tr.prompt_ids)
    assert prompt_len > WINDOW
    # Mistral slides on every layer; Qwen2 on the layers its config lists as sliding.
    n_layers = model.config.num_hidden_layers
    layer_types = getattr(model.config, "layer_types", None) or ["sliding_attention"] * n_layers
    assert "sliding_attention" in layer_types
    for step, attentions in zip(tr.steps, out.attentions, strict=True):
        for layer, kind in enumerate(layer_types):
            ours = step.attention("self", layer)
            np.testing.assert_allclose(ours, attentions[layer][0].numpy(), atol=1e-6)
            seen_after = prompt_len + step.index
            k_len = ours.shape[-1]
            if step.index > 0 and kind == "sliding_attention":
                assert k_len == WINDOW
            assert step.key_positions("self", layer).tolist() == list(range(seen_after - k_len, seen_after))
    # The cache after the run, as transformers left it: kept vs seen per layer.
    cache = model(
        **tok(PROMPT, return_tensors="pt"), past_key_values=None, use_cache=True
    ).past_key_values  # a fresh prefill of the prompt: the same cache as after step 0
    for record, layer in zip(tr.steps[0].cache, cache.layers, strict=True):
        assert record.key_shape == tuple(layer.keys.shape)
        assert record.positions_seen == layer.get_seq_length() == prompt_len

    last = tr.steps[-1]
    sliding = layer_types.index("sliding_attention")
    first = prompt_len + last.index - WINDOW
    fig = g.attention_figure(tr, last.index, "self", sliding, 0)
    assert fig.layout.xaxis.ticktext[0].startswith(f"{first}: ")
    matrix, _, _, _ = g.stitched_attention(tr, "self", sliding)
    row = prompt_len + last.index - 1  # the newest token's row
    assert np.isnan(matrix[0, row, :first]).all()
    np.testing.assert_allclose(matrix[0, row, first : row + 1], last.attention("self", sliding)[0, 0], atol=0)
    story = g.step_story(tr, last.index)
    assert f"attended to {WINDOW} keys, positions {first} to {row}" in story
    table = g.cache_shapes_table(tr, last.index).to_pandas()
    slid = table[table["layer"] == sliding].iloc[0]
    assert (slid["seq_len"], slid["positions seen"]) == (WINDOW - 1, row + 1)
    # The trace file keeps positions seen and the stop record.
    back = tracer.trace_from_bytes(tr.to_bytes())
    assert back.stop == tr.stop and back.steps[-1].cache == last.cache
    assert back.steps[-1].key_positions("self", sliding).tolist() == list(range(first, row + 1))


class _StalePositionsMistral(MistralForCausalLM):
    """Numbers the fed tokens from 0 on every step (models/scenarios/stale_positions.py, on Mistral)."""

    def prepare_inputs_for_generation(self, input_ids, **kwargs):
        model_inputs = super().prepare_inputs_for_generation(input_ids, **kwargs)
        fed = model_inputs["input_ids"]  # [batch, fed_len]
        model_inputs["position_ids"] = torch.arange(fed.shape[1])[None, :]
        return model_inputs


def test_the_doctor_places_the_fed_token_after_the_positions_seen(mistral):
    model = _StalePositionsMistral.from_pretrained(mistral, attn_implementation="eager").eval()
    tok = models.load(mistral)[1]
    report = tracer.check_cache(model, tok, PROMPT, max_new_tokens=3)
    assert not report.consistent and report.first_divergent_step == 1
    prompt_len = len(report.cached.prompt_ids)
    positions = next(s for s in report.suspects if s.kind == "positions")
    assert f"belong at [{prompt_len}]" in positions.reason  # not at the 3 positions a layer keeps
    assert f"has already seen {prompt_len} positions" in report.summary


# -- 3. inputs_embeds ------------------------------------------------------------------------


def test_a_prompt_fed_as_embeddings_is_traced_and_shown(mistral):
    from tracer.plots import generation as g

    model, tok = models.load(mistral)
    tr = tracer.trace_generation(model, tok, PROMPT, max_new_tokens=3, feed_embeddings=True)
    enc = tok(PROMPT, return_tensors="pt")
    embeds = model.get_input_embeddings()(enc["input_ids"])
    expected = model.generate(input_ids=enc["input_ids"], inputs_embeds=embeds, max_new_tokens=3)
    assert tr.error is None and tr.sequence_ids == expected[0].tolist()
    prompt_len, hidden = len(tr.prompt_ids), model.config.hidden_size
    first, second = tr.steps[0], tr.steps[1]
    assert (first.fed_name, first.fed_shape) == ("inputs_embeds", (1, prompt_len, hidden))
    assert (second.fed_name, second.fed_shape) == ("input_ids", (1, 1))
    assert tr.settings["feed"] == "inputs_embeds"
    assert "as embeddings" in g.step_story(tr, 0) and "[None" not in g.step_story(tr, 0)
    assert "inputs_embeds [1, 7" not in g.step_story(tr, 1)
    assert "input_ids [1, 1] → " not in "".join(g.prepare_inputs_changes(tr, 1))  # no crash, real changes
    assert any(c.startswith("inputs_embeds") for c in g.prepare_inputs_changes(tr, 1))
    assert g.cache_on_off_table(tr)["cache on"].tolist() == [prompt_len, 1, 1]
    assert g.steps_table(tr).to_pandas()["fed shape"][0] == f"[1, {prompt_len}, {hidden}]"
    for step in range(len(tr.steps)):
        g.call_flow_html(tr, step), g.prepare_inputs_table(tr, step), g.call_flow_table(tr, step)


# -- the app ---------------------------------------------------------------------------------


def _app_on_folder(folder):
    from tests.test_app import new_app

    at = new_app()
    at.sidebar.selectbox(key="model").set_value(ui.LOCAL_FOLDER).run()
    at.sidebar.text_input(key="folder").input(str(folder)).run()
    at.sidebar.text_area(key="prompt").input(SOURCE)
    at.sidebar.slider(key="max_new_tokens").set_value(3)
    return at


def test_the_app_traces_a_checkpoints_beams_and_greedy_over_its_settings(bart_large_style):
    from tests.test_app import PAGES, assert_clean, on_page

    at = _app_on_folder(bart_large_style)
    at.sidebar.button(key="run").click().run()
    assert_clean(at)
    on_page(at, "pages/overview.py")
    table = next(d.value for d in at.dataframe if "setting" in d.value.columns)
    assert table[table["setting"] == "num_beams"].iloc[0]["value"] == "4"
    at.sidebar.radio(key="decoding").set_value(ui.GREEDY).run()
    at.sidebar.button(key="run").click().run()
    assert_clean(at)
    on_page(at, "pages/overview.py")
    table = next(d.value for d in at.dataframe if "setting" in d.value.columns)
    row = table[table["setting"] == "no_repeat_ngram_size"].iloc[0]
    assert (row["value"], row["from"]) == ("3", "the model's generation_config")
    assert table[table["setting"] == "num_beams"].iloc[0]["from"] == "your choice"
    for page in PAGES:
        on_page(at, page)
        assert_clean(at)


def test_the_app_feeds_the_prompt_as_embeddings_on_every_page(mistral):
    from tests.test_app import PAGES, assert_clean, messages, on_page

    at = _app_on_folder(mistral)
    at.sidebar.toggle(key="feed_embeddings").set_value(True).run()
    at.sidebar.button(key="run").click().run()
    assert_clean(at)
    for page in PAGES:
        on_page(at, page)
        assert_clean(at)
        if page == "pages/step_replay.py":
            assert "as embeddings" in messages(at.markdown)
            at.button(key="next_step").click().run()
            assert_clean(at)
            assert "input_ids [1, 1]" in messages(at.markdown)


# -- 4. what 5.x changed, as live values; the call flow's embeddings, MLPs and final_logits_bias


def test_live_values_are_what_generate_passed(instruct_llama):
    from tracer.plots import generation as g

    model, tok = models.load(instruct_llama)
    enc = tok(PROMPT, return_tensors="pt")
    assert enc["attention_mask"].all()  # the tokenizer gives a mask of ones: generate() drops it
    tr = tracer.trace_generation(model, tok, PROMPT, max_new_tokens=2, do_sample=False)
    prompt_len, hidden = len(tr.prompt_ids), model.config.hidden_size
    # A training-style forward: lm_head sees every position.
    seen = []
    handle = model.lm_head.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape)))
    try:
        model(**enc)
    finally:
        handle.remove()
    assert seen == [(1, prompt_len, hidden)]
    first = g.live_values_table(tr, 0).to_pandas().set_index("argument")["this step"]
    assert first["logits_to_keep"] == f"1; lm_head sees [1, 1, {hidden}]"
    assert first["cache_position"] == "absent"
    assert first["past_key_values"] == "DynamicCache(seq_len=0)"
    assert first["attention_mask"] == "called with None; fed None"
    assert first["is_first_iteration"] == "True"
    later = g.live_values_table(tr, 1).to_pandas().set_index("argument")["this step"]
    assert later["past_key_values"] == f"DynamicCache(seq_len={prompt_len})"
    assert later["is_first_iteration"] != "True"


def test_the_call_flow_shows_embeddings_mlps_and_final_logits_bias(bart_large_style, instruct_llama):
    from tracer.plots import generation as g

    model, tok = models.load(instruct_llama)
    tr = tracer.trace_generation(model, tok, PROMPT, max_new_tokens=2, do_sample=False)
    prompt_len, hidden = len(tr.prompt_ids), model.config.hidden_size
    flow = {n.title: n.detail for n in g.call_flow(tr, 0)}
    assert (
        flow["decoder.embed_tokens"]
        == f"input_ids [1, {prompt_len}] → embeddings [1, {prompt_len}, {hidden}]"
    )
    inner = model.config.intermediate_size
    assert flow["decoder.layers.1.mlp"] == (
        f"hidden [1, {prompt_len}, {hidden}] → [1, {prompt_len}, {inner}] → [1, {prompt_len}, {hidden}]"
    )
    assert "final_logits_bias" not in flow

    model, tok = models.load(bart_large_style)
    tr = tracer.trace_generation(model, tok, SOURCE, max_new_tokens=2, num_beams=1)
    titles = [n.title for n in g.call_flow(tr, 1)]
    assert titles.index("final_logits_bias") == titles.index("lm_head") + 1
    vocab = model.final_logits_bias.shape[-1]
    bias = next(n for n in g.call_flow(tr, 1) if n.title == "final_logits_bias")
    assert bias.detail == f"logits [1, 1, {vocab}] + final_logits_bias [1, {vocab}]"
    ffn = model.config.decoder_ffn_dim
    mlp = next(n for n in g.call_flow(tr, 1) if n.title == "decoder.layers.0.mlp")
    assert mlp.module.endswith("layers.0.fc1 .. model.decoder.layers.0.fc2")
    assert f"[1, 1, {ffn}]" in mlp.detail


def test_the_summary_names_the_sampling_settings_someone_set(instruct_llama):
    from tracer.plots import generation as g

    model, tok = models.load(instruct_llama)
    tr = tracer.trace_generation(model, tok, PROMPT, max_new_tokens=2, seed=5)
    assert "sampling (temperature 0.6, top_p 0.9, seed 5)" in g.trace_summary(tr)


def test_a_setting_at_its_off_value_is_not_refused(instruct_llama):
    model, tok = models.load(instruct_llama)
    tr = tracer.trace_generation(model, tok, PROMPT, max_new_tokens=2, do_sample=False, guidance_scale=1.0)
    assert tr.error is None and tr.settings["sources"]["guidance_scale"] == "caller"
    with pytest.raises(TracingNotSupported, match=r"guidance_scale=1.5 from your arguments; leave guidance"):
        tracer.trace_generation(model, tok, PROMPT, max_new_tokens=2, guidance_scale=1.5)


def test_the_length_defaults_to_what_generate_makes(instruct_llama, bart_large_style):
    model, tok = models.load(instruct_llama)
    tr = tracer.trace_generation(model, tok, PROMPT, do_sample=False)
    expected = model.generate(**tok(PROMPT, return_tensors="pt"), do_sample=False)
    assert tr.sequence_ids == expected[0].tolist()
    assert tr.settings["sources"]["max_new_tokens"] == "transformers default"

    model, tok = models.load(bart_large_style)
    model.generation_config.max_length = 5  # a checkpoint's max_length counts the decoder start token
    tr = tracer.trace_generation(model, tok, SOURCE, num_beams=1)
    expected = model.generate(**tok(SOURCE, return_tensors="pt"), num_beams=1)
    assert tr.sequence_ids == expected[0].tolist() and len(tr.generated_ids) == 4
    assert tr.settings["sources"]["max_new_tokens"] == "checkpoint"
