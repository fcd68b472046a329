"""The errors the tracer raises for bad input, each with a message that names the problem and the fix."""

from __future__ import annotations

from tracer.i18n import N_

SUPPORTED_LAYOUTS = N_(
    "the Llama layout (LlamaForCausalLM and models with the same modules: Mistral, Qwen2, ...) and "
    "the BART layout (BartForConditionalGeneration and models with the same modules: mBART, ...)"
)


class StepwiseInputError(ValueError):
    """The input to a trace is unusable: empty or overlong prompt, bad settings."""


class TracingNotSupported(StepwiseInputError):
    """The model or the generation mode is one Stepwise does not trace (yet)."""
