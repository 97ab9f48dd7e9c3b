"""Which source token's cross-attention map each target token inherits (Prompt-to-Prompt).

A mapper is ``(index, alpha)`` over the target's context positions: the edited map of target
position j is ``alpha[j] * A_source[index[j]] + (1 - alpha[j]) * A_target[j]``.

- word swap: the prompts have the same token layout; position j inherits position j, so the
  swapped word takes over the layout of the word it replaces.
- refine: a global alignment of the two token sequences (match 1, mismatch -1, gap 0); aligned
  tokens inherit, inserted tokens keep their own maps. BOS, EOS and padding pair up in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass(frozen=True)
class Mapper:
    index: torch.Tensor  # (target positions,) long, into source positions
    alpha: torch.Tensor  # (target positions,) float in {0, 1}
    mode: str  # "swap" or "refine"

    def apply(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Edited target maps from ``(..., positions)`` source and target maps."""
        alpha = self.alpha.to(target)
        return source[..., self.index.to(source.device)] * alpha + target * (1 - alpha)


def _split(ids: Sequence[int], bos: int, special: set[int]) -> tuple[list[int], list[int], list[int]]:
    """Positions of BOS, of content tokens, and of EOS/padding (``special`` holds BOS, EOS, pad)."""
    starts, content, ends = [], [], []
    for pos, tok in enumerate(ids):
        (starts if tok == bos else ends if tok in special else content).append(pos)
    return starts, content, ends


def align(source: Sequence[int], target: Sequence[int], match: float = 1.0, mismatch: float = -1.0,
          gap: float = 0.0) -> list[tuple[int, int]]:
    """Needleman-Wunsch; the pairs ``(i, j)`` of source and target items aligned to each other."""
    n, m = len(source), len(target)
    score = [[0.0] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        score[i][0] = i * gap
    for j in range(1, m + 1):
        score[0][j] = j * gap
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            diag = score[i - 1][j - 1] + (match if source[i - 1] == target[j - 1] else mismatch)
            score[i][j] = max(diag, score[i - 1][j] + gap, score[i][j - 1] + gap)
    pairs = []
    i, j = n, m
    while i > 0 and j > 0:
        diag = score[i - 1][j - 1] + (match if source[i - 1] == target[j - 1] else mismatch)
        if score[i][j] == diag:
            pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif score[i][j] == score[i - 1][j] + gap:
            i -= 1
        else:
            j -= 1
    return pairs[::-1]


def swap_mapper(length: int) -> Mapper:
    return Mapper(torch.arange(length), torch.ones(length), "swap")


def can_swap(source_ids: Sequence[int], target_ids: Sequence[int], special: set[int]) -> bool:
    """Word swap needs the same number of tokens in the same places."""
    if len(source_ids) != len(target_ids):
        return False
    return all((s in special) == (t in special) for s, t in zip(source_ids, target_ids))


def refine_mapper(source_ids: Sequence[int], target_ids: Sequence[int], bos: int, special: set[int]) -> Mapper:
    s_bos, s_content, s_rest = _split(source_ids, bos, special)
    t_bos, t_content, t_rest = _split(target_ids, bos, special)
    index = torch.arange(len(target_ids))
    alpha = torch.zeros(len(target_ids))
    for t_list, s_list in ((t_bos, s_bos), (t_rest, s_rest)):
        for k, pos in enumerate(t_list):
            if s_list:
                index[pos] = s_list[min(k, len(s_list) - 1)]
                alpha[pos] = 1.0
    pairs = align([source_ids[p] for p in s_content], [target_ids[p] for p in t_content])
    for i, j in pairs:
        if source_ids[s_content[i]] == target_ids[t_content[j]]:
            index[t_content[j]] = s_content[i]
            alpha[t_content[j]] = 1.0
    return Mapper(index, alpha, "refine")


def make_mapper(source_ids: Sequence[int], target_ids: Sequence[int], bos: int, special: set[int],
                prefer_swap: bool) -> Mapper:
    """``special``: the ids of BOS, EOS and padding."""
    if prefer_swap and can_swap(source_ids, target_ids, special):
        return swap_mapper(len(target_ids))
    return refine_mapper(source_ids, target_ids, bos, special)
