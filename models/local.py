"""Loading a local checkpoint folder: offline, safetensors only, no remote code, eager attention."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer


def load_checkpoint_folder(folder: Path):
    from models import ModelLoadError

    folder = Path(folder)
    if not folder.is_dir():
        raise ModelLoadError(
            f"No model folder at {folder}. Give a built-in name or the path of a local checkpoint folder."
        )
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    model = auto.from_pretrained(
        folder,
        local_files_only=True,
        use_safetensors=True,
        trust_remote_code=False,
        attn_implementation="eager",
    )
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    model.eval()
    return model, tok
