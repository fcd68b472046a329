"""Small random-initialised Llama and BART models, built in code from a fixed seed.

They have the real Hugging Face module layout (grouped-query attention on the Llama), so every
hook point of the tracer is exercised, and they build in well under a second with no download.
Their attention is random: the trained models in models/checkpoints/ are the ones to look at.
"""

from __future__ import annotations

import torch
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
)

from models.tokenizer import build_word_tokenizer

SEED = 1234

# A small English vocabulary, enough for readable prompts in tests and demos.
WORDS = """
the a an and or but of to in on at by for with from is was are were be has had have cat dog
bird fish cow horse mouse fox owl bee tom ann sam mia leo zoe max eva red blue green black
white big small old new happy sad quick slow sat ran saw ate took gave had likes sees runs
eats sleeps jumps reads writes mat hat box ball book apple cake tree house garden park river
road car boat one two three four five six seven eight nine ten zero january february march
april may june july august september october november december then there here it he she they
we you i my his her their this that what where who yes no not very too also once upon time day
night morning . , ? !
""".split()


def random_tokenizer(*, encoder_decoder: bool):
    return build_word_tokenizer(WORDS, wrap_with_eos=encoder_decoder)


def _special_ids(tok) -> dict[str, int]:
    return {
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }


def build_random_llama(
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    max_positions: int = 128,
    vocab_size: int | None = None,
    seed: int = SEED,
):
    """A LlamaForCausalLM with grouped-query attention and its word tokenizer.

    `vocab_size` larger than the tokenizer's vocabulary is allowed (benchmarks use it to get
    a realistic lm_head); the extra ids simply have no word.
    """
    tok = random_tokenizer(encoder_decoder=False)
    config = LlamaConfig(
        vocab_size=max(vocab_size or 0, len(tok)),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=False,
        **_special_ids(tok),
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    _finish(model, tok, GenerationConfig(**_special_ids(tok)))
    return model, tok


def build_random_bart(
    *,
    d_model: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    max_positions: int = 128,
    seed: int = SEED,
):
    """A BartForConditionalGeneration (encoder and decoder of `num_layers` each) and its tokenizer."""
    tok = random_tokenizer(encoder_decoder=True)
    ids = _special_ids(tok)
    config = BartConfig(
        vocab_size=len(tok),
        d_model=d_model,
        encoder_layers=num_layers,
        decoder_layers=num_layers,
        encoder_attention_heads=num_heads,
        decoder_attention_heads=num_heads,
        encoder_ffn_dim=d_model * 2,
        decoder_ffn_dim=d_model * 2,
        max_position_embeddings=max_positions,
        decoder_start_token_id=tok.eos_token_id,
        forced_bos_token_id=None,
        forced_eos_token_id=None,
        **ids,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = BartForConditionalGeneration(config)
    generation = GenerationConfig(decoder_start_token_id=tok.eos_token_id, **ids)
    _finish(model, tok, generation)
    return model, tok


def _finish(model, tok, generation_config: GenerationConfig) -> None:
    # Random weights often pick </s> first; without an end-of-sequence token a random model
    # always runs for max_new_tokens steps, which is what a demo or a test of the tracer wants.
    generation_config.eos_token_id = None
    # Eager attention is the only implementation that returns attention weights.
    model.set_attn_implementation("eager")
    model.generation_config = generation_config
    model.eval()
