"""Prompt parsing and chunking follow the WebUI, so token positions match between hosts."""

from __future__ import annotations

import pytest

from lib_mrgd.prompts import CHUNK_LENGTH, parse_emphasis, tokenize_prompt


@pytest.mark.parametrize("text,expected", [
    ("a cat", [("a cat", 1.0)]),
    ("a (cat)", [("a ", 1.0), ("cat", 1.1)]),
    ("a [cat]", [("a ", 1.0), ("cat", 1 / 1.1)]),
    ("a (cat:1.5) b", [("a ", 1.0), ("cat", 1.5), (" b", 1.0)]),
    ("((cat))", [("cat", 1.1 * 1.1)]),
    ("(a (b:2) c)", [("a ", 1.1), ("b", 2.2), (" c", 1.1)]),
    (r"a \(cat\)", [("a (cat)", 1.0)]),
    ("a (cat", [("a ", 1.0), ("cat", 1.1)]),
    ("a cat)", [("a cat)", 1.0)]),
    ("time: 5pm", [("time: 5pm", 1.0)]),
    ("a BREAK b", [("a", 1.0), ("BREAK", -1.0), ("b", 1.0)]),
    ("BREAKFAST", [("BREAKFAST", 1.0)]),
    ("", [("", 1.0)]),
])
def test_parse_emphasis(text, expected):
    got = parse_emphasis(text)
    assert [t for t, _ in got] == [t for t, _ in expected]
    assert [w for _, w in got] == pytest.approx([w for _, w in expected])


@pytest.fixture(scope="module")
def tok():
    from lib_mrgd.backends.tokenizer import clip_tokenizer

    t = clip_tokenizer()
    return lambda text: tokenize_prompt(
        text, lambda s: t(s, add_special_tokens=False).input_ids, 49406, 49407, 267)


def test_real_clip_ids(tok):
    tp = tok("a photo of a cat")
    assert tp.chunks[0][:7] == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert len(tp.chunks) == 1 and len(tp.chunks[0]) == CHUNK_LENGTH
    assert tp.chunks[0][-1] == 49407 and set(tp.chunks[0][6:]) == {49407}


def test_weights_do_not_shift_positions(tok):
    plain, weighted = tok("a red cat on a sofa"), tok("a (red:1.3) cat on [a sofa]")
    assert plain.chunks == weighted.chunks
    assert weighted.multipliers[0][2] == pytest.approx(1.3)
    assert weighted.multipliers[0][5] == pytest.approx(1 / 1.1)
    assert set(plain.multipliers[0]) == {1.0}


def test_long_prompts_chunk_at_75_and_break_forces_a_chunk(tok):
    words = " ".join(["cat"] * 80)  # no commas: a hard cut after 75 tokens
    tp = tok(words)
    assert len(tp.chunks) == 2 and tp.chunks[1][1:6] == [2368] * 5
    tp = tok("a cat BREAK a dog")
    assert len(tp.chunks) == 2 and tp.chunks[1][1:3] == [320, 1929]


def test_comma_backtrack_moves_the_tail_to_the_next_chunk(tok):
    text = ", ".join(["cat"] * 30) + ", " + " ".join(["dog"] * 20)
    tp = tok(text)
    first = tp.chunks[0][1:76]
    # the chunk ends right after the last comma that fits; the dogs start chunk two
    last_comma = max(i for i, t in enumerate(first) if t == 267)
    assert all(t == 49407 for t in first[last_comma + 1:])
    assert tp.chunks[1][1] == 1929
