"""The model zoo: `models.load(name_or_path)` returns `(model, tokenizer)` ready to trace.

Names:
- "random-llama", "random-bart": small random models built in code (models/random_models.py).
- "tiny-llama", "tiny-bart": small trained checkpoints committed under models/checkpoints/.
- any other string: a local checkpoint folder (Llama or BART layout), loaded offline from
  safetensors with eager attention.

Nothing here touches the network: folders are read with `local_files_only=True`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

CHECKPOINTS_DIR = Path(__file__).resolve().parent / "checkpoints"


# torch and transformers are imported when a model is built, not with this module: the app lists
# the models and draws its first page while they load.
def _build_random_llama() -> tuple:
    from models.random_models import build_random_llama

    return build_random_llama()


def _build_random_bart() -> tuple:
    from models.random_models import build_random_bart

    return build_random_bart()


BUILT_IN: dict[str, Callable[[], tuple]] = {
    "random-llama": _build_random_llama,
    "random-bart": _build_random_bart,
}
SHIPPED = ("tiny-llama", "tiny-bart")

# Prompts worth tracing, with what the model answers greedily (None: a random model, no answer
# worth stating). The app's example picker and README.md show them; tests/test_models_shipped.py
# keeps the answers true.
EXAMPLES: dict[str, list[tuple[str, str | None]]] = {
    "tiny-llama": [
        ("tom has red balls . ann wants blue hats . what does ann want ?", "ann wants blue hats ."),
        (
            "mia sees three cats . leo likes five dogs . how many dogs does leo like ?",
            "leo likes five dogs .",
        ),
        ("say : green kites sat the pink boxes . say again :", "green kites sat the pink boxes ."),
    ],
    "tiny-bart": [
        ("march twenty first twenty twenty four", "2024 03 21"),
        ("the fifth of june nineteen ninety nine", "1999 06 05"),
        ("december third two thousand seven", "2007 12 03"),
    ],
    "random-llama": [("the cat sat on the mat", None), ("tom has a big red dog and the dog ran", None)],
    "random-bart": [("the cat sat on the mat", None), ("a small bird sat in the old tree", None)],
}


class ModelLoadError(ValueError):
    """A model could not be loaded; the message names the problem and the fix."""


def available() -> list[str]:
    """Names `load` accepts besides a folder path: shipped checkpoints first, if present."""
    shipped = [name for name in SHIPPED if (CHECKPOINTS_DIR / name / "config.json").is_file()]
    return shipped + list(BUILT_IN)


def load(name_or_path: str | Path, *, dtype: str = "float32"):
    """Return `(model, tokenizer)` for a built-in name, a shipped checkpoint or a local folder.

    `dtype="auto"` keeps a folder's own dtype (a bfloat16 checkpoint stays bfloat16, half the
    memory); the default float32 keeps cached and uncached runs comparable to rounding noise.
    """
    name = str(name_or_path)
    if name in BUILT_IN:
        return BUILT_IN[name]()
    if name in SHIPPED:
        folder = CHECKPOINTS_DIR / name
        if not (folder / "config.json").is_file():
            raise ModelLoadError(
                f"The shipped model {name!r} is not in {folder}. Train it with "
                f"`python -m models.train {name}`, or pick one of: {', '.join(available())}."
            )
        return load_folder(folder, dtype=dtype)
    return load_folder(Path(name), dtype=dtype)


def load_folder(folder: Path, *, dtype: str = "float32"):
    """Load a local Hugging Face checkpoint folder offline (safetensors, eager attention)."""
    from models.local import load_checkpoint_folder

    return load_checkpoint_folder(folder, dtype=dtype)
