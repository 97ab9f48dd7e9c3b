"""Attention control between source and target (Eq. 5), keyword capture and KSSA.

The fusion step tells the controller the sampling progress and, for every UNet call, the batch
layout; each attention layer then asks whether it has work. Work is, per layer kind:

- cross-attention edit: the target's conditional row inherits the source's maps through a word
  swap or refine mapper, weighted 1 -> 0 linearly over the layer kind's window;
- self-attention edit: on maps of at most (latent side / ``self_replace_factor``)^2 query pixels
  of the *full image* (16x16 at 512^2, as the authors' code counts them, so the half-resolution
  maps of a small crop count too), the target row uses the source's attention pattern,
  ``softmax(q_S k_S^T) v_T``, inside its window;
- keyword capture: r_total's conditional cross-attention maps at 1/4 of the latent side,
  averaged over layers, heads and steps, for entropy keyword selection;
- KSSA: in r_total's rows, cross-attention marks the half of the pixels most attended by the
  keywords; self-attention logits toward them are multiplied by a factor (scaling those keys).

Nothing here materialises a self-attention map: the self edit and KSSA are exact rewrites that
keep the fused kernel (``softmax(q (c k)^T) = softmax(c q k^T)`` on the scaled keys).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Iterator

import torch

from ..conditioning import SEPARATOR, Conditioning, TextModel, content_ids, total_parts
from ..keywords import Keyword, entropy_bits, positions_of, select, tag_positions
from ..layout import SOURCE, TARGET, BatchLayout, Branch, Layout, LayerKind
from ..method import MethodPlan
from ..spec import EditSpec, RegionKind
from .mappers import Mapper, make_mapper
from .patcher import Site, merge, probabilities, project, sdpa

KEYWORD_LEVEL = 2  # maps at 1/4 of the latent side: 16x16 for SD's 64x64


@dataclass
class PairPlan:
    """How a layer's target inherits from its source."""

    layer: int
    cross: float  # fraction of the layer's life with cross-attention injection
    self_: float  # fraction of the layer's life with self-attention injection
    mapper: Mapper
    start: float = 0.0  # sampling progress at which the layer joins (r_total: late)

    def life(self, progress: float) -> float:
        """Progress counted from the step the layer joins, as the authors' per-controller step
        counter does: r_total's windows cover the first part of *its* steps."""
        return max(0.0, progress - self.start) / (1.0 - self.start) if self.start < 1 else 0.0


@dataclass
class KeywordPlan:
    """What keyword selection and KSSA need to know about r_total."""

    layer: int
    steps: list[float]
    count: int
    tags: dict[int, list[int | None]]  # per image: region index of each context position
    tokens: dict[int, list[str]]  # per image: BPE string of each context position
    ids: dict[int, list[int]]
    special: set[int]
    user: dict[int, list[str]]  # region -> user keywords
    select: bool = True
    kssa_factor: float = 1.0
    kssa_blocks: tuple[str, ...] = ()


@dataclass
class _CallPlan:
    cross: list[tuple[int, int, float, Mapper]] = field(default_factory=list)
    self_: list[tuple[int, int]] = field(default_factory=list)
    capture: list[tuple[int, int]] = field(default_factory=list)  # (row, image)
    kssa_rows: dict[int, list[int]] = field(default_factory=dict)  # image -> rows
    kssa_mark: dict[int, int] = field(default_factory=dict)  # image -> cond row

    def empty(self) -> bool:
        return not (self.cross or self.self_ or self.capture or self.kssa_rows)


def _levels(height: int, width: int, tokens: int) -> int:
    """How many times the UNet halved a (height, width) crop to get ``tokens`` positions."""
    level = 0
    while height * width > tokens and level < 8:
        height, width, level = math.ceil(height / 2), math.ceil(width / 2), level + 1
    return level


def _size_at(height: int, width: int, level: int) -> tuple[int, int]:
    for _ in range(level):
        height, width = math.ceil(height / 2), math.ceil(width / 2)
    return height, width


class EditController:
    def __init__(self, layout: Layout, plans: dict[int, PairPlan], self_tokens: int | None = None,
                 keywords: KeywordPlan | None = None):
        self.layout = layout
        self.plans = plans
        # self-attention edits act on maps of at most this many query pixels (default: 16x16 at 512^2)
        self.self_tokens = self_tokens or layout.latent_h * layout.latent_w // 16
        self.kw = keywords
        self.progress: float | None = None
        self.batch: BatchLayout | None = None
        self._plan: _CallPlan | None = None
        self._plans: dict = {}
        self.selected: dict[int, dict[int, list[Keyword]]] = {}  # region -> image -> keywords
        self.selections = 0
        self._done_steps: set[float] = set()
        self._maps: dict[int, torch.Tensor] = {}
        self._map_count: dict[int, int] = {}
        self._map_size: tuple[int, int] | None = None
        self._marks: dict[tuple, torch.Tensor] = {}
        self._marks_prev: dict[tuple, torch.Tensor] = {}
        self._kssa_positions: dict[int, list[int]] = {}
        if keywords is not None:
            self._update_kssa_positions()

    # -- driven by the fusion step -----------------------------------------------------------

    def set_progress(self, progress: float) -> None:
        if progress == self.progress:
            return
        if self.progress is not None:
            self._end_step(self.progress)
        self.progress = progress

    def finish(self) -> None:
        if self.progress is not None:
            self._end_step(self.progress)
            self.progress = None

    @contextlib.contextmanager
    def call(self, batch: BatchLayout) -> Iterator[None]:
        self.batch = batch
        key = (batch.rows, self.progress)
        if key not in self._plans:
            self._plans = {key: self._call_plan(batch)}  # one step's calls repeat, older do not
        self._plan = self._plans[key]
        try:
            yield
        finally:
            self.batch, self._plan = None, None

    # -- the patcher's hook --------------------------------------------------------------------

    def wants(self, site: Site, x: torch.Tensor, context: torch.Tensor | None) -> bool:
        plan = self._plan
        if plan is None or plan.empty():
            return False
        level = self._level(x.shape[1])
        if site.kind == "cross":
            return bool(plan.cross or (plan.capture and level == KEYWORD_LEVEL)
                        or (plan.kssa_mark and site.block in self.kw.kssa_blocks))
        return bool((plan.self_ and x.shape[1] <= self.self_tokens) or self._kssa_marks_for(site, x.shape[1]))

    def attend(self, site: Site, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        plan = self._plan
        q, k, v = project(site, x, context)
        level = self._level(x.shape[1])
        if site.kind == "self":
            marks = self._kssa_marks_for(site, x.shape[1])
            if marks:
                k = k.clone()
                for image, rows in plan.kssa_rows.items():
                    if image in marks:
                        for row in rows:
                            k[row, :, marks[image]] *= self.kw.kssa_factor
            out = sdpa(site, q, k, v)
            if x.shape[1] <= self.self_tokens:
                for s, t in plan.self_:
                    # source and target in one call, so identical rows stay bit-identical
                    out[[s, t]] = sdpa(site, q[[s, s]], k[[s, s]], v[[s, t]])
            return merge(site, out)

        out = sdpa(site, q, k, v)
        capture = plan.capture if level == KEYWORD_LEVEL else []
        rows = sorted({r for s, t, _, _ in plan.cross for r in (s, t)} | {r for r, _ in capture})
        if rows:
            probs = dict(zip(rows, probabilities(site, q[rows], k[rows])))
            for s, t, weight, mapper in plan.cross:
                edited = probs[t] + weight * (mapper.apply(probs[s], probs[t]) - probs[t])
                out[[s, t]] = (torch.stack([probs[s], edited]) @ v[[s, t]].float()).to(out.dtype)
            for row, image in capture:
                self._capture(image, probs[row].mean(0), x.shape[1])
        if plan.kssa_mark and site.block in self.kw.kssa_blocks:
            self._mark(site, q, k, plan.kssa_mark)
        return merge(site, out)

    # -- planning ----------------------------------------------------------------------------------

    def _call_plan(self, batch: BatchLayout) -> _CallPlan:
        p = self.progress or 0.0
        index = {(r.layer, r.image, r.branch): i for i, r in enumerate(batch.rows)}
        plan = _CallPlan()
        for layer, pp in self.plans.items():
            s, t = index.get((layer, SOURCE, Branch.COND)), index.get((layer, TARGET, Branch.COND))
            if s is None or t is None:
                continue
            life = pp.life(p) + 1e-9  # a window's end is exclusive, whatever the rounding of progress
            if life < pp.cross:
                plan.cross.append((s, t, 1.0 - life / pp.cross, pp.mapper))
            if life < pp.self_:
                plan.self_.append((s, t))
        kw = self.kw
        if kw is not None:
            for image in (SOURCE, TARGET):
                cond = index.get((kw.layer, image, Branch.COND))
                if cond is None:
                    continue
                if kw.select and any(p <= step + 1e-9 and step not in self._done_steps for step in kw.steps):
                    plan.capture.append((cond, image))
                if kw.kssa_factor != 1.0 and kw.kssa_blocks and self._kssa_positions.get(image):
                    plan.kssa_mark[image] = cond
                    plan.kssa_rows[image] = [i for i, r in enumerate(batch.rows)
                                             if r.layer == kw.layer and r.image == image]
        return plan

    def _level(self, tokens: int) -> int:
        h, w = self.batch.rows[0].window.size
        return _levels(h, w, tokens)

    # -- keyword capture and selection ---------------------------------------------------------

    def _capture(self, image: int, maps: torch.Tensor, tokens: int) -> None:
        h, w = self.batch.rows[0].window.size
        self._map_size = _size_at(h, w, KEYWORD_LEVEL)
        maps = maps.detach().float()
        if image in self._maps:
            self._maps[image] += maps
            self._map_count[image] += 1
        else:
            self._maps[image], self._map_count[image] = maps.clone(), 1

    def _end_step(self, progress: float) -> None:
        self._marks_prev, self._marks = self._marks, {}
        kw = self.kw
        if kw is None or not kw.select:
            return
        due = [s for s in kw.steps if progress >= s - 1e-9 and s not in self._done_steps]
        if not due:
            return
        self._done_steps.update(due)
        if not self._maps:
            return
        hh, ww = self._map_size
        for image, total in self._maps.items():
            maps = (total / self._map_count[image]).T.reshape(-1, hh, ww)  # (positions, h, w)
            entropies = entropy_bits(maps).tolist()
            for region in {t for t in kw.tags[image] if t is not None}:
                self.selected.setdefault(region, {})[image] = select(
                    entropies, kw.ids[image], kw.tokens[image], kw.tags[image], region, kw.count, kw.special)
        self.selections += 1
        self._maps, self._map_count = {}, {}
        self._update_kssa_positions()

    def keywords(self, region: int, image: int | None = None) -> list[str]:
        """The user's keywords of ``region`` followed by the selected ones (in ``image``, or in
        either image), without repeats."""
        words = list(self.kw.user.get(region, [])) if self.kw else []
        for found_in, found in self.selected.get(region, {}).items():
            if image is None or found_in == image:
                words += [k.word for k in found if k.word not in words]
        return words

    def _update_kssa_positions(self) -> None:
        kw = self.kw
        for image in (SOURCE, TARGET):
            if image not in kw.tags:
                continue
            regions = {t for t in kw.tags[image] if t is not None}
            words = [w for r in regions for w in self.keywords(r)]
            self._kssa_positions[image] = positions_of(words, kw.tokens[image], kw.tags[image], regions)

    # -- KSSA ------------------------------------------------------------------------------------

    def _mark(self, site: Site, q: torch.Tensor, k: torch.Tensor, rows: dict[int, int]) -> None:
        for image, row in rows.items():
            positions = self._kssa_positions.get(image)
            if not positions:
                continue
            logits = (q[row].float() @ k[row, :, positions].float().transpose(-1, -2)) * site.scale
            score = logits.sum(dim=(0, 2))  # over heads and keyword tokens: (pixels,)
            top = torch.topk(score, score.shape[0] // 2).indices
            self._marks[(site.block, q.shape[2], image)] = top

    def _kssa_marks_for(self, site: Site, tokens: int) -> dict[int, torch.Tensor]:
        plan = self._plan
        if not plan.kssa_rows or site.block not in self.kw.kssa_blocks:
            return {}
        marks = {}
        for image in plan.kssa_rows:
            key = (site.block, tokens, image)
            found = self._marks.get(key, self._marks_prev.get(key))
            if found is not None:
                marks[image] = found
        return marks


def build_controller(spec: EditSpec, layout: Layout, cond: Conditioning, model: TextModel,
                     method: str) -> tuple[EditController, list[str]]:
    """The controller for ``method`` ('p2p' or 'mrgd') and the warnings it raised."""
    o = spec.options
    warnings: list[str] = []
    bos, eos = model.bos_id, model.eos_id
    special = {bos, eos, model.pad_id}
    plans: dict[int, PairPlan] = {}
    for layer in layout.layers:
        if not all(layer.present):
            continue
        if layer.kind == LayerKind.BACKGROUND:
            cross, self_ = o.inject_background
        elif layer.kind == LayerKind.TOTAL:
            cross, self_ = o.inject_total
        elif layer.region_kind == RegionKind.INHERENT:
            cross, self_ = o.inject_inherent
        else:
            cross, self_ = o.inject_edit
        if cross <= 0 and self_ <= 0:
            continue
        s_ids = cond.ids[(layer.index, SOURCE, Branch.COND)]
        t_ids = cond.ids[(layer.index, TARGET, Branch.COND)]
        mapper = make_mapper(s_ids, t_ids, bos, special, prefer_swap=layer.kind != LayerKind.TOTAL)
        if layer.region_kind == RegionKind.ATTRIBUTE and mapper.mode != "swap":
            warnings.append(f"regions[{layer.region}]: source and target prompts have different token "
                            "counts; word swap fell back to refine alignment")
        start = layout.total_start if layer.kind == LayerKind.TOTAL else 0.0
        plans[layer.index] = PairPlan(layer.index, cross, self_, mapper, start)

    kw_plan = None
    total = layout.total
    if MethodPlan.of(method, o, bool(spec.regions)).keywords and total is not None:
        separator = content_ids(model, SEPARATOR)
        tags, tokens, ids = {}, {}, {}
        for image in (SOURCE, TARGET):
            ids[image] = cond.ids[(total.index, image, Branch.COND)]
            parts = [(content_ids(model, text), tag) for text, tag in total_parts(spec, image)]
            tags[image] = tag_positions(ids[image], parts, separator, special)
            tokens[image] = model.id_to_token(ids[image])
        kw_plan = KeywordPlan(
            layer=total.index, steps=sorted(o.keyword_steps), count=o.keyword_count, tags=tags,
            tokens=tokens, ids=ids, special=special,
            user={i: list(r.keywords) for i, r in enumerate(spec.regions)},
            select=o.keyword_selection and o.keyword_count > 0 and bool(o.keyword_steps),
            kssa_factor=o.kssa_factor if o.kssa else 1.0, kssa_blocks=tuple(o.kssa_blocks))
    self_tokens = max(1, layout.latent_h * layout.latent_w // o.self_replace_factor**2)
    return EditController(layout, plans, self_tokens, keywords=kw_plan), warnings
