"""The recorder's quick paths make the plain records: tensor records, captures, the step memo."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tracer.record.events import SMALL_INT_NUMEL, EventLog, OpenEvent, tensor_info, top_k
from tracer.trace import Event, TensorInfo


def plain_info(tensor: torch.Tensor) -> TensorInfo:
    """A tensor's record built the plain way, one torch call after another."""
    name = str(tensor.dtype).removeprefix("torch.")
    small_int = not tensor.dtype.is_floating_point and not tensor.dtype.is_complex
    if small_int and tensor.numel() <= SMALL_INT_NUMEL:
        return TensorInfo(tuple(tensor.shape), name, tuple(tensor.detach().reshape(-1).tolist()))
    return TensorInfo(tuple(tensor.shape), name, None)


def plain_copy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to(dtype=torch.float32, device="cpu").numpy().copy()


TENSORS = {
    "float32": torch.randn(2, 3, 4),
    "float16": torch.randn(2, 5).half(),
    "bfloat16": torch.randn(3).bfloat16(),
    "int64 scalar": torch.tensor(7),
    "int64 row": torch.arange(5),
    "int64 [1, 1]": torch.tensor([[129]]),
    "int64 3-d": torch.arange(24).reshape(2, 3, 4),
    "int64 transposed": torch.arange(12).reshape(3, 4).t(),
    "int64 empty": torch.zeros(0, 3, dtype=torch.long),
    "bool mask": torch.tensor([[True, False, True]]),
    "uint8": torch.tensor([1, 2, 255], dtype=torch.uint8),
    "int64 too big to keep": torch.arange(SMALL_INT_NUMEL + 1),
}


@pytest.mark.parametrize("name", TENSORS)
def test_tensor_info_is_the_plain_record(name):
    tensor = TENSORS[name]
    for _ in range(2):  # the first call learns the (shape, dtype), the second uses what it learned
        info = tensor_info(tensor)
        assert info == plain_info(tensor)
        assert type(info.shape) is tuple
        if info.values is not None:
            assert [type(v) for v in info.values] == [type(v) for v in plain_info(tensor).values]


def test_small_int_values_are_read_at_each_call():
    ids = torch.tensor([[1, 2]])
    assert tensor_info(ids).values == (1, 2)
    ids[0, 1] = 9
    assert tensor_info(ids).values == (1, 9)


CAPTURED = {
    "float32": torch.randn(2, 4, 3),
    "float32 not contiguous": torch.randn(4, 3, 2).transpose(0, 2),
    "float16": torch.randn(2, 4, 3).half(),
    "bfloat16": torch.randn(2, 4, 3).bfloat16(),
    "float64": torch.randn(2, 4, 3).double(),
    "needs grad": torch.randn(2, 4, 3, requires_grad=True),
}


@pytest.mark.parametrize("last_position", [False, True])
@pytest.mark.parametrize("name", CAPTURED)
def test_a_capture_is_the_plain_float32_copy(name, last_position):
    tensor = CAPTURED[name]
    log = EventLog()
    event = OpenEvent("x", "x")
    log.capture(event, "kept", tensor, last_position=last_position)
    log.copy_captures()  # a small capture is copied once the run is over
    array = event.tensors["kept"]
    expected = plain_copy(tensor[:, -1, :] if last_position else tensor)
    assert array.dtype == np.float32 and array.flags.c_contiguous and not array.flags.writeable
    np.testing.assert_array_equal(array, expected)
    assert log.budget.captured == expected.size * 4
    with torch.no_grad():
        tensor.mul_(2)  # the model changes its tensor after the hook: the copy keeps the old values
    np.testing.assert_array_equal(array, expected)


def test_small_captures_are_copied_at_the_end_in_one_stack_and_a_change_in_place_is_said():
    log = EventLog()
    attention = [torch.rand(1, 4, 1, 6) for _ in range(3)]  # a decode step's maps, one per layer
    hidden = torch.randn(1, 1, 8)  # [batch, seq 1, hidden]: its last position is all of it
    events = [OpenEvent(f"decoder.layers.{i}.self_attn", "m") for i in range(3)]
    for event, weights in zip(events, attention, strict=True):
        log.capture(event, "attention", weights)
    block = OpenEvent("decoder.layers.0", "m")
    log.capture(block, "hidden_last", hidden, last_position=True)
    assert all(e.tensors == {} for e in [*events, block])  # not copied yet
    with torch.no_grad():
        attention[1].mul_(0)  # the model changes layer 1's map in place before the run ends
    log.copy_captures()
    np.testing.assert_array_equal(events[0].tensors["attention"], attention[0].numpy())
    np.testing.assert_array_equal(events[2].tensors["attention"], attention[2].numpy())
    assert "attention" not in events[1].tensors
    assert events[1].notes == ["attention not captured: the model changed it in place after its call"]
    np.testing.assert_array_equal(block.tensors["hidden_last"], hidden[:, -1, :].numpy())
    assert block.tensors["hidden_last"].shape == (1, 8) and not block.tensors["hidden_last"].flags.writeable
    # A large capture (a prefill's map) is copied at its call: nothing of it waits.
    big = torch.rand(1, 4, 100, 100)
    prefill = OpenEvent("decoder.layers.0.self_attn", "m")
    log.capture(prefill, "attention", big)
    expected = big.numpy().copy()
    with torch.no_grad():
        big.mul_(0)
    np.testing.assert_array_equal(prefill.tensors["attention"], expected)


def test_a_capture_past_the_budget_names_the_shape_it_left_out():
    log = EventLog(budget_bytes=0)
    event = OpenEvent("decoder.layers.0", "model.layers.0")
    log.capture(event, "hidden_last", torch.randn(2, 5, 3), last_position=True)
    assert event.tensors == {} and log.budget.skipped_bytes == 2 * 3 * 4
    assert log.budget.first_skipped == "step 0, decoder.layers.0 hidden_last [2, 3]"


class Cache:
    """Stands for a transformers cache: its length as get_seq_length() says it now."""

    def __init__(self):
        self.length = 4

    def get_seq_length(self) -> int:
        return self.length


def test_keyword_arguments_are_described_once_per_step_float_tensors_at_each_call():
    log = EventLog()
    cache, positions, hidden = Cache(), torch.tensor([[4]]), torch.randn(1, 1, 8)
    kwargs = {"hidden_states": hidden, "mask": None, "position_ids": positions, "past_key_values": cache}
    first: dict = {}
    log.summarize_kwargs(kwargs, first)
    assert list(first) == ["hidden_states", "position_ids", "past_key_values"]  # call order, None left out
    assert first["past_key_values"] == "Cache(seq_len=4)" and first["position_ids"].values == (4,)

    cache.length = 5  # the first layer wrote the cache: later layers of the step show the step's first read
    later: dict = {}
    log.summarize_kwargs(kwargs | {"hidden_states": torch.randn(1, 1, 16)}, later)
    assert later["past_key_values"] == "Cache(seq_len=4)"
    assert later["hidden_states"] == TensorInfo((1, 1, 16), "float32")

    log.clear_shared()  # the step ended
    after: dict = {}
    log.summarize_kwargs(kwargs, after)
    assert after["past_key_values"] == "Cache(seq_len=5)"


def test_a_frozen_event_is_the_event_its_fields_make():
    event = OpenEvent("decoder.layers.0", "model.layers.0", {"hidden_states": "x"}, {"output": "y"})
    event.notes += ["first", "second"]
    event.error = "raised"
    frozen = event.freeze()
    made = Event(
        "decoder.layers.0",
        "model.layers.0",
        {"hidden_states": "x"},
        {"output": "y"},
        {},
        "first; second",
        "raised",
    )
    assert vars(frozen) == vars(made) and type(frozen) is Event


def _one_block_call(log: EventLog, fed: torch.Tensor | None, change_in_place: bool = False):
    """One step of one hook point's call, its records and captures as the frozen trace has them."""
    step = log.open_step(fed)
    log.feeding(fed)
    pre, post = log.hook_point(
        "decoder.layers.0",
        "model.layers.0",
        lambda event, output: log.capture(event, "hidden_last", output, last_position=True),
    )
    hidden, kwargs = torch.randn(1, 1, 8), {"position_ids": torch.tensor([[4]]), "use_cache": True}
    pre(None, (hidden,), kwargs)
    output = hidden * 2
    post(None, (hidden,), kwargs, output)
    if change_in_place:
        output.add_(1)
    log.close_step(step, torch.tensor([5]), None, "test")
    return log.frozen_steps()[-1].events[0], output


def test_a_decode_steps_calls_described_at_its_end_are_recorded_as_at_the_call():
    torch.manual_seed(0)
    deferred, output = _one_block_call(log := EventLog(), torch.tensor([[3]]))
    assert log.defer  # a decode step: one new position
    torch.manual_seed(0)
    at_once, _ = _one_block_call(log := EventLog(), None)  # fed embeddings: described call by call
    assert not log.defer
    assert deferred.inputs == at_once.inputs
    assert deferred.inputs["position_ids"] == TensorInfo((1, 1), "int64", (4,))
    assert deferred.outputs == at_once.outputs == {"output": TensorInfo((1, 1, 8), "float32")}
    np.testing.assert_array_equal(deferred.tensors["hidden_last"], at_once.tensors["hidden_last"])
    np.testing.assert_array_equal(deferred.tensors["hidden_last"], output[:, -1].numpy())


def test_a_decode_steps_capture_changed_in_place_before_the_step_ends_is_not_kept():
    event, _ = _one_block_call(EventLog(), torch.tensor([[3]]), change_in_place=True)
    assert "hidden_last" not in event.tensors
    assert "hidden_last not captured: the model changed it in place after its call" in event.note


@pytest.mark.parametrize("vocab", [8192, 32000, 50257, 128256])
def test_top_k_ranks_a_vocabulary_as_torch_topk_does(vocab):
    """The block shortcut finds torch.topk's values and ids: whole blocks, the tail after them, a
    batch of rows, scores with -inf (a processor's masked tokens) and after the softmax's exp."""
    generator = torch.Generator().manual_seed(vocab)
    scores = torch.randn(3, 2, vocab, generator=generator) * 4  # [steps, batch, vocab]
    scores[0, 1, ::3] = float("-inf")
    scores[2, 0, -5:] = 50.0 + torch.arange(5.0)  # the best ones in the tail
    for values in (scores, (scores - scores.amax(-1, keepdim=True)).exp()):
        expected, got = torch.topk(values, 10), top_k(values, 10)
        assert torch.equal(got.values, expected.values)
        assert torch.equal(got.indices, expected.indices)
    assert top_k(scores, 10).indices[2, 0, :5].tolist() == list(range(vocab - 1, vocab - 6, -1))
