"""Loading a local checkpoint folder: offline, safetensors only, no remote code, eager attention.

`load_checkpoint_folder(folder)` reads a Hugging Face checkpoint folder (config.json, weights in
safetensors, tokenizer files) of a family Stepwise traces, and refuses everything else with a
message that says what is wrong and what to do:

- a folder that does not exist, or has no config.json, or a config.json that does not parse;
- a model family Stepwise does not trace (the message lists those it does);
- weights only in pickle files (.bin, .pt, ...), which can run code when loaded;
- no tokenizer.

Nothing here goes to the network: every `from_pretrained` has `local_files_only=True`, so it
works the same with `HF_HUB_OFFLINE=1`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

from tracer.i18n import N_, templated

# The families Stepwise is tested on (tests/test_models_local.py traces each one), by the
# config's `model_type`. Decoder-only ones have the Llama layout (model.layers[i].self_attn,
# lm_head); encoder-decoder ones the BART layout (encoder and decoder layers, encoder_attn).
SUPPORTED_FAMILIES: dict[str, str] = {
    "llama": "decoder-only",
    "mistral": "decoder-only",
    "qwen2": "decoder-only",
    "bart": "encoder-decoder",
    "mbart": "encoder-decoder",
}
# The heads that generate text; a classification head on a supported body is refused.
GENERATION_HEADS = ("ForCausalLM", "ForConditionalGeneration")

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "sentencepiece.bpe.model",
    "spiece.model",
)


def supported_families_text() -> str:
    """The supported families as a sentence, for error messages and the app."""
    by_arch: dict[str, list[str]] = {}
    for family, arch in SUPPORTED_FAMILIES.items():
        by_arch.setdefault(arch, []).append(family)
    return "; ".join(f"{arch}: {', '.join(families)}" for arch, families in by_arch.items())


def read_config(folder: Path) -> dict:
    """config.json as a dict, or a ModelLoadError that says why the folder is not a checkpoint."""
    from models import ModelLoadError

    folder = Path(folder)
    if not folder.exists():
        raise templated(
            ModelLoadError,
            N_("No model folder at {folder}. Give a built-in name or the path of a local checkpoint folder."),
            folder=folder,
        )
    if not folder.is_dir():
        raise templated(
            ModelLoadError,
            N_("{folder} is a file, not a folder. Give the folder that holds config.json."),
            folder=folder,
        )
    path = folder / "config.json"
    if not path.is_file():
        raise templated(
            ModelLoadError,
            N_(
                "{folder} has no config.json, so it is not a Hugging Face checkpoint folder. "
                "Save one with `model.save_pretrained(folder)`."
            ),
            folder=folder,
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise templated(
            ModelLoadError, N_("{path} is not valid JSON ({error})."), path=path, error=exc
        ) from None
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise templated(
            ModelLoadError,
            N_(
                "{path} has no model_type, so Stepwise cannot tell which model it is. "
                "It loads these families: {families}."
            ),
            path=path,
            families=supported_families_text(),
        )
    return config


def check_family(config: dict, folder: Path) -> str:
    """The architecture ("decoder-only" | "encoder-decoder") of a supported family, or a refusal."""
    from models import ModelLoadError

    model_type = config["model_type"]
    if model_type not in SUPPORTED_FAMILIES:
        raise templated(
            ModelLoadError,
            N_(
                "Stepwise does not trace the model family {family} (from {path}). "
                "It traces these families: {families}."
            ),
            family=repr(model_type),
            path=folder / "config.json",
            families=supported_families_text(),
        )
    architectures = config.get("architectures") or []
    if architectures and not any(a.endswith(GENERATION_HEADS) for a in architectures):
        raise templated(
            ModelLoadError,
            N_(
                "{folder} holds {architectures}, which does not generate text. Stepwise traces "
                "models with a language-model head ({heads})."
            ),
            folder=folder,
            architectures=", ".join(architectures),
            heads=" or ".join("*" + h for h in GENERATION_HEADS),
        )
    return SUPPORTED_FAMILIES[model_type]


def check_weights(folder: Path) -> None:
    """Refuse a folder without safetensors weights, and explain how to convert pickle ones."""
    from models import ModelLoadError

    if any(folder.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise ModelLoadError(
            f"{folder} has weights only in pickle files ({', '.join(pickles)}). Stepwise loads "
            "safetensors only, because loading a pickle file can run any code it contains. If you "
            "trust the file, convert it once with\n"
            "    from transformers import AutoModelForCausalLM  # AutoModelForSeq2SeqLM for BART\n"
            f"    m = AutoModelForCausalLM.from_pretrained({str(folder)!r}, use_safetensors=False)\n"
            f"    m.save_pretrained({str(folder)!r}, safe_serialization=True)\n"
            "which writes model.safetensors next to it."
        )
    raise templated(
        ModelLoadError,
        N_(
            "{folder} has no weights: no *.safetensors file. "
            "Save them with `model.save_pretrained(folder, safe_serialization=True)`."
        ),
        folder=folder,
    )


def check_tokenizer(folder: Path) -> None:
    from models import ModelLoadError

    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise templated(
            ModelLoadError,
            N_(
                "{folder} has no tokenizer (none of {files}). Stepwise needs one to turn a prompt into "
                "tokens and tokens into heatmap labels: save it next to the model with "
                "`tokenizer.save_pretrained(folder)`."
            ),
            folder=folder,
            files=", ".join(TOKENIZER_FILES),
        )


def load_checkpoint_folder(folder: Path, *, dtype: str = "float32"):
    """`(model, tokenizer)` from a local folder of a supported family: eval mode, eager attention.

    `dtype` is "float32" (the default: in bfloat16, cached and uncached runs can pick different
    tokens) or "auto" (the checkpoint's own dtype, e.g. bfloat16 at half the memory).
    """
    from models import ModelLoadError

    if dtype not in ("float32", "auto"):
        raise ModelLoadError(f"dtype must be 'float32' or 'auto' (the checkpoint's own); got {dtype!r}.")
    folder = Path(folder).expanduser()
    config = read_config(folder)
    arch = check_family(config, folder)
    check_weights(folder)
    check_tokenizer(folder)

    auto = AutoModelForSeq2SeqLM if arch == "encoder-decoder" else AutoModelForCausalLM
    try:
        model = auto.from_pretrained(
            folder,
            local_files_only=True,  # never the hub: the same with or without HF_HUB_OFFLINE=1
            use_safetensors=True,
            trust_remote_code=False,
            attn_implementation="eager",  # the only attention that returns its weights
            dtype=torch.float32 if dtype == "float32" else "auto",
        )
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise templated(
            ModelLoadError, N_("Could not load the model in {folder}: {error}"), folder=folder, error=exc
        ) from exc
    try:
        tok = AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise templated(
            ModelLoadError, N_("Could not load the tokenizer in {folder}: {error}"), folder=folder, error=exc
        ) from exc

    # The config says which family; the modules must also be where the tracer hooks them.
    from tracer.record import TracingNotSupported, detect_layout

    try:
        detect_layout(model)
    except TracingNotSupported as exc:
        raise ModelLoadError(str(exc)) from None
    model.eval()
    return model, tok
