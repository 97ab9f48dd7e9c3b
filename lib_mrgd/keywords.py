"""Entropy keyword selection (Eq. 6 of the paper).

A token whose cross-attention map is peaked names an object; a quality word ("masterpiece",
"8k") spreads its attention evenly. Each token's map is scaled to 0..255, its 256-bin histogram
gives an entropy in **bits** (log base 2: 0 for a constant map, at most 8 for 256 pixels spread
over the 256 levels), and the lowest-entropy tokens of each region become its keywords.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

LEVELS = 256


def entropy_bits(maps: torch.Tensor) -> torch.Tensor:
    """Entropy of each map's 256-level histogram: ``(..., h, w)`` -> ``(...)``, in bits."""
    flat = maps.float().flatten(-2)
    lo, hi = flat.amin(-1, keepdim=True), flat.amax(-1, keepdim=True)
    span = (hi - lo).clamp_min(1e-12)
    levels = ((flat - lo) / span * (LEVELS - 1)).round().long().clamp(0, LEVELS - 1)
    levels = torch.where(hi - lo > 0, levels, torch.zeros_like(levels))
    counts = torch.zeros(*flat.shape[:-1], LEVELS, device=flat.device).scatter_add_(
        -1, levels, torch.ones_like(flat))
    p = counts / flat.shape[-1]
    return -(p * torch.log2(p.clamp_min(1e-30))).sum(-1)


def tag_positions(context_ids: Sequence[int], parts: Sequence[tuple[Sequence[int], int | None]],
                  separator: Sequence[int], special: set[int]) -> list[int | None]:
    """The part tag of every context position of a prompt made by joining ``parts``.

    ``parts`` holds each piece's content ids with its tag; pieces are joined by ``separator``.
    Positions are matched in order, skipping BOS/EOS/padding; where the host's tokenisation
    disagrees with the pieces (odd brackets across pieces) the rest stays untagged.
    """
    stream: list[tuple[int, int | None]] = []
    for k, (ids, tag) in enumerate(parts):
        if k:
            stream += [(t, None) for t in separator]
        stream += [(t, tag) for t in ids]
    tags: list[int | None] = []
    cursor = 0
    for tok in context_ids:
        if tok in special or cursor >= len(stream) or stream[cursor][0] != tok:
            tags.append(None)
            if tok not in special:
                cursor = len(stream)  # out of step: stop tagging
            continue
        tags.append(stream[cursor][1])
        cursor += 1
    return tags


def word_spans(tokens: Sequence[str]) -> list[tuple[int, int]]:
    """For each position, the [start, end) of the word it belongs to (BPE ``</w>`` ends a word)."""
    spans = [(0, 0)] * len(tokens)
    start = 0
    for i, tok in enumerate(tokens):
        if tok.endswith("</w>") or i == len(tokens) - 1:
            for j in range(start, i + 1):
                spans[j] = (start, i + 1)
            start = i + 1
    return spans


def _clean(token: str) -> str:
    return token.replace("</w>", "")


def is_word(text: str) -> bool:
    return any(ch.isalnum() for ch in text)


@dataclass
class Keyword:
    word: str
    entropy: float  # bits; user keywords have NaN

    def to_json(self) -> dict:
        return {"word": self.word, "entropy": None if math.isnan(self.entropy) else round(self.entropy, 4)}


def select(entropies: Sequence[float], context_ids: Sequence[int], tokens: Sequence[str],
           tags: Sequence[int | None], region: int, count: int, special: set[int]) -> list[Keyword]:
    """The ``count`` lowest-entropy tokens of ``region``, as whole words (best first, unique)."""
    spans_all = word_spans([tok if tag == region else "</w>" for tok, tag in zip(tokens, tags)])
    candidates = [i for i, (tag, tid) in enumerate(zip(tags, context_ids))
                  if tag == region and tid not in special and is_word(_clean(tokens[i]))]
    candidates.sort(key=lambda i: (entropies[i], i))
    out: dict[str, Keyword] = {}
    for i in candidates[:count]:
        a, b = spans_all[i]
        word = "".join(_clean(tokens[j]) for j in range(a, b) if tags[j] == region).strip()
        if word and word not in out:
            out[word] = Keyword(word, float(entropies[i]))
    return list(out.values())


def positions_of(words: Sequence[str], tokens: Sequence[str], tags: Sequence[int | None],
                 regions: set[int]) -> list[int]:
    """Context positions of the tokens that spell any of ``words`` inside the given regions."""
    wanted = {w.lower() for phrase in words for w in phrase.replace(",", " ").split()}
    spans = word_spans(tokens)
    hits = []
    for i, tag in enumerate(tags):
        if tag in regions:
            a, b = spans[i]
            if "".join(_clean(tokens[j]) for j in range(a, b)).lower() in wanted:
                hits.append(i)
    return hits
