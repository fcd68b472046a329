"""Scenario "batch-right-padding": a decoder-only batch padded on the right.

Two questions about one story go through tiny-llama as a batch. The tokenizer pads the shorter
prompt on the right (tiny-llama's tokenizer does by default, like many). generate() appends every
new token after the pads, so the shorter row's first new token is predicted at a pad position
instead of at its last word: the row parts from the same prompt generated alone at step 0, in
layer 0. Cache on and off agree with each other here: the doctor compares the row with its prompt
generated alone. The tempting fix derives position_ids from the mask, which is right but leaves
the pads between the prompt and its continuation.
"""

from __future__ import annotations

import inspect

from transformers import LlamaForCausalLM

import models
from models.scenarios import Expected, Scenario, Setup

PROMPTS = [
    "tom has red balls . ann wants blue hats . what does ann want ?",
    "tom has red balls . what does tom have ?",
]
ROW = 1  # the shorter prompt: the row with the pads


def broken_batch(tok, prompts: list[str]):
    # One tensor for the batch: pad the shorter prompts (the tokenizer's side, the right).
    return tok(prompts, padding=True, padding_side="right", return_tensors="pt")


def fixed_batch(tok, prompts: list[str]):
    # A decoder-only model continues each row from its last token: pad on the left.
    return tok(prompts, padding=True, padding_side="left", return_tensors="pt")


class MaskPositionsLlama(LlamaForCausalLM):
    """The tempting fix: right padding kept, position_ids counted from the mask on every step."""

    def prepare_inputs_for_generation(self, input_ids, attention_mask=None, **kwargs):
        model_inputs = super().prepare_inputs_for_generation(
            input_ids, attention_mask=attention_mask, **kwargs
        )
        if attention_mask is not None:  # None: no pads (generate() drops a mask of all ones)
            # "The pads shift the positions": count each row's positions from its mask, pads left out.
            positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # [batch, len so far]
            fed = model_inputs["input_ids"].shape[1]
            model_inputs["position_ids"] = positions[:, -fed:]
        return model_inputs


def build(variant: str) -> Setup:
    model, tok = models.load("tiny-llama")
    if variant == "tempting":
        base = model
        model = MaskPositionsLlama(base.config)
        model.load_state_dict(base.state_dict())
        model.generation_config = base.generation_config
        model.set_attn_implementation(base.config._attn_implementation)
        model.eval()
    batch = fixed_batch(tok, PROMPTS) if variant == "fixed" else broken_batch(tok, PROMPTS)
    return Setup(
        model,
        tok,
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        row=ROW,
    )


SCENARIO = Scenario(
    name="batch-right-padding",
    title="A decoder-only batch padded on the right",
    description=(
        "Two questions about one story go through tiny-llama as a batch, the shorter one padded on the "
        "right. Row 1 of the batch is compared with the same question generated alone: it parts at "
        "step 0. Cache on and off agree; the batch itself is wrong."
    ),
    explanation=(
        "A decoder-only model continues each row from its last position. With right padding, the last "
        "position of the shorter row is a pad: generate() predicts its first new token there (attending "
        "to the real words, but from the pad's own embedding), and appends every later token after the "
        "pads. Row 1 parts from its prompt alone at step 0, already in layer 0's output. Padding on the "
        "left puts the pads before the prompt, where the attention mask hides them, and generate() "
        "counts positions from the mask, so the row computes exactly what the prompt alone computes. The "
        "tempting fix keeps right padding and counts position_ids from the mask: the positions of later "
        "tokens are right then, but the first new token is still predicted at a pad."
    ),
    build=build,
    expected={
        "broken": Expected(False, step=0, layer=0),
        "fixed": Expected(True),
        "tempting": Expected(False, step=0, layer=0),
    },
    code={
        "broken": inspect.getsource(broken_batch),
        "fixed": inspect.getsource(fixed_batch),
        "tempting": inspect.getsource(broken_batch) + "\n\n" + inspect.getsource(MaskPositionsLlama),
    },
    notes={
        "broken": "row 1 parts from its prompt alone at step 0",
        "fixed": "every row equals its prompt alone",
        "tempting": "positions from the mask, still padded on the right: still wrong",
    },
    comparison="row-vs-alone",
)
