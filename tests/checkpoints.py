"""Tiny checkpoint folders for the tests: random weights, a config shaped like a family, a word
tokenizer saved beside it, and optionally a generation_config.json, as a hub checkpoint ships them.

Small on purpose (hidden 32, 2 layers): a folder saves and loads in well under a second.
"""

from __future__ import annotations

import torch
from transformers import GenerationConfig

from models.random_models import _special_ids, random_tokenizer

__all__ = ["decoder_config", "encoder_decoder_config", "random_tokenizer", "save_checkpoint"]


def decoder_config(config_cls, tok, **overrides):
    """A decoder-only config (Llama, Mistral, Qwen2): 2 layers, 4 query heads sharing 2 kv heads."""
    fields = dict(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        **_special_ids(tok),
    )
    return config_cls(**{**fields, **overrides})


def encoder_decoder_config(config_cls, tok, **overrides):
    """An encoder-decoder config (BART, mBART): 2 + 2 layers, 4 heads, decoding from </s>."""
    fields = dict(
        vocab_size=len(tok),
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=64,
        decoder_start_token_id=tok.eos_token_id,
        forced_bos_token_id=None,
        forced_eos_token_id=None,
        **_special_ids(tok),
    )
    return config_cls(**{**fields, **overrides})


def save_checkpoint(folder, model_cls, config, tok, generation: dict | None = None, dtype=None):
    """Build `model_cls(config)` with seeded random weights and save it as safetensors with `tok`.

    `generation` overrides fields of the model's generation config, saved as generation_config.json
    the way a hub checkpoint carries its own settings.
    """
    torch.manual_seed(0)
    model = model_cls(config)
    if dtype is not None:
        model = model.to(dtype)
    if generation is not None:
        model.generation_config = GenerationConfig(**{**model.generation_config.to_dict(), **generation})
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder
