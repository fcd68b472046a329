"""The batch and beam views (tracer/plots/batch.py, beams.py) on real traces of tiny-llama and
tiny-bart, and the row and hypothesis slicing they stand on (Trace.row, Trace.hypothesis, Step.row):
masked cells are exactly the key_mask zeros, the tree's edges are BeamChoice.parents, its winner is
beam_result's first sequence, the reorder table is BeamChoice.reorder."""

from __future__ import annotations

import numpy as np
import pytest
from transformers import DynamicCache

import models
import tracer
from tracer.plots import batch, beams

LLAMA_PROMPTS = ["tom has red balls .", "ann wants blue hats . what does ann want ?"]
BART_PROMPTS = ["march twenty first", "the fifth of june nineteen ninety nine"]


@pytest.fixture(scope="module")
def llama():
    return models.load("tiny-llama")


@pytest.fixture(scope="module")
def bart():
    return models.load("tiny-bart")


@pytest.fixture(scope="module")
def llama_batch(llama):
    model, tok = llama
    return tracer.trace_generation(model, tok, LLAMA_PROMPTS, max_new_tokens=4)


@pytest.fixture(scope="module")
def llama_beams(llama):
    model, tok = llama
    return tracer.trace_generation(
        model, tok, LLAMA_PROMPTS, max_new_tokens=4, num_beams=3, num_return_sequences=2
    )


@pytest.fixture(scope="module")
def bart_batch(bart):
    model, tok = bart
    return tracer.trace_generation(model, tok, BART_PROMPTS, max_new_tokens=3)


@pytest.fixture(scope="module")
def bart_beams(bart):
    model, tok = bart
    return tracer.trace_generation(
        model, tok, BART_PROMPTS, max_new_tokens=4, num_beams=2, num_return_sequences=2
    )


# -- rows and hypotheses -------------------------------------------------------------------------


def test_a_rows_steps_are_fed_that_rows_ids(llama_batch):
    tr = llama_batch
    width = len(tr.batch.prompt_ids[0])
    for r in range(2):
        row = tr.row(r)
        assert row.steps[0].fed_ids == tr.batch.prompt_ids[r]
        for step in row.steps[1:]:
            assert step.fed_ids == [tr.batch.sequence_ids[r][width + step.index - 1]]
        assert row.steps[0].batch_row == r


@pytest.mark.parametrize("which", ["llama_beams", "bart_beams"])
def test_a_row_of_a_beam_batch_holds_its_own_prompts_beams(request, which):
    tr = request.getfixturevalue(which)
    nb, per_prompt = tr.num_beams, tr.returned_per_prompt
    kind = "cross" if tr.encoder_decoder else "self"
    for r in range(2):
        row = tr.row(r)
        assert row.batch is None and row.prompt_ids == tr.batch.prompt_ids[r]
        assert row.beam_result.sequences == tr.beam_result.sequences[r * per_prompt : (r + 1) * per_prompt]
        assert row.sequence_ids == tr.beam_result.sequences[r * per_prompt]
        for step, whole in zip(row.steps, tr.steps, strict=True):
            for j in range(nb):  # its beam j is the model's row r * num_beams + j
                np.testing.assert_array_equal(
                    step.attention(kind, 0, batch=j), whole.attention(kind, 0, batch=r * nb + j)
                )
            if tr.encoder_decoder and step.index == 0:  # the encoder's rows are prompts
                np.testing.assert_array_equal(
                    step.attention("encoder", 0), whole.attention("encoder", 0, batch=r)
                )
            assert step.beams.candidate_tokens == [whole.beams.candidate_tokens[r]]
            if whole.beams.reorder is not None:
                assert [r * nb + i for i in step.beams.reorder] == whole.beams.reorder[r * nb : (r + 1) * nb]
        assert all(all(b < nb for b in beams_of) for beams_of in row.beam_result.beam_indices)
        # the row's own best hypothesis is its hypothesis 0
        assert row.hypothesis(0).sequence_ids == tr.hypothesis(r * per_prompt).sequence_ids


@pytest.mark.parametrize("which", ["llama_beams", "bart_beams"])
def test_a_hypothesis_holds_the_beam_each_of_its_tokens_came_from(request, which):
    tr = request.getfixturevalue(which)
    result = tr.beam_result
    start = len(tr.start_ids)
    for h, sequence in enumerate(result.sequences):
        hyp = tr.hypothesis(h)
        own = [b for b in result.beam_indices[h] if b >= 0]
        assert len(hyp.steps) == len(own)
        assert hyp.sequence_ids == sequence[: start + len(own)]
        assert [s.chosen_id for s in hyp.steps] == sequence[start : start + len(own)]
        for step, beam in zip(hyp.steps, own, strict=True):
            np.testing.assert_array_equal(
                step.attention("self", 0), tr.steps[step.index].attention("self", 0, batch=beam)
            )
            if tr.encoder_decoder and step.index == 0:  # the encoder ran once per prompt, before the beams
                prompt = h // tr.returned_per_prompt
                np.testing.assert_array_equal(
                    step.attention("encoder", 0), tr.steps[0].attention("encoder", 0, batch=prompt)
                )
            if step.fed_ids is not None:
                fed = tr.steps[step.index].fed.array()[beam].tolist()
                assert step.fed_ids == fed
        for step in hyp.steps:  # every step says what its beam could have chosen, and with what chance
            assert step.chosen_id in [t.token_id for t in step.topk] and 0 < step.chosen_prob <= 1
            assert not any(t.text.startswith("<") and t.text[1:-1].isdigit() for t in step.topk)


# -- all rows side by side -----------------------------------------------------------------------


def test_the_rows_grid_is_the_batch_with_its_mask_and_position_ids(llama_batch):
    tr = llama_batch
    grid = batch.rows_grid(tr)
    position_ids = tr.steps[0].prepare_inputs["position_ids"].array()  # [batch, prompt]
    for r in range(2):
        lines = grid[grid["row"] == r]
        width = len(tr.batch.prompt_ids[r])
        assert lines["token_id"].tolist() == tr.batch.sequence_ids[r]
        assert lines["mask"].tolist()[:width] == tr.batch.attention_mask[r]
        assert (lines["kind"].iloc[:width] == "pad").tolist() == [m == 0 for m in tr.batch.attention_mask[r]]
        assert lines["position_id"].iloc[:width].tolist() == position_ids[r].tolist()
    pads = sum(row.count(0) for row in tr.batch.attention_mask)
    pad_code = list(batch._KIND_COLORS).index("pad")
    for narrow in (False, True):  # a phone's figure is the same cells, positions down the screen
        cells = np.asarray(batch.rows_figure(tr, "decoder", narrow).data[0].z, dtype=float)
        assert (cells == pad_code).sum() == 2 * pads  # each pad's token and its 0 in the mask line


def test_the_step_table_shows_every_row_of_the_models_batch(llama_batch, llama_beams):
    table = batch.step_rows_table(llama_batch, 1)
    assert table["fed"].tolist() == [
        " ".join(llama_batch.tokens(llama_batch.row(r).steps[1].fed_ids)) for r in range(2)
    ]
    beam_table = batch.step_rows_table(llama_beams, 0)
    assert len(beam_table) == 2 * llama_beams.num_beams  # every beam is a row
    pads = llama_beams.batch.attention_mask[0].count(0)
    assert beam_table["attention_mask"].iloc[0].endswith(f"{pads} masked")


# -- masked keys ---------------------------------------------------------------------------------


def _masked_layers(fig) -> list[np.ndarray]:
    return [~np.isnan(np.asarray(d.z, dtype=float)) for d in fig.data if d.name == "masked"]


@pytest.mark.parametrize("head", [0, "all"])
def test_masked_cells_are_exactly_the_key_mask_zeros(llama_batch, head):
    tr = llama_batch
    r = next(r for r in range(2) if 0 in tr.batch.attention_mask[r])
    row = tr.row(r)
    for step in row.steps[:2]:
        fig = batch.attention_figure(row, step.index, "self", 0, head)
        keys = row.key_mask(step, "self", 0)
        att = step.attention("self", 0)  # [heads, q, k]
        layers = _masked_layers(fig)
        assert len(layers) == (1 if head != "all" or att.shape[1] == 1 else att.shape[0])
        for masked in layers:
            assert masked.shape[-1] == len(keys)
            assert (masked == ~keys[None, :]).all()
    # the longest row has no pad, and its figure is generation.py's own
    other = tr.row(1 - r)
    assert not _masked_layers(batch.attention_figure(other, 0, "self", 0, 0))


def test_the_whole_run_marks_the_pad_columns(llama_batch):
    tr = llama_batch
    r = next(r for r in range(2) if 0 in tr.batch.attention_mask[r])
    fig = batch.stitched_attention_figure(tr.row(r), "self", 0, 0, 1)
    (masked,) = _masked_layers(fig)
    pads = np.array(tr.batch.attention_mask[r]) == 0
    columns = np.flatnonzero(masked.any(axis=0))
    assert columns.tolist() == np.flatnonzero(pads).tolist()


def test_bart_shows_the_source_mask_in_the_encoder_and_in_cross_attention(bart_batch):
    tr = bart_batch
    r = next(r for r in range(2) if 0 in tr.batch.attention_mask[r])
    row = tr.row(r)
    fig = batch.encoder_mask_figure(row, 1, 0, 0)
    pads = ~np.array(tr.batch.attention_mask[r], dtype=bool)
    layers = [
        (d.xaxis, m)
        for d, m in zip([d for d in fig.data if d.name == "masked"], _masked_layers(fig), strict=True)
    ]
    assert sorted(axis for axis, _ in layers) == ["x", "x2"]  # the encoder and cross-attention
    for _, masked in layers:
        assert (masked == pads[None, :]).all()
    np.testing.assert_array_equal(row.key_mask(row.steps[1], "cross", 0), ~pads)
    assert "cross-attention" in batch.encoder_mask_story(tr, 1)
    source = batch.rows_grid(tr, "source")
    assert source[source["row"] == r]["mask"].tolist() == tr.batch.attention_mask[r]


# -- beams ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["llama_beams", "bart_beams"])
def test_the_trees_edges_are_the_recorded_parents_and_its_winner_the_first_sequence(request, which):
    tr = request.getfixturevalue(which)
    nb, start = tr.num_beams, len(tr.start_ids)
    for prompt in range(tr.batch_size):
        tree = beam_tree = beams.beam_tree(tr, prompt)
        for step in tr.steps:
            nodes = tree[tree["step"] == step.index]
            assert nodes["parent_beam"].tolist() == step.beams.candidate_parents[prompt]
            assert nodes["token_id"].tolist() == step.beams.candidate_tokens[prompt]
            if step.beams.parents:
                kept = nodes[nodes["status"] == "kept"].sort_values("beam")
                assert kept["beam"].tolist() == list(range(nb))
                assert kept["parent_beam"].tolist() == step.beams.parents[prompt]
                assert kept["token_id"].tolist() == step.beams.tokens[prompt]
            if step.index > 0:  # each edge starts at the node that was its parent beam
                before = tree[(tree["step"] == step.index - 1) & (tree["status"] == "kept")]
                rank_of_beam = dict(zip(before["beam"], before["rank"], strict=True))
                assert nodes["parent_rank"].tolist() == [rank_of_beam[p] for p in nodes["parent_beam"]]
        winner = tr.beam_result.sequences[prompt * tr.returned_per_prompt]
        path = beam_tree[beam_tree["winner_path"]].sort_values("step")
        assert path["token_id"].tolist() == winner[start : start + len(path)]
        assert path["step"].tolist() == list(range(len(path)))
        assert path.iloc[-1]["returned"] == 0
        assert len(path) == sum(
            1 for b in tr.beam_result.beam_indices[prompt * tr.returned_per_prompt] if b >= 0
        )
        fig = beams.beam_tree_figure(tr, prompt, 1)
        stars = next(d for d in fig.data if d.name == "returned")
        assert len(stars.x) == tr.returned_per_prompt


def test_the_candidates_and_hypotheses_tables_follow_the_record(llama_beams):
    tr = llama_beams
    table = beams.candidates_table(tr, 1, 1)
    choice = tr.steps[1].beams
    assert table["from beam"].tolist() == choice.candidate_parents[1]
    assert table["summed log-prob"].tolist() == [round(s, 4) for s in choice.candidate_scores[1]]
    kept = [row for row in table["outcome"] if row.startswith("kept as beam")]
    assert len(kept) == tr.num_beams
    hyps = beams.hypotheses_table(tr, 1)
    assert hyps["score"].tolist() == [round(s, 4) for s in tr.beam_result.sequences_scores[2:4]]


def test_the_reorder_table_is_the_recorded_reorder(llama_beams):
    tr = llama_beams
    for step in tr.steps:
        table = beams.reorder_table(tr, step.index)
        layers = beams.reorder_layers_table(tr, step.index)
        if step.beams.reorder is None:
            assert table.empty and layers.empty
            continue
        assert table["takes row"].tolist() == step.beams.reorder
        assert table["cache row"].tolist() == list(range(len(step.beams.reorder)))
        assert layers["reorder applied"].tolist() == ["yes"] * len(step.beams.reorder_applied)
        fig = beams.reorder_figure(tr, step.index)
        edges = next(d for d in fig.data if d.name == "reorder")
        assert list(edges.y[0::3]) == step.beams.reorder


def test_a_cache_that_ignores_the_reorder_shows_in_the_layers_table(llama):
    class NoReorder(DynamicCache):
        def reorder_cache(self, beam_idx):  # the bug: beams keep their own past
            pass

    model, tok = llama
    tr = tracer.trace_generation(
        model,
        tok,
        LLAMA_PROMPTS[1],
        max_new_tokens=5,
        num_beams=3,
        past_key_values=NoReorder(config=model.config),
    )
    broken = [s for s in tr.steps if s.beams.reorder is not None and not all(s.beams.reorder_applied)]
    assert broken
    layers = beams.reorder_layers_table(tr, broken[0].index)
    assert layers["reorder applied"].str.startswith("NO").tolist() == [
        not a for a in broken[0].beams.reorder_applied
    ]
    assert "did not apply" in beams.reorder_figure(tr, broken[0].index).layout.title.text


def test_the_views_say_when_there_is_nothing_to_show(llama):
    model, tok = llama
    one = tracer.trace_generation(model, tok, LLAMA_PROMPTS[0], max_new_tokens=2)
    assert batch.row_labels(one) == [] and batch.rows_grid(one).empty
    assert "not a beam search" in beams.beam_summary(one)
    assert beams.beam_tree(one).empty and beams.reorder_table(one, 0).empty
    assert batch.attention_figure(one, 0, "self", 0, 0) is not None


def test_beams_without_the_cache_have_no_reorder_to_show(llama):
    model, tok = llama
    tr = tracer.trace_generation(model, tok, LLAMA_PROMPTS[0], max_new_tokens=3, num_beams=2, use_cache=False)
    assert all(s.beams.reorder is None for s in tr.steps)
    assert beams.reorder_table(tr, 0).empty
    fig = beams.reorder_figure(tr, 0)
    assert "cache is off" in fig.layout.annotations[0].text
    assert not beams.beam_tree(tr).empty  # the tree does not need the cache
