"""Word swap and refine mappers (Prompt-to-Prompt)."""

from __future__ import annotations

import torch

from lib_mrgd.attention.mappers import align, can_swap, make_mapper, refine_mapper

BOS, EOS = 100, 101


def ctx(*tokens, length=10):
    return [BOS, *tokens] + [EOS] * (length - 1 - len(tokens))


def test_swap_maps_each_position_to_itself():
    s, t = ctx(1, 2, 3), ctx(1, 7, 3)
    assert can_swap(s, t, {BOS, EOS})
    m = make_mapper(s, t, BOS, {BOS, EOS}, prefer_swap=True)
    assert m.mode == "swap" and m.index.tolist() == list(range(10)) and m.alpha.tolist() == [1.0] * 10


def test_unequal_token_counts_fall_back_to_refine():
    s, t = ctx(1, 2, 3), ctx(1, 7, 8, 3)
    assert not can_swap(s, t, {BOS, EOS})
    assert make_mapper(s, t, BOS, {BOS, EOS}, prefer_swap=True).mode == "refine"


def test_refine_with_an_insertion():
    s, t = ctx(1, 2, 3), ctx(1, 2, 9, 3)  # "a red cat" -> "a red fluffy cat"
    m = refine_mapper(s, t, BOS, {BOS, EOS})
    assert m.alpha[:5].tolist() == [1.0, 1.0, 1.0, 0.0, 1.0]  # BOS, a, red, (fluffy: own map), cat
    assert m.index[[0, 1, 2, 4]].tolist() == [0, 1, 2, 3]
    assert m.alpha[5:].tolist() == [1.0] * 5  # EOS and padding pair up in order


def test_refine_with_a_deletion():
    s, t = ctx(1, 2, 9, 3), ctx(1, 2, 3)
    m = refine_mapper(s, t, BOS, {BOS, EOS})
    assert m.index[:4].tolist() == [0, 1, 2, 4] and m.alpha[:4].tolist() == [1.0] * 4


def test_alignment_scores_match_1_mismatch_minus_1_gap_0():
    assert align([1, 2, 3], [1, 4, 3]) == [(0, 0), (2, 2)]  # a mismatch never beats two gaps
    assert align([], [1]) == []


def test_apply_mixes_source_and_target_maps():
    s, t = ctx(1, 2, 3, length=5), ctx(1, 9, 3, length=5)
    m = refine_mapper(s, t, BOS, {BOS, EOS})
    src, tgt = torch.eye(5)[None], torch.full((1, 5, 5), 0.5)
    out = m.apply(src, tgt)
    assert torch.equal(out[..., 2], tgt[..., 2])  # the new word keeps its own map
    assert torch.equal(out[..., 1], src[..., 1])


def test_weight_syntax_does_not_change_the_mapping(tiny):
    plain = tiny.context_ids("a red cat on a sofa")
    weighted = tiny.context_ids("a (red:1.4) cat on [a sofa]")
    assert plain == weighted
    assert make_mapper(plain, weighted, tiny.bos_id, {tiny.bos_id, tiny.eos_id}, prefer_swap=True).mode == "swap"
