"""run_edit: the standalone edit, from a spec to the source and target images."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from .attention.patcher import patched
from .engine import Edit, EditDenoiser, build_edit
from .method import check_method
from .layout import Branch
from .progress import progress_bar
from .sampling import DDIMSampler, sample
from .spec import EditSpec, SpecError, load_spec

SAMPLERS = ("ddim",)


@dataclass
class EditResult:
    source: Image.Image
    target: Image.Image
    spec: EditSpec  # resolved: the seed that was used
    info: dict[str, Any] = field(default_factory=dict)
    latents: torch.Tensor | None = None  # (2, C, h, w) final latents of source and target


def check_sampler(spec: EditSpec) -> None:
    if spec.sampler.lower() not in SAMPLERS:
        raise SpecError("sampler", f"{spec.sampler!r} is not supported by the standalone runner "
                                   f"(supported: {', '.join(s.upper() for s in SAMPLERS)})")


def _prepare(spec, pipeline, method: str, max_batch: int | None, inversion=None) -> Edit:
    check_method(method)
    spec = load_spec(spec).resolved()
    check_sampler(spec)
    edit = build_edit(spec, method, pipeline, max_batch=max_batch)
    if inversion is not None:
        inversion.check(spec, edit.layout, pipeline.model_hash(), method)
    return edit


def _sample(edit: Edit, pipeline, progress: bool, inversion=None, until: float | None = None) -> torch.Tensor:
    """DDIM over the fused pair; ``until`` stops after the step at that fraction of sampling."""
    spec = edit.spec
    grid = DDIMSampler(pipeline.alphas_cumprod, spec.steps)
    if inversion is not None:
        x = inversion.latent.to(pipeline.device, torch.float32).repeat(2, 1, 1, 1)
        contexts_at = lambda i: inversion.contexts(i, edit.contexts, edit.layout)  # noqa: E731
    else:
        x = pipeline.initial_noise(spec.seed, spec.height, spec.width).repeat(2, 1, 1, 1)
        contexts_at = None
    denoiser = EditDenoiser(edit, grid, contexts_at=contexts_at)
    hooks = patched(pipeline.unet, edit.controller) if edit.controller else contextlib.nullcontext()
    with hooks, progress_bar(spec.steps, progress) as bar:
        def step_done(i: int, _x) -> bool:
            bar.update(1)
            return until is not None and i / spec.steps >= until - 1e-9

        x = sample(denoiser, x, grid, step_done)
    if edit.controller:
        edit.controller.finish()
    return x


def _keyword_info(edit: Edit) -> list[dict]:
    ctl = edit.controller
    out = []
    for i, region in enumerate(edit.spec.regions):
        found = ctl.selected.get(i, {}) if ctl else {}
        out.append({
            "kind": region.kind.value,
            "user": list(region.keywords),
            "source": [k.to_json() for k in found.get(0, [])],
            "target": [k.to_json() for k in found.get(1, [])],
            "keywords": ctl.keywords(i) if ctl and ctl.kw else list(region.keywords),
        })
    return out


@torch.no_grad()
def run_edit(spec, pipeline, method: str = "mrgd", progress: bool = True,
             max_batch: int | None = None, inversion=None) -> EditResult:
    """Generate the source and the edited target image of ``spec`` with ``pipeline``.

    ``spec`` is anything :func:`load_spec` takes. ``max_batch`` caps the rows of one UNet call
    (memory); results do not depend on it. ``inversion`` (from :func:`lib_mrgd.invert`) makes a
    real photo the source: sampling starts from its noise with its tuned negative embeddings.
    """
    started = time.perf_counter()
    edit = _prepare(spec, pipeline, method, max_batch, inversion)
    t0 = time.perf_counter()
    x = _sample(edit, pipeline, progress, inversion)
    sampling_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    source, target = pipeline.decode(x)
    decode_s = time.perf_counter() - t0

    branches = (Branch.COND, Branch.UNCOND) if edit.spec.cfg_scale != 1.0 else (Branch.COND,)
    calls = edit.fusion.plan(0.0, branches=branches)
    info: dict[str, Any] = {
        "method": method,
        "model": pipeline.name,
        "seed": edit.spec.seed,
        "kinds": [k.value for k in edit.spec.kinds],
        "layout": edit.layout.describe(),
        "unet_calls_per_step": len(calls),
        "unet_rows_per_step": sum(len(c) for c in calls),
        "timings": {
            "encode_s": edit.encode_s, "sampling_s": sampling_s, "decode_s": decode_s,
            "per_step_s": sampling_s / edit.spec.steps, "total_s": time.perf_counter() - started,
        },
        "warnings": list(edit.warnings),
    }
    if edit.plan.report:
        info["keywords"] = _keyword_info(edit)
        info["guidance"] = edit.guidance.summary() if edit.guidance else {"enabled": False}
        if edit.layout.total is None and edit.spec.regions:
            info["warnings"].append("total_region is off: keywords are the user's only, KSSA is off")
    return EditResult(source, target, edit.spec, info, latents=x)


@torch.no_grad()
def select_keywords(spec, pipeline, progress: bool = True) -> list[dict]:
    """Run mrgd sampling only as far as keyword selection needs; per region, its keywords."""
    edit = _prepare(spec, pipeline, "mrgd", None)
    steps = edit.spec.options.keyword_steps
    _sample(edit, pipeline, progress, until=max(steps) if steps else 0.0)
    return _keyword_info(edit)
