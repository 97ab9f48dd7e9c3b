"""Prompt parsing and tokenisation the way the WebUI does it.

The standalone runner must see the same token positions as the WebUI, or attention control and
keyword selection would point at the wrong tokens: emphasis such as ``(word:1.2)`` changes weights
but not positions, ``BREAK`` starts a new chunk, and each chunk is ``[BOS] + 75 tokens + [EOS]``,
padded with EOS, so token *j* of chunk *c* sits at context position ``c * 77 + j``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Sequence

CHUNK_TOKENS = 75
CHUNK_LENGTH = CHUNK_TOKENS + 2
EMPHASIS_UP = 1.1
BREAK = "BREAK"
# The WebUI moves the tail of a full chunk to the next one when a comma is this close to the end.
COMMA_BACKTRACK = 20
_BREAK_RE = re.compile(r"\s*\bBREAK\b\s*")


def parse_emphasis(text: str) -> list[tuple[str, float]]:
    """Split a prompt into ``(text, weight)`` runs.

    ``(a)`` multiplies by 1.1, ``[a]`` divides by 1.1, ``(a:1.3)`` sets 1.3 (nesting multiplies),
    ``\\(`` escapes a bracket, an unclosed bracket applies to the rest of the prompt, and ``BREAK``
    comes back as ``("BREAK", -1.0)``.
    """
    runs: list[tuple[str, float]] = []
    round_open: list[int] = []  # indices into runs where a bracket opened
    square_open: list[int] = []
    buf: list[str] = []

    def flush() -> None:
        if buf:
            runs.append(("".join(buf), 1.0))
            buf.clear()

    def scale(start: int, factor: float) -> None:
        for k in range(start, len(runs)):
            runs[k] = (runs[k][0], runs[k][1] * factor)

    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\" and i + 1 < n:
            buf.append(text[i + 1])
            i += 2
            continue
        if ch == "(":
            flush()
            round_open.append(len(runs))
        elif ch == "[":
            flush()
            square_open.append(len(runs))
        elif ch == ")" and round_open:
            flush()
            scale(round_open.pop(), EMPHASIS_UP)
        elif ch == "]" and square_open:
            flush()
            scale(square_open.pop(), 1 / EMPHASIS_UP)
        elif ch == ":" and round_open:
            weight, end = _explicit_weight(text, i)
            if weight is None:
                buf.append(ch)
            else:
                flush()
                scale(round_open.pop(), weight)
                i = end
                continue
        else:
            buf.append(ch)
        i += 1
    flush()
    for start in round_open:
        scale(start, EMPHASIS_UP)
    for start in square_open:
        scale(start, 1 / EMPHASIS_UP)

    out: list[tuple[str, float]] = []
    for run_text, weight in runs:
        parts = _BREAK_RE.split(run_text)
        for k, part in enumerate(parts):
            if k:
                out.append((BREAK, -1.0))
            if part:
                out.append((part, weight))
    merged: list[tuple[str, float]] = []
    for run in out:
        if merged and run[1] == merged[-1][1] and run[1] != -1.0:
            merged[-1] = (merged[-1][0] + run[0], run[1])
        else:
            merged.append(run)
    return merged or [("", 1.0)]


def _explicit_weight(text: str, colon: int) -> tuple[float | None, int]:
    """At ``:``, read ``\\s*number\\s*)``; return the weight and the index after ``)``."""
    j = colon + 1
    while j < len(text) and text[j].isspace():
        j += 1
    start = j
    if j < len(text) and text[j] in "+-":
        j += 1
    while j < len(text) and (text[j].isdigit() or text[j] == "."):
        j += 1
    number = text[start:j]
    while j < len(text) and text[j].isspace():
        j += 1
    if j >= len(text) or text[j] != ")":
        return None, colon
    try:
        return float(number), j + 1
    except ValueError:
        return None, colon


@dataclass
class TokenizedPrompt:
    """A prompt as the text encoder sees it: chunks of 77 ids with a weight per position."""

    chunks: list[list[int]] = field(default_factory=list)
    multipliers: list[list[float]] = field(default_factory=list)
    token_count: int = 0

    @property
    def ids(self) -> list[int]:
        return [t for chunk in self.chunks for t in chunk]


def tokenize_prompt(
    text: str,
    encode: Callable[[str], Sequence[int]],
    bos: int,
    eos: int,
    comma: int | None,
    pad: int | None = None,
) -> TokenizedPrompt:
    """Chunk a prompt like the WebUI's ``tokenize_line``; ``encode`` maps text to ids without
    special tokens."""
    pad = eos if pad is None else pad
    result = TokenizedPrompt()
    tokens: list[int] = []
    mults: list[float] = []
    last_comma = -1

    def next_chunk() -> None:
        nonlocal tokens, mults, last_comma
        fill = CHUNK_TOKENS - len(tokens)
        result.chunks.append([bos] + tokens + [pad] * fill + [eos])
        result.multipliers.append([1.0] + mults + [1.0] * fill + [1.0])
        tokens, mults, last_comma = [], [], -1

    for run_text, weight in parse_emphasis(text):
        if weight == -1.0 and run_text == BREAK:
            next_chunk()
            continue
        for token in encode(run_text):
            if token == comma:
                last_comma = len(tokens)
            elif (len(tokens) == CHUNK_TOKENS and last_comma != -1
                  and len(tokens) - last_comma <= COMMA_BACKTRACK):
                cut = last_comma + 1
                moved, moved_w = tokens[cut:], mults[cut:]
                tokens, mults = tokens[:cut], mults[:cut]
                next_chunk()
                tokens, mults = moved, moved_w
            if len(tokens) == CHUNK_TOKENS:
                next_chunk()
            tokens.append(token)
            mults.append(weight)
            result.token_count += 1
    if tokens or not result.chunks:
        next_chunk()
    return result
