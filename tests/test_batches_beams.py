"""Batches with padding and beam search, traced: every point checked against transformers itself.

A padded batch: every row's sequence equals generate()'s, every row's attention equals
`output_attentions`, the cache shapes equal `past_key_values`, pads are masked keys, finished rows
are fed the pad id. Beam search: `sequences`, `sequences_scores` and `beam_indices` equal
generate()'s, each step's kept beams are the next step's running sequences, and the cache reorder
generate() applied is recorded and checked layer by layer.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import DynamicCache

import models
import tracer
from tracer.trace import Trace

LLAMA_PROMPTS = ["the cat sat on the mat and", "a dog", "one two three four"]
BART_PROMPTS = ["the cat sat on the mat", "a dog ran", "one two three four five six"]


def _prompts(arch_model, n: int) -> list[str]:
    encoder_decoder = arch_model.config.is_encoder_decoder
    return (BART_PROMPTS if encoder_decoder else LLAMA_PROMPTS)[:n]


def _generate(model, enc, **kwargs):
    """generate() itself, eager, with attention, scores and the cache returned."""
    model.set_attn_implementation("eager")
    try:
        return model.generate(
            **enc, return_dict_in_generate=True, output_attentions=True, output_scores=True, **kwargs
        )
    finally:
        model.set_attn_implementation("sdpa")


def _self_attentions(model, out):
    return out.decoder_attentions if model.config.is_encoder_decoder else out.attentions


# -- batches -----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [2, 3])
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("which", ["llama", "bart"])
def test_a_padded_batch_equals_generate_row_by_row(request, which, side, size):
    model, tok = request.getfixturevalue(which)
    prompts = _prompts(model, size)
    tr = tracer.trace_generation(model, tok, prompts, max_new_tokens=4, padding_side=side)
    enc = tok(prompts, return_tensors="pt", padding=True, padding_side=side)
    out = _generate(model, enc, max_new_tokens=4, do_sample=False)

    assert tr.batch_size == size and tr.batch.padding_side == side
    assert tr.batch.prompt_ids == enc["input_ids"].tolist()
    assert tr.batch.attention_mask == enc["attention_mask"].tolist()
    assert tr.batch.sequence_ids == out.sequences.tolist()
    assert tr.sequence_ids == out.sequences[0].tolist()
    for i, step in enumerate(tr.steps):
        # every row's token, as generate() appended it
        assert [r.chosen_id for r in step.rows] == out.sequences[:, out.sequences.shape[1] - 4 + i].tolist()
        for layer in range(tr.num_layers):
            expected = _self_attentions(model, out)[i][layer]  # [batch, heads, q, k]
            for r in range(size):
                got = tr.row(r).steps[i].attention("self", layer)
                np.testing.assert_allclose(got, expected[r].numpy(), atol=1e-6)
                if model.config.is_encoder_decoder:
                    cross = tr.row(r).steps[i].attention("cross", layer)
                    np.testing.assert_allclose(cross, out.cross_attentions[i][layer][r].numpy(), atol=1e-6)
    if model.config.is_encoder_decoder:
        for layer in range(len(out.encoder_attentions)):
            for r in range(size):
                got = tr.row(r).steps[0].attention("encoder", layer)
                np.testing.assert_allclose(got, out.encoder_attentions[layer][r].numpy(), atol=1e-6)
    # The cache of the last step has every row: [batch, kv_heads, seq, head_dim] per layer.
    final = out.past_key_values
    final = final.self_attention_cache if hasattr(final, "self_attention_cache") else final
    recorded = [c for c in tr.steps[-1].cache if c.kind == "self"]
    for layer, record in zip(final.layers, recorded, strict=True):
        assert record.key_shape == tuple(layer.keys.shape) and record.key_shape[0] == size


def test_a_batch_from_input_ids_and_a_mask_reads_its_padding_side(llama):
    model, tok = llama
    enc = tok(LLAMA_PROMPTS[:2], return_tensors="pt", padding=True, padding_side="right")
    tr = tracer.trace_generation(
        model, tok, input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], max_new_tokens=3
    )
    assert tr.batch.padding_side == "right"
    assert tr.batch.sequence_ids == model.generate(**enc, max_new_tokens=3, do_sample=False).tolist()
    assert tr.batch.prompt_texts[1] == tok.decode(enc["input_ids"][1][enc["attention_mask"][1].bool()])


def test_pads_are_masked_keys_in_the_row_that_has_them(llama, bart):
    model, tok = llama
    tr = tracer.trace_generation(model, tok, LLAMA_PROMPTS[:2], max_new_tokens=3)  # left padding
    pads = tr.batch.attention_mask[1].count(0)
    assert pads > 0 and tr.key_mask(tr.steps[0], "self", 0) is None  # row 0 has no pad
    row = tr.row(1)
    for step in row.steps:
        mask = row.key_mask(step, "self", 0)
        assert mask is not None and not mask[:pads].any() and mask[pads:].all()
        # what eager attention gave those keys from every real query: exactly nothing (a pad's
        # own query row, at prefill, is masked throughout and comes out uniform)
        weights = step.attention("self", 0)  # [heads, q, k]
        real_queries = weights[:, pads:, :] if weights.shape[1] > 1 else weights
        assert np.all(real_queries[..., :pads] == 0)
    model, tok = bart
    tr = tracer.trace_generation(model, tok, BART_PROMPTS[:2], max_new_tokens=2)
    row = tr.row(1)  # the shorter source, padded on the tokenizer's side (right)
    src_pads = tr.batch.attention_mask[1].count(0)
    for kind in ("encoder", "cross"):
        mask = row.key_mask(row.steps[0], kind, 0)
        assert mask is not None and mask.sum() == len(mask) - src_pads
        assert np.all(row.steps[0].attention(kind, 0)[..., ~mask] == 0)
    assert row.key_mask(row.steps[0], "self", 0) is None  # the decoder has no pads


def test_a_row_that_finishes_early_is_fed_the_pad_id_and_says_when_it_stopped():
    model, tok = models.load("tiny-llama")
    prompts = [
        "tom has red balls . ann wants blue hats . what does ann want ?",
        "tom has red balls . what does tom have ?",
    ]
    tr = tracer.trace_generation(model, tok, prompts, max_new_tokens=12)
    expected = model.generate(
        **tok(prompts, return_tensors="pt", padding=True, padding_side="left"), max_new_tokens=12
    )
    assert tr.batch.sequence_ids == expected.tolist()
    eos, pad = model.generation_config.eos_token_id, tok.pad_token_id
    stops = tr.batch.stops
    assert all(stop["reason"] == "eos" for stop in stops), stops
    first = min(stops, key=lambda stop: stop["step"])
    r = stops.index(first)
    chosen = [s.row(r).chosen_id for s in tr.steps]
    assert chosen[first["step"]] == eos and all(t == pad for t in chosen[first["step"] + 1 :])
    assert len(tr.steps) == max(stop["step"] for stop in stops) + 1
    assert tr.stop["reason"] == "eos"
    assert tr.row(r).stop == first


def test_a_batch_saves_and_loads_with_every_row(llama, tmp_path):
    model, tok = llama
    tr = tracer.trace_generation(model, tok, LLAMA_PROMPTS, max_new_tokens=3)
    back = tracer.load_trace(tr.save(tmp_path / "batch.trace"))
    assert back.batch == tr.batch
    for r in range(3):
        np.testing.assert_array_equal(
            back.row(r).steps[1].attention("self", 1), tr.row(r).steps[1].attention("self", 1)
        )
        assert back.row(r).steps[1].topk == tr.row(r).steps[1].topk


def test_the_byte_budget_covers_every_row(llama):
    model, tok = llama
    one = tracer.trace_generation(model, tok, LLAMA_PROMPTS[0], max_new_tokens=3)
    three = tracer.trace_generation(model, tok, LLAMA_PROMPTS[:1] * 3, max_new_tokens=3)
    assert three.capture.captured_bytes == 3 * one.capture.captured_bytes
    capped = tracer.trace_generation(
        model, tok, LLAMA_PROMPTS[:1] * 3, max_new_tokens=3, budget_bytes=one.capture.captured_bytes
    )
    assert not capped.capture.complete and capped.capture.captured_bytes <= one.capture.captured_bytes


# -- beam search -------------------------------------------------------------------------------


def _check_beams(model, tr: Trace, out, num_beams: int, batch: int) -> None:
    result = tr.beam_result
    assert result.num_beams == num_beams
    assert result.sequences == out.sequences.tolist()
    np.testing.assert_allclose(result.sequences_scores, out.sequences_scores.numpy(), atol=1e-5)
    assert result.beam_indices == out.beam_indices.tolist()
    for i, step in enumerate(tr.steps):
        beams = step.beams
        assert len(beams.candidate_tokens) == batch
        if i + 1 < len(tr.steps):
            # the beams a step kept are exactly what the next step runs
            fed = tr.steps[i + 1].prepare_inputs_args["input_ids"].array()  # [batch * beams, len]
            kept = np.array(beams.tokens).reshape(-1)
            np.testing.assert_array_equal(fed[:, -1], kept)
            if tr.settings["use_cache"]:
                parents = np.array(beams.parents) + np.arange(batch)[:, None] * num_beams
                assert beams.reorder == parents.reshape(-1).tolist()
                assert all(beams.reorder_applied)
            # its kept beams' scores are the best of the continuations that did not end
            for b in range(batch):
                assert beams.scores[b] == sorted(beams.scores[b], reverse=True)
                assert set(beams.scores[b]) <= set(beams.candidate_scores[b])
    # every step's token is the winner's, so the sequence and the steps tell one story
    start = len(tr.sequence_ids) - len(tr.steps)
    assert [s.chosen_id for s in tr.steps] == tr.sequence_ids[start:] or len(tr.sequence_ids) < start + len(
        tr.steps
    )


@pytest.mark.parametrize("num_beams", [2, 4])
@pytest.mark.parametrize("which", ["llama", "bart"])
def test_beam_search_equals_generate(request, which, num_beams):
    model, tok = request.getfixturevalue(which)
    prompt = _prompts(model, 1)[0]
    settings = dict(
        max_new_tokens=5, num_beams=num_beams, num_return_sequences=num_beams // 2, do_sample=False
    )
    tr = tracer.trace_generation(model, tok, prompt, **settings)
    out = _generate(model, tok(prompt, return_tensors="pt"), **settings)
    _check_beams(model, tr, out, num_beams, batch=1)
    # every layer's attention and cache hold every beam: [batch * beams, ...]
    step = tr.steps[1]
    expected = _self_attentions(model, out)[1]
    for layer in range(tr.num_layers):
        for beam in range(num_beams):
            np.testing.assert_allclose(
                step.attention("self", layer, batch=beam), expected[layer][beam].numpy(), atol=1e-6
            )
        assert step.cache[layer].key_shape[0] == num_beams


@pytest.mark.parametrize(
    "settings",
    [
        dict(length_penalty=0.5, early_stopping=True),
        dict(length_penalty=2.0, early_stopping="never"),
        dict(use_cache=False),
    ],
    ids=["short-early", "long-never", "no-cache"],
)
def test_beam_settings_follow_generate(llama, settings):
    model, tok = models.load("tiny-llama")
    prompt = "tom has red balls . ann wants blue hats . what does ann want ?"
    kwargs = dict(max_new_tokens=8, num_beams=3, num_return_sequences=2, **settings)
    tr = tracer.trace_generation(model, tok, prompt, **kwargs)
    out = _generate(model, tok(prompt, return_tensors="pt"), **kwargs)
    _check_beams(model, tr, out, 3, batch=1)
    if settings.get("use_cache") is False:
        assert all(s.beams.reorder is None for s in tr.steps)


def test_beams_over_a_batch_of_two_prompts(bart):
    model, tok = bart
    prompts = BART_PROMPTS[:2]
    tr = tracer.trace_generation(model, tok, prompts, max_new_tokens=4, num_beams=2)
    out = _generate(model, tok(prompts, return_tensors="pt", padding=True), max_new_tokens=4, num_beams=2)
    _check_beams(model, tr, out, 2, batch=2)


def test_a_cache_that_ignores_the_reorder_is_caught_at_its_step(llama):
    class NoReorder(DynamicCache):
        def reorder_cache(self, beam_idx):  # the bug: beams keep their own past
            pass

    model, tok = llama
    prompt = LLAMA_PROMPTS[0]
    tr = tracer.trace_generation(
        model, tok, prompt, max_new_tokens=5, num_beams=3, past_key_values=NoReorder(config=model.config)
    )
    reorders = [(s.beams.reorder, s.beams.reorder_applied) for s in tr.steps if s.beams.reorder is not None]
    moved = [
        (order, applied)
        for order, applied in reorders
        if order != sorted(order) or len(set(order)) < len(order)
    ]
    assert moved and any(not all(applied) for order, applied in moved[1:] or moved)
    good = tracer.trace_generation(model, tok, prompt, max_new_tokens=5, num_beams=3)
    assert all(all(s.beams.reorder_applied) for s in good.steps if s.beams.reorder is not None)


def test_a_beam_trace_saves_and_loads(bart, tmp_path):
    model, tok = bart
    tr = tracer.trace_generation(model, tok, BART_PROMPTS[0], max_new_tokens=3, num_beams=2)
    back = tracer.load_trace(tr.save(tmp_path / "beams.trace"))
    assert back.beam_result == tr.beam_result
    assert [s.beams for s in back.steps] == [s.beams for s in tr.steps]


def test_hooks_and_the_cache_method_are_gone_after_beams(llama):
    model, tok = llama
    cache = DynamicCache(config=model.config)
    tracer.trace_generation(
        model, tok, LLAMA_PROMPTS[0], max_new_tokens=3, num_beams=2, past_key_values=cache
    )
    assert "reorder_cache" not in vars(cache)
    assert "prepare_inputs_for_generation" not in vars(model)
    assert torch.is_grad_enabled()
