"""Attention control of one edit: the hooks that act on attention, composed behind the
patcher's ``wants``/``attend`` protocol with one fused attention call per layer.

The fusion step tells the controller the sampling progress and, for every UNet call, the batch
layout; each attention layer then asks whether any hook has work there:

- :class:`~lib_mrgd.attention.pair_edit.PairEdit`: P2P cross- and self-attention edits (Eq. 5);
- :class:`~lib_mrgd.attention.keyword_capture.KeywordCapture`: r_total's maps for entropy
  keyword selection;
- :class:`~lib_mrgd.attention.kssa.Kssa`: keyword-guided self-attention in r_total's rows.

Nothing here materialises a self-attention map: the self edit and KSSA are exact rewrites that
keep the fused kernel.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Iterator

import torch

from ..conditioning import SEPARATOR, Conditioning, TextModel, content_ids, total_parts
from ..keywords import Keyword, tag_positions
from ..layout import SOURCE, TARGET, BatchLayout, Branch, LayerKind, Layout
from ..method import MethodPlan
from ..spec import EditSpec, RegionKind
from .keyword_capture import KEYWORD_LEVEL, KeywordCapture, KeywordPlan
from .kssa import Kssa
from .mappers import Mapper, make_mapper
from .pair_edit import PairEdit, PairPlan
from .patcher import Site, merge, probabilities, project, sdpa

__all__ = ["EditController", "KeywordPlan", "PairPlan", "build_controller"]


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
        # self-attention edits act on maps of at most this many query pixels (default: 16x16 at 512^2)
        self.pairs = PairEdit(plans, self_tokens or layout.latent_h * layout.latent_w // 16)
        self.kw = keywords
        self.capture = KeywordCapture(keywords) if keywords is not None else None
        self.kssa = Kssa(keywords, self.keywords) if keywords is not None else None
        self.progress: float | None = None
        self.batch: BatchLayout | None = None
        self._plan: _CallPlan | None = None
        self._plans: dict = {}

    @property
    def plans(self) -> dict[int, PairPlan]:
        return self.pairs.plans

    @property
    def self_tokens(self) -> int:
        return self.pairs.self_tokens

    @property
    def selected(self) -> dict[int, dict[int, list[Keyword]]]:
        return self.capture.selected if self.capture is not None else {}

    def keywords(self, region: int, image: int | None = None) -> list[str]:
        """The user's keywords of ``region`` followed by the selected ones (in ``image``, or in
        either image), without repeats."""
        return self.capture.keywords(region, image) if self.capture is not None else []

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

    def _end_step(self, progress: float) -> None:
        if self.kssa is not None:
            self.kssa.end_step()
        if self.capture is not None and self.capture.end_step(progress):
            self.kssa.update_positions()

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

    def _call_plan(self, batch: BatchLayout) -> _CallPlan:
        p = self.progress or 0.0
        index = {(r.layer, r.image, r.branch): i for i, r in enumerate(batch.rows)}
        plan = _CallPlan()
        plan.cross, plan.self_ = self.pairs.plan(index, p)
        if self.capture is not None:
            plan.capture = self.capture.plan(index, p)
            plan.kssa_mark, plan.kssa_rows = self.kssa.plan(batch, index)
        return plan

    def _level(self, tokens: int) -> int:
        h, w = self.batch.rows[0].window.size
        return _levels(h, w, tokens)

    # -- the patcher's hook --------------------------------------------------------------------

    def _marks(self, site: Site, tokens: int) -> dict[int, torch.Tensor]:
        return self.kssa.marks_for(site, tokens, self._plan.kssa_rows) if self.kssa is not None else {}

    def wants(self, site: Site, x: torch.Tensor, context: torch.Tensor | None) -> bool:
        plan = self._plan
        if plan is None or plan.empty():
            return False
        tokens = x.shape[1]
        if site.kind == "cross":
            return bool(plan.cross or (plan.capture and self._level(tokens) == KEYWORD_LEVEL)
                        or (plan.kssa_mark and self.kssa.in_blocks(site)))
        return bool((plan.self_ and self.pairs.small(tokens)) or self._marks(site, tokens))

    def attend(self, site: Site, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        plan = self._plan
        q, k, v = project(site, x, context)
        tokens = x.shape[1]
        if site.kind == "self":
            marks = self._marks(site, tokens)
            if marks:
                k = self.kssa.scale_keys(k, marks, plan.kssa_rows)
            out = sdpa(site, q, k, v)
            if self.pairs.small(tokens):
                self.pairs.edit_self(site, out, q, k, v, plan.self_)
            return merge(site, out)

        out = sdpa(site, q, k, v)
        capture = plan.capture if self._level(tokens) == KEYWORD_LEVEL else []
        rows = sorted({r for s, t, _, _ in plan.cross for r in (s, t)} | {r for r, _ in capture})
        if rows:
            probs = dict(zip(rows, probabilities(site, q[rows], k[rows])))
            self.pairs.edit_cross(out, probs, v, plan.cross)
            if capture:
                size = _size_at(*self.batch.rows[0].window.size, KEYWORD_LEVEL)
                for row, image in capture:
                    self.capture.capture(image, probs[row].mean(0), size)
        if plan.kssa_mark and self.kssa.in_blocks(site):
            self.kssa.mark(site, q, k, plan.kssa_mark)
        return merge(site, out)


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
