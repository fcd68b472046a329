"""Local checkpoint folders: each supported family loads and traces; each refusal says why.

Every model here is a tiny random one saved to tmp_path with `save_pretrained`, next to a word
tokenizer, so the tests need no download and run in seconds.
"""

from __future__ import annotations

import json

import pytest
import torch
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    BertConfig,
    BertForMaskedLM,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    MBartConfig,
    MBartForConditionalGeneration,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

import models
import tracer
from models import ModelLoadError
from models.local import SUPPORTED_FAMILIES
from tests.checkpoints import decoder_config, encoder_decoder_config, random_tokenizer, save_checkpoint

DECODER_ONLY = {
    "llama": (LlamaConfig, LlamaForCausalLM),
    "mistral": (MistralConfig, MistralForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
}
ENCODER_DECODER = {
    "bart": (BartConfig, BartForConditionalGeneration),
    "mbart": (MBartConfig, MBartForConditionalGeneration),
}


def save_decoder_only(folder, family: str):
    config_cls, model_cls = DECODER_ONLY[family]
    tok = random_tokenizer(encoder_decoder=False)
    save_checkpoint(folder, model_cls, decoder_config(config_cls, tok), tok)
    return tok


def save_encoder_decoder(folder, family: str):
    config_cls, model_cls = ENCODER_DECODER[family]
    tok = random_tokenizer(encoder_decoder=True)
    save_checkpoint(folder, model_cls, encoder_decoder_config(config_cls, tok), tok)
    return tok


def test_the_tested_families_are_the_supported_ones():
    assert set(SUPPORTED_FAMILIES) == set(DECODER_ONLY) | set(ENCODER_DECODER)


@pytest.mark.parametrize("family", sorted(DECODER_ONLY))
def test_decoder_only_family_loads_and_traces(tmp_path, family):
    save_decoder_only(tmp_path, family)
    model, tok = models.load(str(tmp_path))
    assert model.config.model_type == family
    assert model.config._attn_implementation == "eager"
    assert not model.training
    assert model.dtype == torch.float32
    model.generation_config.eos_token_id = None  # random weights may pick </s> at once: run all steps

    tr = tracer.trace_generation(model, tok, "the cat sat on the mat", max_new_tokens=3)
    assert tr.error is None
    assert tr.arch == "decoder-only"
    assert len(tr.steps) == 3
    prompt_len = len(tr.prompt_ids)
    heads = model.config.num_attention_heads
    assert tr.steps[0].attention("self", 1).shape == (heads, prompt_len, prompt_len)
    assert tr.steps[2].attention("self", 0).shape == (heads, 1, prompt_len + 2)
    # The trace's tokens are the model's own greedy generate().
    inputs = tok("the cat sat on the mat", return_tensors="pt")
    expected = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert tr.sequence_ids == expected[0].tolist()


@pytest.mark.parametrize("family", sorted(ENCODER_DECODER))
def test_encoder_decoder_family_loads_and_traces(tmp_path, family):
    save_encoder_decoder(tmp_path, family)
    model, tok = models.load(tmp_path)
    assert model.config.model_type == family
    assert model.config._attn_implementation == "eager"
    model.generation_config.eos_token_id = None  # random weights may pick </s> at once: run all steps

    tr = tracer.trace_generation(model, tok, "march one", max_new_tokens=3)
    assert tr.error is None
    assert tr.arch == "encoder-decoder"
    src_len = len(tr.prompt_ids)  # <s> march one </s>
    assert src_len == 4
    heads = model.config.decoder_attention_heads
    assert tr.steps[0].attention("encoder", 0).shape == (heads, src_len, src_len)
    assert tr.steps[1].attention("cross", 1).shape == (heads, 1, src_len)


# --- refusals ----------------------------------------------------------------------------------


def test_refuses_missing_folder(tmp_path):
    with pytest.raises(ModelLoadError, match=r"No model folder at .*nowhere"):
        models.load(tmp_path / "nowhere")


def test_refuses_folder_without_config(tmp_path):
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        models.load(tmp_path)


def test_refuses_broken_config(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        models.load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 8}))
    with pytest.raises(ModelLoadError, match="no model_type"):
        models.load(tmp_path)


def test_refuses_pickle_only_weights_and_says_how_to_convert(tmp_path):
    save_decoder_only(tmp_path, "llama")
    (tmp_path / "model.safetensors").unlink()
    torch.save({"w": torch.zeros(1)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ModelLoadError) as info:
        models.load(tmp_path)
    message = str(info.value)
    assert "pytorch_model.bin" in message
    assert "pickle" in message and "run any code" in message
    assert "save_pretrained" in message and "safe_serialization=True" in message


def test_refuses_folder_without_weights(tmp_path):
    save_decoder_only(tmp_path, "llama")
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match=r"no weights: no \*\.safetensors"):
        models.load(tmp_path)


def test_refuses_unsupported_family_and_lists_the_supported(tmp_path):
    tok = random_tokenizer(encoder_decoder=True)
    config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2)
    BertForMaskedLM(config).save_pretrained(tmp_path, safe_serialization=True)
    tok.save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError) as info:
        models.load(tmp_path)
    message = str(info.value)
    assert "'bert'" in message
    for family in SUPPORTED_FAMILIES:
        assert family in message
    assert "decoder-only" in message and "encoder-decoder" in message


def test_refuses_a_head_that_does_not_generate(tmp_path):
    tok = random_tokenizer(encoder_decoder=False)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2
    )
    LlamaForSequenceClassification(config).save_pretrained(tmp_path, safe_serialization=True)
    tok.save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="LlamaForSequenceClassification, which does not generate"):
        models.load(tmp_path)


def test_refuses_missing_tokenizer(tmp_path):
    save_decoder_only(tmp_path, "qwen2")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).unlink()
    with pytest.raises(ModelLoadError, match=r"has no tokenizer .*tokenizer\.save_pretrained"):
        models.load(tmp_path)
