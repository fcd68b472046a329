"""The training script: a few Trainer steps into tmp_path give a folder that models.load reads back."""

from __future__ import annotations

import pytest
import torch

import models
from models import corpus, train
from models.tokenizer import unknown_words


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-bart"])
def test_short_training_run_writes_a_loadable_checkpoint(tmp_path, name, capsys):
    out = tmp_path / name
    train.main([name, "--steps", "3", "--examples", "96", "--threads", "1", "--out", str(out)])
    assert f"saved to {out}" in capsys.readouterr().out

    files = {p.name for p in out.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"} <= files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl"))]

    model, tok = models.load(out)
    assert model.config._attn_implementation == "eager"
    # Three optimiser steps moved the weights away from the seeded initialisation.
    fresh = train.build_model(name, train.build_tokenizer(name), seed=train.RECIPES[name].seed)
    trained = dict(model.named_parameters())
    assert any(not torch.equal(p, trained[n]) for n, p in fresh.named_parameters())

    # The tokenizer came back through AutoTokenizer with the corpus vocabulary and its <unk>.
    example = corpus.training_examples(name, 1)[0]
    assert unknown_words(tok, example.prompt) == []
    assert unknown_words(tok, example.prompt + " zebra") == ["zebra"]
    generated = model.generate(**tok(example.prompt, return_tensors="pt"), max_new_tokens=2, do_sample=False)
    assert generated.shape[0] == 1
