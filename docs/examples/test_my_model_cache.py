"""Check your model's KV cache in your own test suite, with Stepwise's cache doctor.

Copy this file into your project's tests, put your model in `model_and_tokenizer`, and run pytest:

    pip install path/to/stepwise-0.1.0-py3-none-any.whl    # or a checkout: pip install path/to/stepwise
    pytest test_my_model_cache.py

`tracer.assert_cache_consistent(model, tok, prompt)` generates greedily with the cache on and off
and compares the two runs step by step: the logits and every decoder layer's output at the newest
position, within a tolerance for the model's dtype. When they part it raises AssertionError with
the doctor's summary: the step and layer where they part (or the crash), the inputs that do not
fit what was fed, and the usual fix. Extra keyword arguments go to both runs (pixel_values=...).
"""

import pytest

import tracer

PROMPTS = [
    "tom has red balls . ann wants blue hats . what does ann want ?",
    "say : green kites sat the pink boxes . say again :",
]


@pytest.fixture(scope="module")
def model_and_tokenizer():
    # Your model and tokenizer here, for example:
    #     from transformers import AutoModelForCausalLM, AutoTokenizer
    #     return AutoModelForCausalLM.from_pretrained(FOLDER), AutoTokenizer.from_pretrained(FOLDER)
    # This file loads a model Stepwise ships, so that it runs as it is.
    import models

    return models.load("tiny-llama")


@pytest.mark.parametrize("prompt", PROMPTS)
def test_generation_is_the_same_with_and_without_the_cache(model_and_tokenizer, prompt):
    model, tok = model_and_tokenizer
    tracer.assert_cache_consistent(model, tok, prompt, max_new_tokens=8)


def test_a_broken_cache_fails_with_the_doctors_summary():
    # What a failure looks like: a shipped model whose prepare_inputs_for_generation numbers the fed
    # tokens from 0, so with the cache every new token sits at position 0.
    from models import scenarios

    setup = scenarios.build("stale-positions", "broken")
    with pytest.raises(AssertionError, match="step 1") as failure:
        tracer.assert_cache_consistent(setup.model, setup.tok, max_new_tokens=4, **setup.check_kwargs())
    assert "position" in str(failure.value)  # the summary names the likely cause
