"""Hook-point names: one name per place in a model, the same for every architecture.

Built only here, so the recorder, the plots and the tests agree on them. The Hugging Face module
path of each place is kept beside the name in `Event.module`.

| name                           | Llama module               | BART module                          |
| ------------------------------ | -------------------------- | ------------------------------------ |
| generate.prepare_inputs        | prepare_inputs_for_generation (method)                            |
| forward                        | the model's forward call (logits out)                             |
| encoder                        | none                       | model.encoder                        |
| encoder.layers.{i}.self_attn   | none                       | model.encoder.layers[i].self_attn    |
| decoder.layers.{i}             | model.layers[i]            | model.decoder.layers[i]              |
| decoder.layers.{i}.self_attn   | model.layers[i].self_attn  | model.decoder.layers[i].self_attn    |
| decoder.layers.{i}.cross_attn  | none                       | model.decoder.layers[i].encoder_attn |
| lm_head                        | lm_head                    | lm_head (+ final_logits_bias)        |
| generate.choose_token          | the token choice in generate() after the logits processors        |
| encoder.embed_tokens           | none                       | model.encoder.embed_tokens           |
| decoder.embed_tokens           | model.embed_tokens         | model.decoder.embed_tokens           |
| decoder.layers.{i}.mlp         | model.layers[i].mlp        | model.decoder.layers[i].fc1 .. fc2   |

`forward` and `decoder.layers.{i}` are additions to the design's table: the cache doctor compares
each decoder block's output between a cached and an uncached run, and the final logits are the
model's output (BART adds `final_logits_bias` after lm_head), so both are recorded as events.
`generate.choose_token` marks the end of a step: the distribution the token was drawn from and
the token itself. The embeddings and each decoder block's MLP are recorded (shapes only) so the
call flow shows every stage a token passes through; BART has no MLP module, so its MLP event
opens when `fc1` is called and closes when `fc2` returns.
"""

from __future__ import annotations

import re

PREPARE_INPUTS = "generate.prepare_inputs"
FORWARD = "forward"
ENCODER = "encoder"
LM_HEAD = "lm_head"
ENCODER_EMBED = "encoder.embed_tokens"
DECODER_EMBED = "decoder.embed_tokens"
CHOOSE_TOKEN = "generate.choose_token"

# Training (tracer/training.py) uses the same vocabulary for its own places.
SHIFT_TOKENS_RIGHT = "train.shift_tokens_right"
LOSS = "train.loss"


def encoder_self_attn(layer: int) -> str:
    return f"encoder.layers.{layer}.self_attn"


def decoder_layer(layer: int) -> str:
    return f"decoder.layers.{layer}"


def decoder_self_attn(layer: int) -> str:
    return f"decoder.layers.{layer}.self_attn"


def decoder_cross_attn(layer: int) -> str:
    return f"decoder.layers.{layer}.cross_attn"


def decoder_mlp(layer: int) -> str:
    return f"decoder.layers.{layer}.mlp"


# Which attention a name holds, as `Step.attention(kind, layer)` asks for it.
ATTENTION_KINDS = ("self", "cross", "encoder")
_ATTENTION_NAME = {"self": decoder_self_attn, "cross": decoder_cross_attn, "encoder": encoder_self_attn}
_LAYER_RE = re.compile(r"^(encoder|decoder)\.layers\.(\d+)(?:\.(self_attn|cross_attn|mlp))?$")


def attention_name(kind: str, layer: int) -> str:
    """The hook-point name of attention `kind` ("self", "cross" or "encoder") in `layer`."""
    if kind not in _ATTENTION_NAME:
        raise ValueError(f"Unknown attention kind {kind!r}: use one of {', '.join(ATTENTION_KINDS)}.")
    return _ATTENTION_NAME[kind](layer)


def parse_layer(name: str) -> tuple[str, int, str | None] | None:
    """("decoder", 3, "self_attn") for "decoder.layers.3.self_attn"; None for names without a layer."""
    match = _LAYER_RE.match(name)
    if match is None:
        return None
    stack, layer, part = match.groups()
    return stack, int(layer), part


def attention_kind(name: str) -> str | None:
    """ "self", "cross" or "encoder" for an attention hook-point name, else None."""
    parsed = parse_layer(name)
    if parsed is None or parsed[2] not in ("self_attn", "cross_attn"):
        return None
    stack, _, part = parsed
    if stack == "encoder":
        return "encoder"
    return "self" if part == "self_attn" else "cross"
