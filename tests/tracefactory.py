"""Hand-made traces for tests: small Trace records built directly, with no model and no torch.

`make_trace()` builds a decoder-only (Llama-like) or encoder-decoder (BART-like) trace whose
every number is known: the prompt has `prompt_len` tokens, each step's attention rows are
uniform over the keys they see, token i's text is "w{i}", and the step with index `error_at`
fails inside layer 1's self-attention. Figures and tables can be checked against these numbers.
"""

from __future__ import annotations

import numpy as np

from tracer import names
from tracer.trace import CacheLayer, CaptureSummary, Event, Step, TensorInfo, TopToken, Trace, TraceError

VOCAB = 50
HIDDEN = 8
HEAD_DIM = 4


def _ids_info(ids: list[int]) -> TensorInfo:
    return TensorInfo((1, len(ids)), "int64", tuple(ids))


def _uniform_causal(heads: int, q_len: int, k_len: int) -> np.ndarray:
    """[1, heads, q_len, k_len]: query r (position k_len - q_len + r) spreads evenly over keys 0..itself."""
    att = np.zeros((1, heads, q_len, k_len), dtype=np.float32)
    for r in range(q_len):
        pos = k_len - q_len + r
        att[0, :, r, : pos + 1] = 1.0 / (pos + 1)
    att.flags.writeable = False
    return att


def _uniform_full(heads: int, q_len: int, k_len: int) -> np.ndarray:
    att = np.full((1, heads, q_len, k_len), 1.0 / k_len, dtype=np.float32)
    att.flags.writeable = False
    return att


def _attn_event(name: str, heads: int, att: np.ndarray, cache_before: int | None) -> Event:
    q_len = att.shape[-2]
    inputs: dict = {"hidden_states": TensorInfo((1, q_len, HIDDEN), "float32")}
    if cache_before is not None:
        inputs["cache_len_before"] = str(cache_before)
    return Event(
        name=name,
        module=name.replace("decoder.", "model.decoder.").replace("self_attn", "self_attn"),
        inputs=inputs,
        outputs={"attn_weights": TensorInfo(tuple(att.shape), "float32")},
        tensors={"attention": att},
    )


def make_trace(
    arch: str = "decoder-only",
    *,
    prompt_len: int = 3,
    steps: int = 3,
    layers: int = 2,
    heads: int = 2,
    use_cache: bool = True,
    error_at: int | None = None,
    do_sample: bool = False,
) -> Trace:
    encdec = arch == "encoder-decoder"
    prompt_ids = list(range(4, 4 + prompt_len))
    start_ids = [2] if encdec else list(prompt_ids)
    chosen = [10 + i for i in range(steps)]  # step i picks token 10 + i
    sequence = list(start_ids)
    built: list[Step] = []
    for i in range(steps):
        failing = error_at is not None and i == error_at
        end = len(sequence)  # decoder positions while this step runs
        fed = sequence[-1:] if (use_cache and i > 0) else list(sequence)
        q_len = len(fed)
        events: list[Event] = []
        if encdec and i == 0:
            events.append(
                Event(
                    names.ENCODER,
                    "model.encoder",
                    inputs={"input_ids": _ids_info(prompt_ids)},
                    outputs={"last_hidden_state": TensorInfo((1, prompt_len, HIDDEN), "float32")},
                )
            )
            for layer in range(layers):
                att = _uniform_full(heads, prompt_len, prompt_len)
                events.append(_attn_event(names.encoder_self_attn(layer), heads, att, None))
        ids_key = "decoder_input_ids" if encdec else "input_ids"
        prepare_out = {
            ids_key: _ids_info(fed),
            "past_key_values": f"DynamicCache(seq_len={end - q_len})" if use_cache else "None",
            "use_cache": repr(use_cache),
        }
        prepare_args = {"input_ids": _ids_info(sequence)}
        events.append(Event(names.PREPARE_INPUTS, "prepare_inputs_for_generation", prepare_args, prepare_out))
        events.append(
            Event(
                names.FORWARD,
                "Model",
                inputs={ids_key: _ids_info(fed)},
                outputs={"logits": TensorInfo((1, 1, VOCAB), "float32")},
            )
        )
        for layer in range(layers):
            events.append(
                Event(
                    names.decoder_layer(layer),
                    f"model.layers.{layer}",
                    inputs={"hidden_states": TensorInfo((1, q_len, HIDDEN), "float32")},
                    outputs={"output": TensorInfo((1, q_len, HIDDEN), "float32")},
                )
            )
            if failing and layer == 1:
                events.append(
                    Event(
                        names.decoder_self_attn(layer),
                        f"model.layers.{layer}.self_attn",
                        inputs={"hidden_states": TensorInfo((1, q_len, HIDDEN), "float32")},
                        error="raised",
                    )
                )
                break
            att = _uniform_causal(heads, q_len, end)
            events.append(
                _attn_event(names.decoder_self_attn(layer), heads, att, end - q_len if use_cache else None)
            )
            if encdec:
                events.append(
                    _attn_event(
                        names.decoder_cross_attn(layer), heads, _uniform_full(heads, q_len, prompt_len), None
                    )
                )
        if failing:
            built.append(
                Step(i, "prefill" if i == 0 else "decode", prepare_args, prepare_out, events, [], [], None)
            )
            break
        events.append(
            Event(names.LM_HEAD, "lm_head", {"hidden_states": TensorInfo((1, 1, HIDDEN), "float32")})
        )
        events.append(
            Event(
                names.CHOOSE_TOKEN, "generate (token choice)", {"scores": TensorInfo((1, VOCAB), "float32")}
            )
        )
        cache: list[CacheLayer] = []
        if use_cache:
            for layer in range(layers):
                shape = (1, heads, end, HEAD_DIM)
                cache.append(CacheLayer(layer, "self", shape, shape, end, 2 * 4 * int(np.prod(shape))))
            if encdec:
                for layer in range(layers):
                    shape = (1, heads, prompt_len, HEAD_DIM)
                    cache.append(
                        CacheLayer(layer, "cross", shape, shape, prompt_len, 2 * 4 * int(np.prod(shape)))
                    )
        # The chosen token is the most likely, with p = 0.5; nine others share the rest.
        topk = [TopToken(chosen[i], f"w{chosen[i]}", 0.5)] + [
            TopToken(30 + j, f"w{30 + j}", 0.05) for j in range(9)
        ]
        built.append(
            Step(
                i,
                "prefill" if i == 0 else "decode",
                prepare_args,
                prepare_out,
                events,
                cache,
                topk,
                chosen[i],
                0.5,
            )
        )
        sequence.append(chosen[i])

    error = None
    if error_at is not None:
        error = TraceError(error_at, "RuntimeError", "boom", names.decoder_self_attn(1))
    all_ids = set(prompt_ids) | set(sequence) | {t.token_id for s in built for t in s.topk} | {2}
    return Trace(
        arch=arch,
        model_name=f"hand-made {arch}",
        model_class="BartLike" if encdec else "LlamaLike",
        prompt_text=" ".join(f"w{i}" for i in prompt_ids),
        prompt_ids=prompt_ids,
        sequence_ids=sequence,
        steps=built,
        error=error,
        settings={
            "max_new_tokens": steps,
            "use_cache": use_cache,
            "do_sample": do_sample,
            "seed": 7 if do_sample else None,
            "temperature": 0.8 if do_sample else None,
            "eos_token_id": 2,
            "sources": {"max_new_tokens": "caller", "do_sample": "caller", "eos_token_id": "checkpoint"},
        },
        config={
            "num_layers": layers,
            "encoder_layers": layers if encdec else 0,
            "num_heads": heads,
            "num_kv_heads": heads,
            "hidden_size": HIDDEN,
            "head_dim": HEAD_DIM,
            "vocab_size": VOCAB,
        },
        token_texts={i: ("</s>" if i == 2 else f"w{i}") for i in sorted(all_ids)},
        capture=CaptureSummary(budget_bytes=1 << 20),
        stop=(
            {"reason": "error", "token_id": None, "detail": "the model raised"}
            if error is not None
            else {"reason": "max_new_tokens", "token_id": None, "detail": f"max_new_tokens={steps} reached"}
        ),
    )
