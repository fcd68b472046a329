"""Scenario "side-inputs": image patches passed again on every step.

A Llama that reads an image: the prompt holds one placeholder token per image patch, and the
forward replaces the embeddings of those placeholders with projected patch features (plus an
embedding of each patch's box). Its `prepare_inputs_for_generation` passes the patches on every
step. Without the cache every step feeds the whole sequence, placeholders included, so it works;
with the cache, step 1 feeds only the new token, the replacement runs again with 3 patches and
0 placeholders, and the forward fails:

    shape mismatch: value tensor of shape [3, 64] cannot be broadcast to indexing result of shape [0, 64]
"""

from __future__ import annotations

import inspect

import torch
from torch import nn
from transformers import LlamaForCausalLM

from models.random_models import build_random_llama, random_tokenizer
from models.scenarios import Expected, Scenario, Setup
from tracer.i18n import N_  # the app shows a scenario's words in its user's language

SEED = 5
NUM_PATCHES = 3
PATCH_DIM = 48  # a 4x4 RGB patch, flattened


class PatchLlama(LlamaForCausalLM):
    """A Llama whose placeholder tokens are replaced by projected image patches and their boxes."""

    def __init__(self, config):
        super().__init__(config)
        self.patch_proj = nn.Linear(config.patch_dim, config.hidden_size)
        self.box_proj = nn.Linear(4, config.hidden_size)  # (x0, y0, x1, y1) -> hidden

    def forward(self, input_ids=None, pixel_values=None, boxes=None, inputs_embeds=None, **kwargs):
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)  # [batch, seq, hidden]
        if pixel_values is not None:
            features = self.patch_proj(pixel_values) + self.box_proj(boxes)  # [patches, hidden]
            is_patch = input_ids == self.config.image_token_id  # [batch, seq]
            inputs_embeds[is_patch] = features.to(inputs_embeds.dtype)
        return super().forward(inputs_embeds=inputs_embeds, **kwargs)


class BrokenPatchLlama(PatchLlama):
    def prepare_inputs_for_generation(self, input_ids, pixel_values=None, boxes=None, **kwargs):
        model_inputs = super().prepare_inputs_for_generation(input_ids, **kwargs)
        # The model needs its image: hand the patches to every forward call.
        model_inputs["pixel_values"] = pixel_values
        model_inputs["boxes"] = boxes
        return model_inputs


class FixedPatchLlama(PatchLlama):
    def prepare_inputs_for_generation(self, input_ids, pixel_values=None, boxes=None, **kwargs):
        model_inputs = super().prepare_inputs_for_generation(input_ids, **kwargs)
        fed = model_inputs["input_ids"]  # [batch, fed_len]: all tokens, or only the new one with the cache
        # The patches belong to their placeholder tokens: pass them exactly when those are fed
        # (the prefill; every step with use_cache=False). With the cache they are already in it.
        if fed is not None and (fed == self.config.image_token_id).any():
            model_inputs["pixel_values"] = pixel_values
            model_inputs["boxes"] = boxes
        return model_inputs


class TemptingPatchLlama(PatchLlama):
    def prepare_inputs_for_generation(
        self, input_ids, pixel_values=None, boxes=None, is_first_iteration=False, **kwargs
    ):
        model_inputs = super().prepare_inputs_for_generation(
            input_ids, is_first_iteration=is_first_iteration, **kwargs
        )
        # "Drop the patches after the first iteration": right with the cache, but with
        # use_cache=False every step feeds the placeholders again, now without their patches.
        if is_first_iteration:
            model_inputs["pixel_values"] = pixel_values
            model_inputs["boxes"] = boxes
        return model_inputs


_CLASSES = {"broken": BrokenPatchLlama, "fixed": FixedPatchLlama, "tempting": TemptingPatchLlama}


def build(variant: str) -> Setup:
    tok = random_tokenizer(encoder_decoder=False)
    image_token_id = len(tok)  # one id past the words: the placeholder has no text of its own
    base, tok = build_random_llama(vocab_size=len(tok) + 1, seed=SEED)
    config = base.config
    config.image_token_id = image_token_id
    config.patch_dim = PATCH_DIM
    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        model = _CLASSES[variant](config)
        model.load_state_dict(base.state_dict(), strict=False)  # same Llama; new projections
        pixel_values = torch.randn(NUM_PATCHES, PATCH_DIM)  # [patches, patch_dim]
        boxes = torch.rand(NUM_PATCHES, 4)  # [patches, 4]
    model.generation_config = base.generation_config
    model.set_attn_implementation(base.config._attn_implementation)
    model.eval()

    text_ids = tok("what is in the picture ?", add_special_tokens=False)["input_ids"]
    input_ids = torch.tensor([[tok.bos_token_id] + [image_token_id] * NUM_PATCHES + text_ids])
    return Setup(model, tok, input_ids=input_ids, model_kwargs={"pixel_values": pixel_values, "boxes": boxes})


SCENARIO = Scenario(
    name="side-inputs",
    title=N_("Side inputs on every step (image patches)"),
    description=N_(
        "A Llama that reads 3 image patches: its forward replaces the embeddings of the 3 placeholder "
        "tokens with projected patch features, and its prepare_inputs_for_generation passes "
        "pixel_values and boxes on every step. It works with use_cache=False and crashes with the "
        "cache on, at step 1."
    ),
    explanation=N_(
        "With the cache, step 0 (the prefill) feeds the whole prompt, placeholders included, and the "
        "patches land in the cache as keys and values. From step 1 on only the new token is fed, "
        "input_ids [1, 1], but pixel_values [3, 48] come along again: the forward selects 0 "
        "placeholder positions and tries to write 3 patch vectors into them. Without the cache every "
        "step feeds all tokens, placeholders included, which is why turning the cache off 'fixes' it "
        "at the price of recomputing everything. The fix passes the patches exactly when their "
        "placeholder tokens are fed. The tempting fix, passing them only on the first iteration, "
        "works with the cache but breaks use_cache=False: there every step feeds the placeholders "
        "again, now without patches, and the model silently reads the placeholders' own embeddings."
    ),
    build=build,
    expected={
        "broken": Expected(False, step=1, layer=None, error="RuntimeError"),
        "fixed": Expected(True),
        "tempting": Expected(False, step=1, layer=0),
    },
    code={
        "broken": inspect.getsource(BrokenPatchLlama),
        "fixed": inspect.getsource(FixedPatchLlama),
        "tempting": inspect.getsource(TemptingPatchLlama),
        "model": inspect.getsource(PatchLlama),
    },
    notes={
        "broken": N_("crashes with the cache on; works with it off"),
        "fixed": N_("works with the cache on and off"),
        "tempting": N_("works with the cache on; silently wrong with use_cache=False"),
    },
)
