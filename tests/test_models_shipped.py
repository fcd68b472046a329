"""The shipped checkpoints: small, safetensors only, load offline and fast, and score on held-out data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from transformers import AutoTokenizer

import models
from models import CHECKPOINTS_DIR, SHIPPED
from models.evaluate import (
    README_EXAMPLES,
    THRESHOLDS,
    answer,
    generate_exact_match,
    held_out,
    llama_answer_accuracy,
)
from models.tokenizer import unknown_words
from models.train import build_tokenizer

ROOT = Path(__file__).resolve().parents[1]
MAX_FOLDER_BYTES = 8 * 1024 * 1024


@pytest.fixture(scope="module")
def llama():
    return models.load("tiny-llama")


@pytest.fixture(scope="module")
def bart():
    return models.load("tiny-bart")


@pytest.mark.parametrize("name", SHIPPED)
def test_checkpoint_folder_is_small_and_has_no_pickle(name):
    folder = CHECKPOINTS_DIR / name
    files = {p.name: p.stat().st_size for p in folder.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"} <= set(files)
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".ckpt", ".pkl"))]
    assert sum(files.values()) <= MAX_FOLDER_BYTES


def test_shipped_models_are_the_default_names():
    assert models.available()[:2] == ["tiny-llama", "tiny-bart"]


@pytest.mark.slow
def test_loads_offline_in_a_fresh_process_from_the_shipped_weights(tmp_path):
    # A fresh interpreter with the hub switched off and an empty cache: a load that needed the
    # network or a cached download would fail here. The weights must be the shipped file's, not
    # a model built or trained on the spot (how long a load takes is not a test's business).
    script = textwrap.dedent(
        """
        import json
        from safetensors.torch import load_file
        import models
        from models import CHECKPOINTS_DIR
        same = {}
        for name in ("tiny-llama", "tiny-bart"):
            model, tok = models.load(name)
            shipped = load_file(str(CHECKPOINTS_DIR / name / "model.safetensors"))
            state = model.state_dict()
            same[name] = all(key in state and state[key].equal(value) for key, value in shipped.items())
            ids = tok("march first twenty twenty" if name == "tiny-bart" else "say : red cat . say again :",
                      return_tensors="pt")
            model.generate(**ids, max_new_tokens=4, do_sample=False)
        print(json.dumps(same))
        """
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"tiny-llama": True, "tiny-bart": True}


@pytest.mark.parametrize("name", SHIPPED)
def test_tokenizer_loads_through_autotokenizer_and_names_unknown_words(name):
    tok = AutoTokenizer.from_pretrained(CHECKPOINTS_DIR / name, local_files_only=True)
    built = build_tokenizer(name)
    assert tok.get_vocab() == built.get_vocab()
    assert [tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id] == [0, 1, 2, 3]
    assert unknown_words(tok, "Tom has a purple Giraffe .") == (
        ["purple", "Giraffe"] if name == "tiny-llama" else ["Tom", "has", "a", "purple", "Giraffe", "."]
    )


def test_generation_configs_stop_at_the_end_of_the_answer(llama, bart):
    for model, _ in (llama, bart):
        assert model.generation_config.eos_token_id == 2
        assert model.config._attn_implementation == "eager"
    assert bart[0].generation_config.decoder_start_token_id == 2
    assert bart[0].generation_config.forced_bos_token_id is None
    assert bart[0].generation_config.forced_eos_token_id is None


@pytest.mark.slow
def test_tiny_llama_held_out_accuracy_on_a_fixed_sample(llama):
    model, tok = llama
    assert llama_answer_accuracy(model, tok, held_out("tiny-llama", 100)) >= THRESHOLDS["tiny-llama"]


def test_tiny_bart_held_out_exact_match_on_a_fixed_sample(bart):
    model, tok = bart
    assert generate_exact_match(model, tok, held_out("tiny-bart", 100)) >= THRESHOLDS["tiny-bart"]


@pytest.mark.parametrize("index", range(len(README_EXAMPLES)))
def test_readme_examples_answer_as_documented(llama, bart, index):
    name, prompt, expected = README_EXAMPLES[index]
    model, tok = llama if name == "tiny-llama" else bart
    assert answer(model, tok, prompt) == expected


@pytest.mark.slow
def test_evaluate_command_prints_scores_and_examples(capsys):
    from models.evaluate import main

    assert main(["tiny-bart", "--n", "20"]) == 0
    out = capsys.readouterr().out
    assert "tiny-bart: exact_match" in out and "(pass" in out
    assert "'march twenty first twenty twenty four' -> '2024 03 21'" in out
