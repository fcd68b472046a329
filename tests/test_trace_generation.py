"""trace_generation against transformers itself: tokens, attention, cache shapes, event order, clean-up."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import models
import tracer
from tracer import names
from tracer.errors import StepwiseInputError, TracingNotSupported

PROMPT = "the cat sat on the mat"


def plain_generate(model, tok, prompt, **kwargs):
    enc = tok(prompt, return_tensors="pt")
    return model.generate(**enc, num_beams=1, **kwargs)


def hooks_of(model) -> dict:
    """Every hook on every module, by id. transformers installs hooks of its own (for
    output_attentions), so "no hooks left" means: the same hooks as before the trace."""
    return {
        name: (
            tuple(m._forward_hooks),
            tuple(m._forward_pre_hooks),
            tuple(m._forward_hooks_always_called),
            tuple(m._forward_hooks_with_kwargs),
        )
        for name, m in model.named_modules()
    }


def traced(model, *args, **kwargs):
    """trace_generation, checking the model is left exactly as it was: hooks, methods, attention."""
    before = hooks_of(model)
    own_prepare = vars(model).get("prepare_inputs_for_generation")
    attn = model.config._attn_implementation
    try:
        return tracer.trace_generation(model, *args, **kwargs)
    finally:
        assert hooks_of(model) == before
        assert vars(model).get("prepare_inputs_for_generation") is own_prepare
        assert model.config._attn_implementation == attn


# -- the traced run is the real run ----------------------------------------------------------


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("fixture", ["llama", "bart"])
def test_greedy_tokens_equal_plain_generate(request, fixture, use_cache):
    model, tok = request.getfixturevalue(fixture)
    tr = traced(model, tok, PROMPT, max_new_tokens=5, use_cache=use_cache)
    expected = plain_generate(model, tok, PROMPT, max_new_tokens=5, use_cache=use_cache, do_sample=False)
    assert tr.error is None
    assert tr.sequence_ids == expected[0].tolist()
    assert tr.generated_ids == tr.sequence_ids[-5:]
    assert len(tr.steps) == 5


@pytest.mark.parametrize("fixture", ["llama", "bart"])
def test_sampling_with_a_seed_equals_plain_generate(request, fixture):
    model, tok = request.getfixturevalue(fixture)
    tr = traced(model, tok, PROMPT, max_new_tokens=6, do_sample=True, seed=7, temperature=1.5, top_k=20)
    torch.manual_seed(7)
    expected = plain_generate(
        model,
        tok,
        PROMPT,
        max_new_tokens=6,
        do_sample=True,
        temperature=1.5,
        top_k=20,
        output_scores=True,
        return_dict_in_generate=True,
    )
    assert tr.sequence_ids == expected.sequences[0].tolist()
    assert tr.settings["seed"] == 7
    # The recorded distribution is the one sampled from: after temperature and top-k.
    for step, scores in zip(tr.steps, expected.scores, strict=True):
        probs = torch.softmax(scores[0], -1)
        assert int((probs > 0).sum()) == 20
        np.testing.assert_allclose([t.prob for t in step.topk], torch.topk(probs, 10).values, rtol=1e-6)
        assert step.chosen_prob == pytest.approx(float(probs[step.chosen_id]), rel=1e-6)


def test_sampling_without_a_seed_records_one_that_replays(llama):
    model, tok = llama
    tr = traced(model, tok, PROMPT, max_new_tokens=4, do_sample=True)
    again = traced(model, tok, PROMPT, max_new_tokens=4, do_sample=True, seed=tr.settings["seed"])
    assert again.sequence_ids == tr.sequence_ids


def test_topk_is_the_greedy_distribution(llama):
    model, tok = llama
    tr = traced(model, tok, PROMPT, max_new_tokens=3)
    enc = tok(PROMPT, return_tensors="pt")
    out = model.generate(
        **enc, max_new_tokens=3, do_sample=False, output_logits=True, return_dict_in_generate=True
    )
    for step, logits in zip(tr.steps, out.logits, strict=True):
        probs = torch.softmax(logits[0], -1)
        top = torch.topk(probs, 10)
        assert [t.token_id for t in step.topk] == top.indices.tolist()
        np.testing.assert_allclose([t.prob for t in step.topk], top.values.numpy(), rtol=1e-6)
        assert step.chosen_id == step.topk[0].token_id  # greedy takes the most likely token
        assert step.topk[0].text == tok.decode([step.topk[0].token_id])
        # The recorded logits at the newest position are the model's own.
        np.testing.assert_allclose(step.logits, logits[0].numpy(), atol=1e-6)


# -- parity with output_attentions and past_key_values ---------------------------------------


@pytest.mark.parametrize("use_cache", [True, False])
def test_llama_attention_and_cache_equal_transformers(llama, use_cache):
    model, tok = llama
    tr = traced(model, tok, PROMPT, max_new_tokens=4, use_cache=use_cache)
    out = plain_generate(
        model,
        tok,
        PROMPT,
        max_new_tokens=4,
        use_cache=use_cache,
        do_sample=False,
        output_attentions=True,
        return_dict_in_generate=True,
    )
    assert len(out.attentions) == len(tr.steps)
    for step, per_layer in zip(tr.steps, out.attentions, strict=True):
        for layer, expected in enumerate(per_layer):
            np.testing.assert_allclose(step.attention("self", layer), expected[0].numpy(), atol=1e-6)
    if use_cache:
        final = out.past_key_values
        recorded = tr.steps[-1].cache
        assert len(recorded) == len(final.layers) == model.config.num_hidden_layers
        for layer, cache_layer in zip(final.layers, recorded, strict=True):
            assert cache_layer.key_shape == tuple(layer.keys.shape)
            assert cache_layer.value_shape == tuple(layer.values.shape)
    else:
        assert all(step.cache == [] for step in tr.steps)


@pytest.mark.parametrize("use_cache", [True, False])
def test_bart_attention_and_cache_equal_transformers(bart, use_cache):
    model, tok = bart
    tr = traced(model, tok, PROMPT, max_new_tokens=4, use_cache=use_cache)
    out = plain_generate(
        model,
        tok,
        PROMPT,
        max_new_tokens=4,
        use_cache=use_cache,
        do_sample=False,
        output_attentions=True,
        return_dict_in_generate=True,
    )
    for layer, expected in enumerate(out.encoder_attentions):
        np.testing.assert_allclose(tr.steps[0].attention("encoder", layer), expected[0].numpy(), atol=1e-6)
    for step, self_attn, cross_attn in zip(
        tr.steps, out.decoder_attentions, out.cross_attentions, strict=True
    ):
        for layer in range(model.config.decoder_layers):
            np.testing.assert_allclose(step.attention("self", layer), self_attn[layer][0].numpy(), atol=1e-6)
            np.testing.assert_allclose(
                step.attention("cross", layer), cross_attn[layer][0].numpy(), atol=1e-6
            )
    if use_cache:
        final = out.past_key_values
        recorded = {(c.kind, c.layer): c for c in tr.steps[-1].cache}
        for kind, part in (("self", final.self_attention_cache), ("cross", final.cross_attention_cache)):
            for i, layer in enumerate(part.layers):
                assert recorded[(kind, i)].key_shape == tuple(layer.keys.shape)
                assert recorded[(kind, i)].value_shape == tuple(layer.values.shape)


# -- what a step shows -----------------------------------------------------------------------


def test_llama_input_ids_shrink_to_one_token_once_the_cache_holds_the_past(llama):
    model, tok = llama
    prompt_len = len(tok(PROMPT)["input_ids"])
    cached = traced(model, tok, PROMPT, max_new_tokens=4)
    uncached = traced(model, tok, PROMPT, max_new_tokens=4, use_cache=False)

    assert [s.fed_shape for s in cached.steps] == [(1, prompt_len)] + [(1, 1)] * 3
    assert [s.fed_shape for s in uncached.steps] == [(1, prompt_len + i) for i in range(4)]
    assert [s.phase for s in cached.steps] == ["prefill", "decode", "decode", "decode"]
    # One position per layer per step: the cache holds everything but the newest token.
    assert [s.cache_seq_len() for s in cached.steps] == [prompt_len + i for i in range(4)]
    assert all(c.seq_len == prompt_len + 3 for c in cached.steps[-1].cache)
    # The values of the small integer tensors are kept: the fed token is the one chosen before.
    assert cached.steps[1].fed_ids == [cached.steps[0].chosen_id]
    assert uncached.steps[2].fed_ids == uncached.sequence_ids[: prompt_len + 2]
    # What prepare_inputs_for_generation was called with, and what it returned.
    step1 = cached.steps[1]
    assert step1.prepare_inputs_args["input_ids"].shape == (1, prompt_len + 1)
    assert step1.prepare_inputs_args["next_sequence_length"] == "1"
    assert step1.prepare_inputs["position_ids"].values == (prompt_len,)
    assert step1.prepare_inputs["past_key_values"].startswith("DynamicCache")
    # lm_head: generate() asks Llama for the newest position only, even on the prefill step.
    lm_head = cached.steps[0].event(names.LM_HEAD)
    assert lm_head.inputs["hidden_states"].shape == (1, 1, model.config.hidden_size)
    assert lm_head.outputs["output"].shape == (1, 1, model.config.vocab_size)


def test_llama_events_in_true_call_order(llama):
    model, tok = llama
    tr = traced(model, tok, PROMPT, max_new_tokens=2)
    per_layer = []
    for i in range(model.config.num_hidden_layers):
        per_layer += [names.decoder_layer(i), names.decoder_self_attn(i), names.decoder_mlp(i)]
    expected = [names.PREPARE_INPUTS, names.FORWARD, names.DECODER_EMBED, *per_layer]
    expected += [names.LM_HEAD, names.CHOOSE_TOKEN]
    for step in tr.steps:
        assert [e.name for e in step.events] == expected
    attn = tr.steps[1].event(names.decoder_self_attn(1))
    assert attn.module == "model.layers.1.self_attn"
    assert attn.inputs["hidden_states"].shape == (1, 1, model.config.hidden_size)
    assert attn.inputs["position_ids"].values == (tr.steps[1].cache_seq_len() - 1,)
    # Layer 1's own cache length before this call, not layer 0's (already updated by then).
    assert attn.inputs["cache_len_before"] == str(tr.steps[0].cache_seq_len())
    heads, kv_heads = model.config.num_attention_heads, model.config.num_key_value_heads
    assert kv_heads < heads  # grouped-query attention: the cache holds fewer heads than attention
    assert attn.outputs["attn_weights"].shape == (1, heads, 1, tr.steps[1].cache_seq_len())
    assert tr.steps[1].cache[0].key_shape[1] == kv_heads


def test_bart_encoder_runs_once_before_the_first_prepare_inputs(bart):
    model, tok = bart
    tr = traced(model, tok, PROMPT, max_new_tokens=3)
    src_len = len(tok(PROMPT)["input_ids"])
    n = model.config.decoder_layers
    encoder_part = [names.ENCODER, names.ENCODER_EMBED]
    encoder_part += [names.encoder_self_attn(i) for i in range(model.config.encoder_layers)]
    decoder_part = [names.DECODER_EMBED]
    for i in range(n):
        decoder_part += [names.decoder_layer(i), names.decoder_self_attn(i), names.decoder_cross_attn(i)]
        decoder_part.append(names.decoder_mlp(i))
    tail = [names.PREPARE_INPUTS, names.FORWARD, *decoder_part, names.LM_HEAD, names.CHOOSE_TOKEN]
    assert [e.name for e in tr.steps[0].events] == encoder_part + tail
    for step in tr.steps[1:]:
        assert [e.name for e in step.events] == tail
    assert tr.steps[0].attention("encoder", 0).shape == (
        model.config.encoder_attention_heads,
        src_len,
        src_len,
    )
    assert tr.steps[2].attention("cross", 1).shape == (model.config.decoder_attention_heads, 1, src_len)
    assert tr.steps[2].prepare_inputs["decoder_input_ids"].shape == (1, 1)
    # The self-attention cache grows by one per step; the cross-attention cache is fixed after step 0.
    assert [s.cache_seq_len("self") for s in tr.steps] == [1, 2, 3]
    assert [s.cache_seq_len("cross") for s in tr.steps] == [src_len] * 3
    kinds = {c.kind for c in tr.steps[0].cache}
    assert kinds == {"self", "cross"}
    assert tr.arch == "encoder-decoder" and tr.prompt_ids == tok(PROMPT)["input_ids"]
    assert tr.start_ids == [model.generation_config.decoder_start_token_id]


# -- the model is left as it was ------------------------------------------------------------


def test_original_attention_implementation_is_restored():
    model, tok = models.load("random-llama")
    model.set_attn_implementation("sdpa")
    tr = traced(model, tok, PROMPT, max_new_tokens=2)
    assert tr.steps[0].has_attention("self", 0)  # eager was on for the traced run
    shapes_only = traced(model, tok, PROMPT, max_new_tokens=2, capture_attention=False)
    assert not shapes_only.steps[0].has_attention("self", 0)
    assert shapes_only.steps[0].event(names.decoder_self_attn(0)).outputs  # shapes still recorded
    assert model.config._attn_implementation == "sdpa"


def test_an_own_prepare_inputs_override_survives_the_trace():
    model, tok = models.load("random-llama")
    calls = []
    original = model.prepare_inputs_for_generation

    def own_prepare(input_ids, **kwargs):
        calls.append(input_ids.shape)
        return original(input_ids, **kwargs)

    model.prepare_inputs_for_generation = own_prepare
    tr = traced(model, tok, PROMPT, max_new_tokens=2)
    assert len(calls) == 2 and len(tr.steps) == 2
    assert model.prepare_inputs_for_generation is own_prepare


class _FailAfter:
    """Replaces a module's forward to raise once it has run `ok_calls` times."""

    def __init__(self, module, ok_calls):
        self.module, self.ok_calls, self.calls = module, ok_calls, 0
        self.original = module.forward
        module.forward = self

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls > self.ok_calls:
            raise RuntimeError("shape mismatch: boom")
        return self.original(*args, **kwargs)

    def restore(self):
        self.module.forward = self.original


@pytest.mark.parametrize("fixture", ["llama", "bart"])
def test_a_model_that_raises_mid_generation_keeps_every_step_before_it(request, fixture):
    model, tok = request.getfixturevalue(fixture)
    layers = model.get_decoder().layers
    failing = _FailAfter(layers[1].mlp if fixture == "llama" else layers[1].fc1, ok_calls=2)
    try:
        tr = traced(model, tok, PROMPT, max_new_tokens=5)
    finally:
        failing.restore()
    assert tr.error is not None
    assert (tr.error.step, tr.error.type, tr.error.message) == (2, "RuntimeError", "shape mismatch: boom")
    assert tr.error.where == names.decoder_mlp(1)  # the innermost hook point that was running
    assert [s.complete for s in tr.steps] == [True, True, False]
    failed = tr.steps[2]
    recorded = [e.name for e in failed.events]
    assert recorded[:4] == [names.PREPARE_INPUTS, names.FORWARD, names.DECODER_EMBED, names.decoder_layer(0)]
    assert names.LM_HEAD not in recorded
    assert failed.event(names.decoder_layer(1)).error == "raised"
    assert failed.event(names.decoder_mlp(1)).error == "raised"
    assert failed.has_attention("self", 1)  # the layer's attention ran before its MLP failed
    assert tr.sequence_ids == tr.start_ids + [s.chosen_id for s in tr.steps[:2]]
    # And the model still generates normally afterwards.
    again = traced(model, tok, PROMPT, max_new_tokens=2)
    assert again.error is None


def test_a_crash_in_the_bart_encoder_is_step_zero(bart):
    model, tok = bart
    failing = _FailAfter(model.get_encoder().layers[1].fc1, ok_calls=0)
    try:
        tr = traced(model, tok, PROMPT, max_new_tokens=3)
    finally:
        failing.restore()
    assert tr.error.step == 0 and tr.error.where == names.ENCODER
    assert [e.name for e in tr.steps[0].events][:3] == [
        names.ENCODER,
        names.ENCODER_EMBED,
        names.encoder_self_attn(0),
    ]
    assert tr.sequence_ids == [model.generation_config.decoder_start_token_id]


# -- memory is bounded -----------------------------------------------------------------------


def test_the_byte_budget_caps_captured_tensors_and_says_what_it_left_out(llama):
    model, tok = llama
    full = traced(model, tok, PROMPT, max_new_tokens=6, use_cache=False)
    budget = full.capture.captured_bytes // 3
    capped = traced(model, tok, PROMPT, max_new_tokens=6, use_cache=False, budget_bytes=budget)
    assert full.capture.complete and not capped.capture.complete
    assert capped.capture.captured_bytes <= budget
    assert capped.capture.skipped_count > 0 and capped.capture.first_skipped.startswith("step ")
    assert "budget" in capped.capture.describe()
    assert capped.sequence_ids == full.sequence_ids
    last = capped.steps[-1]
    event = last.event(names.decoder_self_attn(0))
    assert (
        event.outputs["attn_weights"].shape
        == full.steps[-1].event(names.decoder_self_attn(0)).outputs["attn_weights"].shape
    )
    assert "budget" in event.note
    with pytest.raises(KeyError, match="budget"):
        last.attention("self", 0)


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"prompt": "   "}, StepwiseInputError, "prompt is empty"),
        ({"prompt": "the cat", "max_new_tokens": 0}, StepwiseInputError, "at least 1"),
        ({"prompt": "the cat " * 80}, StepwiseInputError, "shorten the prompt"),
        ({"prompt": "the cat", "max_new_tokens": 200}, StepwiseInputError, "lower max_new_tokens"),
        ({"prompt": "the cat", "num_beam_groups": 2}, TracingNotSupported, "Group beam search is not traced"),
        (
            {"prompt": "the cat", "num_beams": 2, "num_return_sequences": 3},
            TracingNotSupported,
            "lower it to at most num_beams",
        ),
        ({"prompt": ["the cat", "  "]}, StepwiseInputError, "Prompt 2 of the batch is empty"),
        ({"prompt": []}, StepwiseInputError, "non-empty list of texts"),
        (
            {"input_ids": torch.ones(2, 4, dtype=torch.long), "attention_mask": torch.ones(2, 3)},
            StepwiseInputError,
            "must have the shape of input_ids",
        ),
        (
            {
                "input_ids": torch.ones(2, 4, dtype=torch.long),
                "attention_mask": torch.tensor([[1] * 4, [0] * 4]),
            },
            StepwiseInputError,
            "all zeros",
        ),
        ({"prompt": "the cat", "padding_side": "middle"}, StepwiseInputError, "padding_side"),
        ({"prompt": "the cat", "do_sample": True, "temperature": 0.0}, StepwiseInputError, "temperature"),
    ],
)
def test_bad_input_gets_a_clear_error(llama, kwargs, error, message):
    model, tok = llama
    with pytest.raises(error, match=message):
        traced(model, tok, **kwargs)


def test_bart_decoder_positions_are_checked(bart):
    model, tok = bart
    with pytest.raises(StepwiseInputError, match="decoder positions"):
        traced(model, tok, PROMPT, max_new_tokens=model.config.max_position_embeddings + 1)


def test_an_unsupported_architecture_names_the_supported_ones():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=50, n_positions=32))
    with pytest.raises(TracingNotSupported, match=r"Llama layout.*BART layout"):
        traced(model, None, input_ids=torch.tensor([[1, 2, 3]]), max_new_tokens=2)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_input_ids_without_a_tokenizer(llama):
    model, tok = llama
    ids = tok(PROMPT, return_tensors="pt")["input_ids"][0]  # 1-D is accepted too
    tr = traced(model, None, input_ids=ids, max_new_tokens=2)
    assert tr.prompt_ids == ids.tolist()
    assert tr.token_text(tr.sequence_ids[-1]).startswith("<")


def test_bart_attention_events_read_their_own_cache_length(bart):
    model, tok = bart
    tr = traced(model, tok, PROMPT, max_new_tokens=3)
    src_len = len(tok(PROMPT)["input_ids"])
    # Cross-attention projects the encoder states once (step 0), then reads them from the cache.
    assert [s.event(names.decoder_cross_attn(1)).inputs["cache_len_before"] for s in tr.steps] == [
        "0",
        str(src_len),
        str(src_len),
    ]
    assert [s.event(names.decoder_self_attn(1)).inputs["cache_len_before"] for s in tr.steps] == [
        "0",
        "1",
        "2",
    ]
    assert tr.steps[0].event(names.decoder_cross_attn(0)).inputs["key_value_states"].shape[1] == src_len


def test_num_beams_one_is_accepted(llama):
    model, tok = llama
    tr = traced(model, tok, PROMPT, max_new_tokens=2, num_beams=1)
    assert len(tr.steps) == 2
