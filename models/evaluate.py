"""Held-out scores of the shipped models.

    python -m models.evaluate                  # both shipped models, 1000 held-out examples each
    python -m models.evaluate tiny-bart --n 200 --model /tmp/bart

tiny-llama: next-token accuracy, teacher forced, on the positions the data determines (the
answer after the question, and the </s> that ends it); also the share of answers that greedy
`generate()` reproduces exactly. tiny-bart: exact match of greedy `generate()` on held-out dates.
Held-out examples never occur in the training data (models/corpus.py checks this).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from models import EXAMPLES, SHIPPED, corpus, load
from models.train import RECIPES

THRESHOLDS = {"tiny-llama": 0.95, "tiny-bart": 0.95}

# The shipped models' example prompts, with what each answers (greedy); a test keeps them true.
README_EXAMPLES: list[tuple[str, str, str]] = [
    (name, prompt, answer) for name in SHIPPED for prompt, answer in EXAMPLES[name]
]


def held_out(name: str, n: int) -> list[corpus.Example]:
    return corpus.held_out_examples(name, n, RECIPES[name].n_train)


@torch.no_grad()
def llama_answer_accuracy(model, tok, examples: list[corpus.Example]) -> float:
    """Share of answer tokens (and the final </s>) that the model ranks first, given the true prefix."""
    correct = total = 0
    for ex in examples:
        n_prompt = len(tok(ex.prompt)["input_ids"])
        ids = tok(f"{ex.prompt} {ex.answer}")["input_ids"] + [tok.eos_token_id]
        logits = model(input_ids=torch.tensor([ids])).logits[0]  # [seq, vocab]
        # Logits at position t predict token t+1: the answer starts at index n_prompt.
        predicted = logits[n_prompt - 1 : len(ids) - 1].argmax(-1)  # [answer_len]
        target = torch.tensor(ids[n_prompt:])
        correct += int((predicted == target).sum())
        total += len(target)
    return correct / total


@torch.no_grad()
def generate_exact_match(model, tok, examples: list[corpus.Example], batch_size: int = 64) -> float:
    """Share of prompts for which greedy generate() gives exactly the answer, then stops."""
    hits = 0
    decoder_only = not model.config.is_encoder_decoder
    for start in range(0, len(examples), batch_size):
        batch = examples[start : start + batch_size]
        if decoder_only:
            # One at a time: word tokenizers pad on the right, and a decoder-only model must not
            # continue after padding. The stories are short, so this stays fast.
            outputs = []
            for ex in batch:
                ids = tok(ex.prompt, return_tensors="pt")
                out = model.generate(**ids, do_sample=False, max_new_tokens=24)
                outputs.append(out[0, ids["input_ids"].shape[1] :])
        else:
            enc = tok([ex.prompt for ex in batch], return_tensors="pt", padding=True)
            outputs = list(model.generate(**enc, do_sample=False, max_new_tokens=12))
        for ex, out in zip(batch, outputs, strict=True):
            ended = tok.eos_token_id in out.tolist()
            text = tok.decode(out, skip_special_tokens=True).strip()
            hits += int(ended and text == ex.answer)
    return hits / len(examples)


@torch.no_grad()
def answer(model, tok, prompt: str, max_new_tokens: int = 24) -> str:
    """The model's greedy answer to `prompt`, without the prompt and the special tokens."""
    ids = tok(prompt, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)[0]
    if not model.config.is_encoder_decoder:
        out = out[ids["input_ids"].shape[1] :]  # a decoder-only model returns the prompt too
    return tok.decode(out, skip_special_tokens=True).strip()


def held_out_score(name: str, model, tok, n: int) -> float:
    """The headline score on `n` held-out examples (used to stop training early)."""
    was_training = model.training
    model.eval()
    examples = held_out(name, n)
    if name == "tiny-llama":
        score = llama_answer_accuracy(model, tok, examples)
    else:
        score = generate_exact_match(model, tok, examples)
    model.train(was_training)
    return score


def scores(name: str, n: int, model_path: str | Path | None = None) -> dict[str, float]:
    """The held-out scores of one model: the shipped checkpoint, or the folder `model_path`."""
    model, tok = load(model_path or name)
    examples = held_out(name, n)
    if name == "tiny-llama":
        return {
            "answer_token_accuracy": llama_answer_accuracy(model, tok, examples),
            "exact_match": generate_exact_match(model, tok, examples),
        }
    return {"exact_match": generate_exact_match(model, tok, examples)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="tiny-llama and/or tiny-bart (default: both)")
    parser.add_argument("--n", type=int, default=1000, help="held-out examples per model")
    parser.add_argument("--model", default=None, help="a checkpoint folder instead of the shipped one")
    args = parser.parse_args(argv)
    names = args.names or list(THRESHOLDS)
    if unknown := [n for n in names if n not in THRESHOLDS]:
        parser.error(f"unknown model {unknown[0]!r}: choose from {', '.join(THRESHOLDS)}")
    torch.set_num_threads(2)
    failed = False
    for name in names:
        result = scores(name, args.n, args.model)
        headline = "answer_token_accuracy" if name == "tiny-llama" else "exact_match"
        ok = result[headline] >= THRESHOLDS[name]
        failed |= not ok
        shown = ", ".join(f"{k} {v:.2%}" for k, v in result.items())
        verdict = "pass" if ok else "FAIL"
        print(f"{name}: {shown} on {args.n} held-out examples ({verdict}: {headline} >= 95%)")
        if args.model is None:
            model, tok = load(name)
            for example_name, prompt, _ in README_EXAMPLES:
                if example_name == name:
                    print(f"    {prompt!r} -> {answer(model, tok, prompt)!r}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
