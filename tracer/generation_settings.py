"""The generation settings a traced run uses, and where each one came from.

`generate()` starts from the model's own `generation_config` (a checkpoint's
generation_config.json: beams for bart-large, sampling at temperature 0.6 for instruct models),
lets the caller's arguments override it field by field, and fills what is still unset with
transformers' global defaults. `resolve_settings` does the same, without running anything, so a
trace can record every setting in force with its source, and can refuse the settings Stepwise
does not trace yet *before* generating, naming the setting, its source and the fix.

The run itself still passes the caller's own arguments to `generate()`: this module only reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transformers import GenerationConfig

from tracer.errors import TracingNotSupported
from tracer.i18n import N_, phrase, templated

CALLER = "caller"
CHECKPOINT = "checkpoint"
DEFAULT = "transformers default"
SOURCE_WORDS = {
    CALLER: N_("your arguments"),
    CHECKPOINT: N_("the checkpoint's generation_config.json"),
    DEFAULT: N_("transformers' global default"),
}

# Fields that are Stepwise's own instrumentation of the run, or bookkeeping, not settings.
_NOT_SETTINGS = {
    "output_attentions",
    "output_hidden_states",
    "output_scores",
    "output_logits",
    "return_dict_in_generate",
    "transformers_version",
    "_from_model_config",
}
# Global defaults worth listing even when nobody set them: they shape greedy search and sampling.
_SHOWN_DEFAULTS = (
    "do_sample",
    "num_beams",
    "num_return_sequences",
    "use_cache",
    "temperature",
    "top_k",
    "top_p",
    "repetition_penalty",
    "no_repeat_ngram_size",
)
# Settings Stepwise does not trace yet: (what they do, the value that traces, what is then traced).
# The words are msgids: the app says the refusal in its user's language (tracer.i18n.phrase).
UNTRACEABLE: dict[str, tuple[str, Any, str]] = {
    # Traced with beam search (num_beams > 1), which returns its best hypotheses; not for sampling.
    "num_return_sequences": (N_("Several sampled sequences per prompt"), 1, N_("one sequence per prompt")),
    "num_beam_groups": (N_("Group beam search"), 1, N_("one group")),
    "penalty_alpha": (N_("Contrastive search"), None, N_("without it")),
    "dola_layers": (N_("DoLa decoding"), None, N_("without it")),
    "guidance_scale": (N_("Classifier-free guidance"), None, N_("without it")),
    "prompt_lookup_num_tokens": (N_("Prompt-lookup decoding"), None, N_("one token per step")),
    "assistant_early_exit": (N_("Self-speculative decoding"), None, N_("one token per step")),
    "prefill_chunk_size": (N_("A chunked prefill"), None, N_("the prompt in one prefill step")),
    "use_mtp": (N_("Multi-token prediction"), None, N_("one token per step")),
}


@dataclass(frozen=True)
class ResolvedSettings:
    """Every generation setting in force for one run: `values[key]`, from `sources[key]`."""

    values: dict[str, Any]
    sources: dict[str, str]

    def eos_token_ids(self) -> list[int]:
        return eos_ids(self.values.get("eos_token_id"))

    def describe(self, key: str) -> str:
        """A setting and its source, e.g. "num_beams=4 from your arguments" (a phrase: an app's
        error message says it in its user's language)."""
        source = phrase(SOURCE_WORDS[self.sources.get(key, DEFAULT)])
        return phrase(
            N_("{key}={value} from {source}"), key=key, value=repr(self.values.get(key)), source=source
        )


def eos_ids(value: Any) -> list[int]:
    """An eos_token_id setting (None, one id or several) as a list of ids."""
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    return [int(v) for v in (value.tolist() if hasattr(value, "tolist") else value)]


def generation_fields() -> set[str]:
    """The names generate() reads as generation settings (GenerationConfig's fields)."""
    return set(GenerationConfig().to_dict()) - _NOT_SETTINGS


def split_generation_kwargs(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(generation settings, model inputs) among a call's extra keyword arguments."""
    fields = generation_fields()
    settings = {k: v for k, v in kwargs.items() if k in fields}
    return settings, {k: v for k, v in kwargs.items() if k not in fields}


def resolve_settings(
    model, overrides: dict[str, Any], *, input_len: int, generation_config: GenerationConfig | None = None
) -> ResolvedSettings:
    """The settings generate() will use: caller's `overrides` > the model's generation_config > defaults.

    `generation_config`, when the caller passes one to generate(), counts as the caller's: its
    set fields override the model's, as in generate(). `input_len` is the length of what the
    decoder starts from (the prompt; BART's decoder start token), for `max_new_tokens`.
    """
    caller: dict[str, Any] = {}
    if generation_config is not None:
        caller.update({k: v for k, v in generation_config.to_dict().items() if v is not None})
    caller.update({k: v for k, v in overrides.items() if v is not None})
    caller = {k: v for k, v in caller.items() if k not in _NOT_SETTINGS}
    checkpoint = {
        k: v
        for k, v in model.generation_config.to_dict().items()
        if v is not None and k not in _NOT_SETTINGS and k not in caller
    }
    # transformers' own table of global defaults (no public accessor; generate() reads the same one).
    defaults = GenerationConfig._get_default_generation_params()

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key in _SHOWN_DEFAULTS:
        if key in defaults:
            values[key], sources[key] = defaults[key], DEFAULT
    for source, part in ((CHECKPOINT, checkpoint), (CALLER, caller)):
        for key, value in part.items():
            values[key], sources[key] = value, source

    # max_new_tokens as generate() derives it: max_new_tokens wins over max_length, else
    # max_length counts the start, else the default max_length (20) of new tokens, within the
    # model's positions.
    if values.get("max_new_tokens") is None:
        if values.get("max_length") is not None:
            values["max_new_tokens"] = int(values["max_length"]) - input_len
            sources["max_new_tokens"] = sources["max_length"]
        else:
            limit = getattr(model.config, "max_position_embeddings", None)
            total = int(defaults["max_length"]) + input_len
            values["max_new_tokens"] = (min(total, limit) if limit else total) - input_len
            sources["max_new_tokens"] = DEFAULT
    return ResolvedSettings(values, sources)


# Settings that switch their feature on only above a threshold (guidance_scale 1.0 is no guidance).
_ACTIVE_ABOVE = {"guidance_scale": 1.0, "penalty_alpha": 0.0, "prompt_lookup_num_tokens": 0}


def _active(key: str, value: Any, traced_value: Any) -> bool:
    if value is None or value is False or value == traced_value:
        return False
    if key in _ACTIVE_ABOVE:
        return value > _ACTIVE_ABOVE[key]
    return True


def refuse_untraceable(settings: ResolvedSettings) -> None:
    """TracingNotSupported for the first setting Stepwise does not trace, naming its source and the fix."""
    for key, (feature, traced_value, what) in UNTRACEABLE.items():
        value = settings.values.get(key)
        if not _active(key, value, traced_value):
            continue
        if key == "num_return_sequences" and (settings.values.get("num_beams") or 1) > 1:
            if value > settings.values["num_beams"]:
                raise templated(
                    TracingNotSupported,
                    N_(
                        "num_return_sequences={value} asks for more hypotheses than num_beams={beams} "
                        "keeps: lower it to at most num_beams."
                    ),
                    value=value,
                    beams=settings.values["num_beams"],
                )
            continue  # beam search returns its best hypotheses: traced
        fix = (
            phrase(N_("pass {key}={value}"), key=key, value=repr(traced_value))
            if traced_value is not None
            else phrase(N_("leave {key} unset (None)"), key=key)
        )
        raise templated(
            TracingNotSupported,
            N_(
                "{feature} is not traced yet (Stepwise traces one token per row per step, or beams): "
                "{setting}; {fix} to trace {what}."
            ),
            feature=phrase(feature),
            setting=settings.describe(key),
            fix=fix,
            what=phrase(what),
        )
