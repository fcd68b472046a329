"""trace_training_step and trace_trainer_step against transformers itself: loss, shift, attention, Trainer."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
import torch
from transformers import LlamaModel
from transformers.models.bart import modeling_bart
from transformers.models.bart.modeling_bart import shift_tokens_right

import tracer
from models.random_models import build_random_bart
from tracer import names
from tracer.errors import StepwiseInputError
from tracer.training import IGNORE_INDEX, TRAINER_EVENT_ORDER

SOURCE, TARGET = "the cat sat on the mat", "a dog ran"
PROMPT, ANSWER = "the cat sat on the", "mat ."


def hooks_of(model) -> dict:
    """Every hook on every module and parameter, so "no hooks left" means: the same as before."""
    modules = {
        name: (
            tuple(m._forward_hooks),
            tuple(m._forward_pre_hooks),
            tuple(m._forward_hooks_always_called),
            tuple(m._backward_hooks),
        )
        for name, m in model.named_modules()
    }
    params = {
        name: tuple(getattr(p, "_post_accumulate_grad_hooks", None) or ())
        for name, p in model.named_parameters()
    }
    return {"modules": modules, "params": params}


def traced(model, *args, **kwargs):
    """trace_training_step, checking the model is left as it was: hooks, shift function, mode, attention."""
    before = hooks_of(model)
    shift = modeling_bart.shift_tokens_right
    attn, training = model.config._attn_implementation, model.training
    try:
        return tracer.trace_training_step(model, *args, **kwargs)
    finally:
        assert hooks_of(model) == before
        assert modeling_bart.shift_tokens_right is shift
        assert model.config._attn_implementation == attn
        assert model.training == training


def model_output(model, tt):
    """The model's own forward on the trace's inputs: loss, logits and attentions from transformers."""
    kwargs = {"input_ids": torch.tensor([tt.input_ids]), "labels": torch.tensor([tt.labels])}
    if not tt.encoder_decoder:
        kwargs["attention_mask"] = torch.tensor([[int(i != model.config.pad_token_id) for i in tt.input_ids]])
    with torch.no_grad():
        return model(**kwargs, output_attentions=True, use_cache=False)


# -- BART: labels -> shift_tokens_right -> decoder, and the loss ------------------------------


def test_bart_loss_equals_model_loss(bart):
    model, tok = bart
    tt = traced(model, tok, SOURCE, TARGET)
    expected = float(model_output(model, tt).loss)
    assert tt.loss == pytest.approx(expected, abs=1e-6)
    # The per-token cross-entropies are what the loss averages.
    assert tt.mean_token_loss == pytest.approx(expected, abs=1e-6)
    assert tt.logits_shape == (1, len(tt.labels), model.config.vocab_size)


def test_bart_shift_equals_transformers_shift_tokens_right(bart):
    model, tok = bart
    tt = traced(model, tok, SOURCE, TARGET, pad_to=9)
    labels = torch.tensor([tt.labels])
    assert tt.labels[-1] == IGNORE_INDEX  # the padding is left out of the loss
    expected = shift_tokens_right(labels, model.config.pad_token_id, model.config.decoder_start_token_id)
    assert tt.decoder_input_ids == expected[0].tolist()
    assert tt.decoder_input_ids[0] == model.config.decoder_start_token_id
    assert tt.decoder_input_ids[1:] == [
        model.config.pad_token_id if i == IGNORE_INDEX else i for i in tt.labels[:-1]
    ]
    # Padded positions are ignored, and the loss still equals the model's.
    assert tt.ignored.tolist() == [i == IGNORE_INDEX for i in tt.labels]
    assert (tt.per_token_loss[tt.ignored] == 0).all()
    assert np.isnan(tt.label_probs[tt.ignored]).all()
    assert tt.loss == pytest.approx(float(model_output(model, tt).loss), abs=1e-6)


def test_bart_events_in_call_order(bart):
    model, tok = bart
    tt = traced(model, tok, SOURCE, TARGET)
    layers = range(model.config.decoder_layers)
    expected = [names.FORWARD, names.SHIFT_TOKENS_RIGHT, names.ENCODER, names.ENCODER_EMBED]
    expected += [names.encoder_self_attn(i) for i in range(model.config.encoder_layers)]
    expected.append(names.DECODER_EMBED)
    for i in layers:
        expected += [names.decoder_layer(i), names.decoder_self_attn(i), names.decoder_cross_attn(i)]
        expected.append(names.decoder_mlp(i))
    expected += [names.LM_HEAD, names.LOSS]
    assert [e.name for e in tt.events] == expected
    shift = tt.event(names.SHIFT_TOKENS_RIGHT)
    assert shift.inputs["labels"].values == tuple(tt.labels)
    lm_head = tt.event(names.LM_HEAD)
    assert lm_head.outputs["output"].shape == (1, len(tt.labels), model.config.vocab_size)


def test_bart_teacher_forced_attention_equals_output_attentions(bart):
    model, tok = bart
    tt = traced(model, tok, SOURCE, TARGET)
    out = model_output(model, tt)
    src, tgt = len(tt.input_ids), len(tt.labels)
    heads = model.config.decoder_attention_heads
    for layer in range(model.config.decoder_layers):
        self_attn = tt.attention("self", layer)
        assert self_attn.shape == (heads, tgt, tgt)
        np.testing.assert_allclose(self_attn, out.decoder_attentions[layer][0].numpy(), atol=1e-6)
        assert np.allclose(np.triu(self_attn, k=1), 0)  # causal: no position sees a later one
        cross = tt.attention("cross", layer)
        assert cross.shape == (heads, tgt, src)
        np.testing.assert_allclose(cross, out.cross_attentions[layer][0].numpy(), atol=1e-6)
    assert tt.attention("encoder", 0).shape == (model.config.encoder_attention_heads, src, src)


def test_bart_final_logits_bias_is_added_after_lm_head():
    model, tok = build_random_bart()
    with torch.no_grad():  # a non-zero bias, so adding it shows
        model.final_logits_bias.copy_(torch.linspace(-1, 1, model.final_logits_bias.shape[-1])[None, :])
    tt = traced(model, tok, SOURCE, TARGET)
    logits = model_output(model, tt).logits[0].numpy()  # [tgt, vocab]
    np.testing.assert_allclose(tt.final_logits_bias, model.final_logits_bias[0].numpy())
    np.testing.assert_allclose(tt.lm_head_output + tt.final_logits_bias, logits, atol=1e-5)
    assert not np.allclose(tt.lm_head_output, logits, atol=1e-3)
    assert tt.predicted_ids == logits.argmax(-1).tolist()


# -- Llama: labels are the input ids, the prompt masked, the shift inside the loss --------------


def test_llama_prompt_masked_and_loss_shifted(llama):
    model, tok = llama
    tt = traced(model, tok, PROMPT, ANSWER)
    prompt_len = len(tok(PROMPT)["input_ids"])
    assert tt.answer_start == prompt_len
    assert tt.input_ids == tt.source_ids + tt.target_ids
    assert tt.labels == [IGNORE_INDEX] * prompt_len + tt.target_ids
    assert tt.decoder_input_ids is None
    # Logits at t are scored against the token at t + 1: the last prompt position predicts the answer.
    assert tt.scored_labels == [*tt.labels[1:], IGNORE_INDEX]
    assert tt.scored_labels[prompt_len - 1] == tt.target_ids[0]
    assert int((~tt.ignored).sum()) == len(tt.target_ids)
    expected = float(model_output(model, tt).loss)
    assert tt.loss == pytest.approx(expected, abs=1e-6)
    assert tt.mean_token_loss == pytest.approx(expected, abs=1e-6)
    events = [e.name for e in tt.events]
    assert events[0] == names.FORWARD and events[-2:] == [names.LM_HEAD, names.LOSS]
    assert names.SHIFT_TOKENS_RIGHT not in events
    assert tt.event(names.LOSS).inputs["shift_labels"].values == tuple(tt.scored_labels)
    assert tt.attention("self", 0).shape == (
        model.config.num_attention_heads,
        len(tt.input_ids),
        len(tt.input_ids),
    )


def test_llama_without_target_learns_every_token(llama):
    model, tok = llama
    tt = traced(model, tok, PROMPT)
    assert tt.labels == tt.input_ids and tt.answer_start is None
    assert int((~tt.ignored).sum()) == len(tt.input_ids) - 1  # the first token is never predicted
    assert tt.loss == pytest.approx(float(model_output(model, tt).loss), abs=1e-6)


def test_llama_padding_is_ignored(llama):
    model, tok = llama
    tt = traced(model, tok, PROMPT, ANSWER, pad_to=12)
    assert len(tt.input_ids) == 12 and tt.input_ids[-1] == tok.pad_token_id
    assert tt.labels[-1] == IGNORE_INDEX
    assert tt.loss == pytest.approx(float(model_output(model, tt).loss), abs=1e-6)


def test_no_hooks_left_when_the_model_raises(bart):
    model, tok = bart
    before = hooks_of(model)

    def explode(module, args):
        raise RuntimeError("boom")

    handle = model.model.decoder.layers[1].register_forward_pre_hook(explode)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            tracer.trace_training_step(model, tok, SOURCE, TARGET)
    finally:
        handle.remove()
    assert hooks_of(model) == before
    assert modeling_bart.shift_tokens_right is shift_tokens_right
    # The lock is released: tracing works again.
    assert math.isfinite(traced(model, tok, SOURCE, TARGET).loss)


def test_concurrent_traces_restore_shift_tokens_right(bart):
    model, tok = bart
    results = []

    def run():
        results.append(tracer.trace_training_step(model, tok, SOURCE, TARGET).decoder_input_ids)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert modeling_bart.shift_tokens_right is shift_tokens_right
    assert len(results) == 3 and results[0] == results[1] == results[2]


# -- bad input ----------------------------------------------------------------------------------


def test_bad_input_gives_clear_errors(llama, bart):
    llama_model, llama_tok = llama
    bart_model, bart_tok = bart
    with pytest.raises(StepwiseInputError, match="target is empty"):
        tracer.trace_training_step(bart_model, bart_tok, SOURCE, "   ")
    with pytest.raises(StepwiseInputError, match="target is empty"):
        tracer.trace_training_step(llama_model, llama_tok, PROMPT, "")
    with pytest.raises(StepwiseInputError, match="give a target"):
        tracer.trace_training_step(bart_model, bart_tok, SOURCE)
    with pytest.raises(StepwiseInputError, match="source is empty"):
        tracer.trace_training_step(bart_model, bart_tok, "", TARGET)
    positions = bart_model.config.max_position_embeddings
    with pytest.raises(StepwiseInputError, match=f"only {positions} positions"):
        tracer.trace_training_step(bart_model, bart_tok, SOURCE, " ".join(["cat"] * positions))
    with pytest.raises(StepwiseInputError, match="positions: shorten"):
        tracer.trace_training_step(llama_model, llama_tok, PROMPT, " ".join(["cat"] * 200))
    base = LlamaModel(llama_model.config)
    with pytest.raises(StepwiseInputError, match="has no loss"):
        tracer.trace_training_step(base, llama_tok, PROMPT, ANSWER)
    with pytest.raises(StepwiseInputError, match="has no loss"):
        tracer.trace_trainer_step(base, llama_tok)
    with pytest.raises(StepwiseInputError, match="batch is empty"):
        tracer.trace_trainer_step(llama_model, llama_tok, [])


# -- one real Trainer step -----------------------------------------------------------------------


def all_finite(value) -> bool:
    if isinstance(value, dict):
        return all(all_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(all_finite(v) for v in value)
    if isinstance(value, float):
        return math.isfinite(value)
    return True


@pytest.mark.parametrize("which", ["bart", "llama"])
def test_trainer_step_events_in_order_and_loss_equals_logged(which, request):
    model, tok = request.getfixturevalue(which)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    before = hooks_of(model)
    ts = tracer.trace_trainer_step(model, tok, [(SOURCE, TARGET), ("a bird", "the owl")], max_grad_norm=1.0)

    assert ts.names == list(TRAINER_EVENT_ORDER)
    for event in ts.events:
        assert all_finite(event.values), event
    log = ts.event("log").values
    assert ts.loss == ts.logged_loss == log["loss"]
    assert ts.log_history[0]["loss"] == ts.loss

    batch = ts.event("batch").values
    assert batch["input_ids"]["shape"][0] == 2
    assert IGNORE_INDEX in np.ravel(batch["labels"]["values"])  # the shorter example's labels are padded
    assert ts.event("forward").values["training"] is True

    backward = ts.event("backward").values
    assert set(backward["grad_norm"]) >= {"decoder.layers.0", "decoder.layers.1"}
    clip = ts.event("clip_grad_norm").values
    assert clip["norm_before"] == pytest.approx(log["grad_norm"], rel=1e-5)
    assert clip["norm_before"] == pytest.approx(backward["total_norm"])
    assert clip["norm_after"] == pytest.approx(min(clip["norm_before"], clip["max_grad_norm"]), rel=1e-4)

    step = ts.event("optimizer.step").values
    assert step["lr"] == log["learning_rate"]
    assert all(v > 0 for v in step["update_norm"].values())
    scheduler = ts.event("scheduler.step").values
    assert scheduler["lr_before"] == log["learning_rate"] and scheduler["lr_after"] < scheduler["lr_before"]
    assert ts.event("zero_grad").values["params_with_grad_after"] == 0

    # A copy was trained: the caller's model keeps its weights and has no hooks.
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    assert hooks_of(model) == before


# -- the figures, from real traces ----------------------------------------------------------------


def test_figures_show_the_shift_the_ignored_positions_and_generation(bart, llama):
    from tracer.plots import training as plots

    model, tok = bart
    tt = tracer.trace_training_step(model, tok, SOURCE, TARGET, pad_to=8)
    table = plots.shift_table(tt)
    assert table.loc["decoder_input_ids (ids)"].tolist()[1:] == [
        str(model.config.pad_token_id if i == IGNORE_INDEX else i) for i in tt.labels[:-1]
    ]
    # Plotly reads text as HTML: "<s>" must arrive escaped, or it strikes the rest through.
    shift = plots.shift_figure(tt)
    assert "&lt;s&gt;" in shift.data[0].text and "<s>" not in shift.data[0].text
    bars = plots.loss_figure(tt).data[0]
    assert [c == plots.IGNORED_COLOR for c in bars.marker.color] == tt.ignored.tolist()
    assert plots.attention_figure(tt, "cross", 1, head=0).data[0].z.shape == (
        len(tt.labels),
        len(tt.input_ids),
    )

    model, tok = llama
    tt = tracer.trace_training_step(model, tok, PROMPT, ANSWER)
    gen = tracer.trace_generation(model, tok, PROMPT, max_new_tokens=len(tt.target_ids))
    compare = plots.teacher_vs_generation(tt, gen)
    assert compare["position"].tolist() == [tt.answer_start - 1 + i for i in range(len(tt.target_ids))]
    # Step 0 is fed the same prompt as the teacher-forced pass, so it makes the same prediction.
    assert compare["same prediction"].iloc[0]
    assert compare["generation: chose"].iloc[0] == gen.token_text(gen.steps[0].chosen_id)
    assert len(plots.teacher_vs_generation_figure(tt, gen).data) == 2


def test_trainer_figures(llama):
    from tracer.plots import training as plots

    model, tok = llama
    ts = tracer.trace_trainer_step(model, tok)
    assert plots.trainer_table(ts)["event"].tolist() == list(TRAINER_EVENT_ORDER)
    assert len(plots.trainer_flow_figure(ts).data[0].y) == len(TRAINER_EVENT_ORDER)
    grads = plots.grad_norm_figure(ts).data
    assert list(grads[0].x) == list(ts.event("backward").values["grad_norm"])
    assert max(grads[1].y) <= ts.event("clip_grad_norm").values["max_grad_norm"] + 1e-6
    assert len(plots.update_figure(ts).data[0].x) == len(ts.event("optimizer.step").values["update_norm"])
