"""Hooks: where the hook points are in a model, and installing and removing everything for one run.

`Hooks(model)` is what one traced run puts on a model: a watcher around each hook point's
`forward` (functions called before and after each call), wrapped methods
(`prepare_inputs_for_generation`), eager attention. `remove()` takes all of it back, and the
Recorder calls it in `finally`, so after any trace the model has its own forward methods and
other methods again, and its own attention implementation. `TRACE_LOCK` makes traces run one at a time.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from tracer.errors import SUPPORTED_LAYOUTS, TracingNotSupported
from tracer.i18n import N_, phrase, templated

# A model is one Python object shared by every trace of it (and one torch RNG per process):
# traces run one at a time, so two app sessions never mix their hooks, records or seeds.
# Hold it too around other work that touches torch's global RNG (building a random model).
TRACE_LOCK = threading.Lock()
_NOTHING = object()


@dataclass(frozen=True)
class ModelLayout:
    """Where the hook points are in one model."""

    arch: str  # "decoder-only" | "encoder-decoder"
    encoder: nn.Module | None
    encoder_self_attn: list[nn.Module]
    decoder_layers: list[nn.Module]
    decoder_self_attn: list[nn.Module]
    decoder_cross_attn: list[nn.Module]
    lm_head: nn.Module
    # The token embeddings and each decoder block's MLP as (first module, last module): Llama's
    # `mlp` is one module, BART's MLP runs from fc1 to fc2. None / empty where a model has none.
    encoder_embed: nn.Module | None = None
    decoder_embed: nn.Module | None = None
    decoder_mlps: tuple[tuple[nn.Module, nn.Module], ...] = ()

    @property
    def num_layers(self) -> int:
        return len(self.decoder_layers)


def detect_layout(model: nn.Module) -> ModelLayout:
    """Find the hook points of a Llama-layout or BART-layout model, or say why it can't be traced."""
    cls = type(model).__name__
    config = getattr(model, "config", None)
    try:
        lm_head = model.get_output_embeddings()
        decoder = model.get_decoder()
        decoder_layers = list(decoder.layers)
        decoder_self_attn = [layer.self_attn for layer in decoder_layers]
        if getattr(config, "is_encoder_decoder", False):
            encoder = model.get_encoder()
            encoder_self_attn = [layer.self_attn for layer in encoder.layers]
            decoder_cross_attn = [layer.encoder_attn for layer in decoder_layers]
            arch = "encoder-decoder"
        else:
            encoder, encoder_self_attn, decoder_cross_attn = None, [], []
            arch = "decoder-only"
    except (AttributeError, TypeError, NotImplementedError) as exc:
        raise templated(
            TracingNotSupported,
            N_(
                "Stepwise cannot trace {model}: its modules are not laid out like a model it knows "
                "({reason}). It traces {layouts}."
            ),
            model=cls,
            reason=exc,
            layouts=phrase(SUPPORTED_LAYOUTS),
        ) from None
    if lm_head is None or not decoder_layers:
        raise templated(
            TracingNotSupported,
            N_("Stepwise cannot trace {model}: no lm_head or no decoder layers. It traces {layouts}."),
            model=cls,
            layouts=phrase(SUPPORTED_LAYOUTS),
        )
    return ModelLayout(
        arch,
        encoder,
        encoder_self_attn,
        decoder_layers,
        decoder_self_attn,
        decoder_cross_attn,
        lm_head,
        encoder_embed=getattr(encoder, "embed_tokens", None),
        decoder_embed=getattr(decoder, "embed_tokens", None),
        decoder_mlps=_mlps(decoder_layers),
    )


def _mlps(blocks: list[nn.Module]) -> tuple[tuple[nn.Module, nn.Module], ...]:
    """Each block's MLP as (first, last) module: `mlp` (Llama), or `fc1` .. `fc2` (BART); () if unknown."""
    spans = []
    for block in blocks:
        mlp = getattr(block, "mlp", None)
        if isinstance(mlp, nn.Module):
            spans.append((mlp, mlp))
        elif isinstance(getattr(block, "fc1", None), nn.Module) and isinstance(
            getattr(block, "fc2", None), nn.Module
        ):
            spans.append((block.fc1, block.fc2))
        else:
            return ()
    return tuple(spans)


PreHook = Callable[[nn.Module, tuple, dict], None]
PostHook = Callable[[nn.Module, tuple, dict, Any], None]  # output is None when the call raised


class Hooks:
    """What one traced run installs on a model; `remove()` takes all of it back."""

    def __init__(self, model: nn.Module):
        self.model = model
        # id(module) -> (its pre functions, its post functions), called by its wrapped forward
        self._watchers: dict[int, tuple[list[PreHook], list[PostHook]]] = {}
        # (object, method name, the instance's own override or _NOTHING), in the order wrapped
        self._wrapped: list[tuple[Any, str, Any]] = []
        self._original_attn: str | None = None
        self._module_names: dict[int, str] | None = None

    def module_path(self, module: nn.Module) -> str:
        """The module's dotted path in the model ("model.layers.0.self_attn"), else its class name."""
        if self._module_names is None:
            self._module_names = {id(m): n for n, m in self.model.named_modules()}
        return self._module_names.get(id(module)) or type(module).__name__

    def use_eager_attention(self) -> None:
        """Switch to eager attention, the only implementation that returns weights; put back on remove()."""
        # transformers 5.x has no public getter for the implementation in force.
        self._original_attn = self.model.config._attn_implementation
        if self._original_attn != "eager":
            self.model.set_attn_implementation("eager")

    def wrap_method(self, name: str, make_wrapper: Callable[[Callable], Callable], owner: Any = None) -> None:
        """Replace `owner.<name>` (the model's, by default) by `make_wrapper(the bound original)` on the
        instance, until remove()."""
        owner = self.model if owner is None else owner
        # An instance may carry its own override (a user's patch): put that exact object back later.
        self._wrapped.append((owner, name, vars(owner).get(name, _NOTHING)))
        setattr(owner, name, make_wrapper(getattr(owner, name)))

    def on_call(self, module: nn.Module, pre: PreHook | None, post: PostHook | None) -> None:
        """`pre` before each call of `module`, `post` after it, even when it raised (output None).

        Pre and post functions run in the order they were given, as torch's forward hooks do. They
        are called by one wrapper of the module's `forward`, not by torch's hooks: a module with
        hooks takes torch's slow call path (hook dictionaries walked, a closure per call), which
        cost more than everything the recorder itself does at a hook point.
        """
        watchers = self._watchers.get(id(module))
        if watchers is None:
            watchers = self._watchers[id(module)] = ([], [])
            self.wrap_method("forward", _calling(module, *watchers), owner=module)
        if pre is not None:
            watchers[0].append(pre)
        if post is not None:
            watchers[1].append(post)

    def remove(self) -> None:
        self._watchers.clear()
        for owner, name, own in reversed(self._wrapped):
            if own is not _NOTHING:
                setattr(owner, name, own)
            elif name in vars(owner):
                delattr(owner, name)
        self._wrapped.clear()
        config = self.model.config
        if self._original_attn is not None and config._attn_implementation != self._original_attn:
            self.model.set_attn_implementation(self._original_attn)
        self._original_attn = None


def _calling(module: nn.Module, pres: list[PreHook], posts: list[PostHook]):
    """A wrapper maker for `module.forward` that calls `pres` before and `posts` after each call."""

    def make(original: Callable) -> Callable:
        # functools.wraps keeps the signature: generate() reads the model's to pick its kwargs.
        @functools.wraps(original)
        def forward(*args, **kwargs):
            for pre in pres:
                pre(module, args, kwargs)
            try:
                output = original(*args, **kwargs)
            except BaseException:
                for post in posts:
                    post(module, args, kwargs, None)
                raise
            for post in posts:
                post(module, args, kwargs, output)
            return output

        return forward

    return make
