"""Whole-word tokenizers built locally with the `tokenizers` library.

Every model Stepwise ships reads whole words, so that the labels on a heatmap read like text.
The tokenizers are built here from a word list (no download) and wrapped in
`PreTrainedTokenizerFast`, so they save and load through `AutoTokenizer` like any other.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast

# The order follows BART's convention, so that ids 0..3 mean the same in every shipped model.
BOS, PAD, EOS, UNK = "<s>", "<pad>", "</s>", "<unk>"
SPECIAL_TOKENS = (BOS, PAD, EOS, UNK)


def build_word_tokenizer(words: Iterable[str], *, wrap_with_eos: bool) -> PreTrainedTokenizerFast:
    """A lower-casing word-level tokenizer over `words` (plus the four special tokens).

    `wrap_with_eos=False` gives the decoder-only layout `<s> words` (Llama);
    `wrap_with_eos=True` gives the encoder layout `<s> words </s>` (BART).
    """
    vocab: dict[str, int] = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for word in words:
        word = word.lower()
        if word not in vocab:
            vocab[word] = len(vocab)

    core = Tokenizer(WordLevel(vocab=vocab, unk_token=UNK))
    core.normalizer = normalizers.Lowercase()
    # Whitespace splits "cat." into "cat" and ".", so punctuation has tokens of its own.
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with single spaces
    template = f"{BOS} $A {EOS}" if wrap_with_eos else f"{BOS} $A"
    core.post_processor = processors.TemplateProcessing(
        single=template,
        special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        model_max_length=10_000,
    )


def unknown_words(tok, text: str) -> list[str]:
    """The words of `text` that `tok` maps to its unknown token, in order, without repeats."""
    unk_id = tok.unk_token_id
    if unk_id is None:
        return []
    encoding = tok(text, add_special_tokens=False)
    offsets = encoding.get("offset_mapping")
    if offsets is None:
        encoding = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = encoding["offset_mapping"]
    found: list[str] = []
    for token_id, (start, end) in zip(encoding["input_ids"], offsets, strict=True):
        word = text[start:end]
        if token_id == unk_id and word not in found:
            found.append(word)
    return found
