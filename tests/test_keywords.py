"""Entropy keyword selection (Eq. 6)."""

from __future__ import annotations

import math

import pytest
import torch

from lib_mrgd.keywords import entropy_bits, positions_of, select, tag_positions, word_spans


def test_constant_map_has_zero_entropy():
    assert entropy_bits(torch.full((16, 16), 0.3)).item() == 0.0


def test_a_map_spread_evenly_over_256_levels_has_the_maximum_8_bits():
    spread = torch.arange(256, dtype=torch.float32).reshape(16, 16) / 255
    assert entropy_bits(spread).item() == pytest.approx(math.log2(256))


def test_peaked_maps_have_lower_entropy_than_spread_ones():
    gen = torch.Generator().manual_seed(0)
    peaked = torch.zeros(16, 16)
    peaked[4:7, 4:7] = 1.0
    noise = torch.rand(16, 16, generator=gen)
    values = entropy_bits(torch.stack([peaked, noise])).tolist()
    assert values[0] < 1.0 < 6.0 < values[1]


def _toy():
    # BOS, "a</w>", "gol", "den</w>", "dog</w>", ",</w>", "best</w>", EOS, EOS
    ids = [0, 10, 11, 12, 13, 14, 15, 1, 1]
    tokens = ["<s>", "a</w>", "gol", "den</w>", "dog</w>", ",</w>", "best</w>", "</s>", "</s>"]
    tags = [None, 0, 0, 0, 0, None, None, None, None]
    return ids, tokens, tags


def test_selection_picks_the_peaked_tokens_and_rejoins_words():
    ids, tokens, tags = _toy()
    entropies = [0.0, 5.0, 1.0, 2.0, 0.5, 0.1, 0.2, 0.0, 0.0]
    got = select(entropies, ids, tokens, tags, region=0, count=2, special={0, 1})
    assert [k.word for k in got] == ["dog", "golden"]
    assert got[0].entropy == 0.5
    # punctuation, special tokens and other regions' tokens never count
    got = select(entropies, ids, tokens, tags, region=0, count=10, special={0, 1})
    assert {k.word for k in got} == {"a", "golden", "dog"}


def test_word_spans_and_positions():
    ids, tokens, tags = _toy()
    assert word_spans(tokens)[2] == (2, 4)
    assert positions_of(["Golden"], tokens, tags, {0}) == [2, 3]
    assert positions_of(["best"], tokens, tags, {0}) == []


def test_tag_positions_follows_the_pieces_and_stops_when_out_of_step():
    context = [0, 5, 6, 9, 7, 1, 1]
    parts = [([5, 6], None), ([7], 3)]
    assert tag_positions(context, parts, separator=[9], special={0, 1}) == [None, None, None, None, 3, None, None]
    assert tag_positions([0, 5, 8, 9, 7, 1], parts, [9], {0, 1}) == [None, None, None, None, None, None]
