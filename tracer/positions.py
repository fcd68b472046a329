"""Absolute positions: which positions a cache layer holds, and which keys an attention row covers.

A full-attention layer's cache holds every position it has seen, so "kept" and "seen" are the
same and an attention row's keys are positions 0..k-1. A sliding-window layer (Mistral; Qwen2
with use_sliding_window) keeps only the last W-1 positions while `get_seq_length()` still counts
every position seen; a decode step's row then has W keys, the last W positions. Everything that
labels keys, places rows in a matrix or counts positions goes through these functions.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from transformers.cache_utils import DynamicLayer

# Event input names, written by the recorder on each attention call with a cache.
KEPT_BEFORE = "cache_len_before"  # positions the layer's cache held when the call began
SEEN_BEFORE = "cache_seen_before"  # positions it had seen (only written when more than it kept)


def layer_lengths(layer: Any) -> tuple[int, int]:
    """(positions kept, positions seen) of one live cache layer (a transformers CacheLayer)."""
    if type(layer) is DynamicLayer:  # the common layer keeps all it has seen: read without a call
        keys = layer.keys
        kept = keys.shape[-2] if isinstance(keys, torch.Tensor) and keys.dim() >= 2 else 0
        return kept, kept
    shape = getattr(getattr(layer, "keys", None), "shape", ())  # [batch, kv_heads, seq, head_dim]
    kept = int(shape[-2]) if len(shape) >= 2 else 0
    seen = kept
    get_seq_length = getattr(layer, "get_seq_length", None)
    if kept and callable(get_seq_length):
        seen = max(int(get_seq_length()), kept)  # a sliding layer counts what it dropped too
    return kept, seen


def seen_before(inputs: dict) -> int:
    """Positions an attention layer had seen before this call, from its recorded inputs (0: none)."""
    value = inputs.get(SEEN_BEFORE, inputs.get(KEPT_BEFORE, 0))
    try:
        return int(str(value))
    except ValueError:
        return 0


def key_positions(kind: str, inputs: dict, q_len: int, k_len: int) -> np.ndarray:
    """The absolute positions [k_len] of an attention row's keys.

    Self-attention: the layer had seen `seen_before(inputs)` positions and adds `q_len` now; its
    k_len keys are the last k_len of those (all of them, unless the window dropped some).
    Cross-attention and the encoder: source positions 0..k_len-1.
    """
    if kind != "self":
        return np.arange(k_len)
    end = seen_before(inputs) + q_len
    return np.arange(max(end - k_len, 0), max(end - k_len, 0) + k_len)
