"""Scenario "bart-batch-mask": a BART batch generated without its attention mask.

Two spoken dates go through tiny-bart as one padded batch, but only the ids reach generate():
`model.generate(batch["input_ids"])`. A decoder-only model would infer the mask from the pad ids;
an encoder-decoder model does not, so the encoder and every decoder layer's cross-attention read
the shorter row's pads as words of the source. The row parts from the same date generated alone
at step 0, in layer 0. The tempting fix encodes the batch with its mask once and hands generate()
the encoder outputs: the encoder is right then, but the cross-attention still reads the pads.
"""

from __future__ import annotations

import inspect

import torch

import models
from models.scenarios import Expected, Scenario, Setup

PROMPTS = ["the fifth of june nineteen ninety nine", "december third two thousand seven"]
ROW = 1  # the shorter source: the row with the pads


def broken_inputs(model, tok, sources: list[str]) -> dict:
    batch = tok(sources, padding=True, return_tensors="pt")
    return {"input_ids": batch["input_ids"]}  # model.generate(batch["input_ids"])


def fixed_inputs(model, tok, sources: list[str]) -> dict:
    batch = tok(sources, padding=True, return_tensors="pt")
    # The mask goes with the ids: the encoder and every cross-attention skip the pads.
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def tempting_inputs(model, tok, sources: list[str]) -> dict:
    batch = tok(sources, padding=True, return_tensors="pt")
    # "The encoder reads the pads": encode once, with the mask, and let generate() reuse the outputs.
    with torch.no_grad():
        encoder_outputs = model.get_encoder()(**batch)
    return {"input_ids": batch["input_ids"], "encoder_outputs": encoder_outputs}


_INPUTS = {"broken": broken_inputs, "fixed": fixed_inputs, "tempting": tempting_inputs}


def build(variant: str) -> Setup:
    model, tok = models.load("tiny-bart")
    inputs = _INPUTS[variant](model, tok, PROMPTS)
    input_ids, attention_mask = inputs.pop("input_ids"), inputs.pop("attention_mask", None)
    return Setup(
        model,
        tok,
        input_ids=input_ids,
        attention_mask=attention_mask,
        row=ROW,
        batch_kwargs=inputs or None,
    )


SCENARIO = Scenario(
    name="bart-batch-mask",
    title="A BART batch without its attention mask",
    description=(
        "Two spoken dates go through tiny-bart as one padded batch, but only input_ids reach generate(). "
        "Row 1 (the shorter date, padded on the right) is compared with the same date generated alone: "
        "it parts at step 0."
    ),
    explanation=(
        "generate() infers a missing attention mask from the pad ids for a decoder-only model, but not "
        "for an encoder-decoder one. Without the mask, BART's encoder lets every word attend to the pads, "
        "and every decoder layer's cross-attention reads the pads as if they were part of the source: the "
        "shorter row's decoder output differs from the date alone from step 0, in layer 0. The fix passes "
        "the mask (model.generate(**batch)). The tempting fix encodes the batch once with the mask and "
        "passes encoder_outputs to generate(): the encoder outputs are right, but the cross-attention "
        "still has no mask and still reads the pads; the difference is smaller, and still there."
    ),
    build=build,
    expected={
        "broken": Expected(False, step=0, layer=0),
        "fixed": Expected(True),
        "tempting": Expected(False, step=0, layer=0),
    },
    code={
        "broken": inspect.getsource(broken_inputs),
        "fixed": inspect.getsource(fixed_inputs),
        "tempting": inspect.getsource(tempting_inputs),
    },
    notes={
        "broken": "encoder and cross-attention read the pads",
        "fixed": "the mask goes with the ids",
        "tempting": "the encoder gets the mask, the cross-attention does not",
    },
    comparison="row-vs-alone",
)
