"""run_edit: the standalone edit, from a spec to the source and target images."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from .attention.controller import EditController, build_controller
from .attention.patcher import patched
from .conditioning import encode_layers, layer_prompts
from .fusion import RegionFusion
from .guidance.guide import Guidance
from .layout import Branch, Layout
from .sampling import DDIMSampler, apply_cfg
from .spec import EditSpec, SpecError, load_spec

METHODS = ("multidiffusion", "p2p", "mrgd")
SAMPLERS = ("ddim",)


@dataclass
class EditResult:
    source: Image.Image
    target: Image.Image
    spec: EditSpec  # resolved: the seed that was used
    info: dict[str, Any] = field(default_factory=dict)
    latents: torch.Tensor | None = None  # (2, C, h, w) final latents of source and target


def check_method(method: str) -> None:
    if method not in METHODS:
        raise SpecError("method", f"unknown method {method!r}; choose one of {', '.join(METHODS)}")


def check_sampler(spec: EditSpec) -> None:
    if spec.sampler.lower() not in SAMPLERS:
        raise SpecError("sampler", f"{spec.sampler!r} is not supported by the standalone runner "
                                   f"(supported: {', '.join(s.upper() for s in SAMPLERS)})")


def _progress_bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc="mrgd", unit="step", leave=False)


@dataclass
class _Run:
    spec: EditSpec
    layout: Layout
    fusion: RegionFusion
    controller: EditController | None
    guidance: Guidance | None
    warnings: list[str]
    encode_s: float
    inversion: Any = None  # an Inversion: start noise and tuned negatives
    base_contexts: dict | None = None


def _prepare(spec, pipeline, method: str, max_batch: int | None, inversion=None) -> _Run:
    check_method(method)
    spec = load_spec(spec).resolved()
    check_sampler(spec)
    total = method == "mrgd" and spec.options.total_region
    layout = Layout.from_spec(spec, pipeline.latent_multiple, total_region=total)
    if inversion is not None:
        inversion.check(spec, layout, pipeline.model_hash(), method)
    t0 = time.perf_counter()
    cond = encode_layers(layer_prompts(spec, layout), pipeline)
    controller, warnings = (build_controller(spec, layout, cond, pipeline, method)
                            if method in ("p2p", "mrgd") else (None, []))
    encode_s = time.perf_counter() - t0
    fusion = RegionFusion(layout, cond.contexts, pipeline.denoise, max_batch=max_batch, controller=controller)
    guidance = None
    if method == "mrgd" and spec.options.guidance and spec.regions:
        def keywords(region: int, image: int) -> list[str]:
            found = controller.keywords(region, image) if controller.kw else []
            return found or list(spec.regions[region].keywords)

        guidance = Guidance(spec, layout, lambda z: pipeline.decode_tensor(z, clamp=False),
                            pipeline.get_segmenter(), keywords, pipeline.vae_scale)
    return _Run(spec, layout, fusion, controller, guidance, warnings, encode_s, inversion, dict(cond.contexts))


def _sample(run: _Run, pipeline, progress: bool, until: float | None = None) -> torch.Tensor:
    """DDIM over the fused pair; ``until`` stops after the step at that fraction of sampling."""
    spec = run.spec
    sampler = DDIMSampler(pipeline.alphas_cumprod, spec.steps)
    branches = (Branch.COND, Branch.UNCOND) if spec.cfg_scale != 1.0 else (Branch.COND,)
    if run.inversion is not None:
        x = run.inversion.latent.to(pipeline.device, torch.float32).repeat(2, 1, 1, 1)
    else:
        x = pipeline.initial_noise(spec.seed, spec.height, spec.width).repeat(2, 1, 1, 1)
    hooks = patched(pipeline.unet, run.controller) if run.controller else contextlib.nullcontext()
    with hooks, _progress_bar(spec.steps, progress) as bar:
        for i, t in enumerate(sampler.timesteps):
            if run.inversion is not None:
                run.fusion.contexts = run.inversion.contexts(i, run.base_contexts, run.layout)
            out = run.fusion(x, t, i / spec.steps, branches=branches)
            eps = apply_cfg(out[Branch.COND], out.get(Branch.UNCOND), spec.cfg_scale)
            if run.guidance is not None and run.guidance.due(i):
                eps = run.guidance.correct(x, eps, i, i / spec.steps, sampler.alphas[i], "eps")
            x = sampler.step(x, eps, i)
            bar.update(1)
            if until is not None and i / spec.steps >= until - 1e-9:
                break
    if run.controller:
        run.controller.finish()
    return x


def _keyword_info(run: _Run) -> list[dict]:
    ctl = run.controller
    out = []
    for i, region in enumerate(run.spec.regions):
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
    run = _prepare(spec, pipeline, method, max_batch, inversion)
    t0 = time.perf_counter()
    x = _sample(run, pipeline, progress)
    sampling_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    source, target = pipeline.decode(x)
    decode_s = time.perf_counter() - t0

    branches = (Branch.COND, Branch.UNCOND) if run.spec.cfg_scale != 1.0 else (Branch.COND,)
    calls = run.fusion.plan(0.0, branches=branches)
    info: dict[str, Any] = {
        "method": method,
        "model": pipeline.name,
        "seed": run.spec.seed,
        "kinds": [k.value for k in run.spec.kinds],
        "layout": run.layout.describe(),
        "unet_calls_per_step": len(calls),
        "unet_rows_per_step": sum(len(c) for c in calls),
        "timings": {
            "encode_s": run.encode_s, "sampling_s": sampling_s, "decode_s": decode_s,
            "per_step_s": sampling_s / run.spec.steps, "total_s": time.perf_counter() - started,
        },
        "warnings": list(run.warnings),
    }
    if method == "mrgd":
        info["keywords"] = _keyword_info(run)
        info["guidance"] = run.guidance.summary() if run.guidance else {"enabled": False}
        if run.layout.total is None and run.spec.regions:
            info["warnings"].append("total_region is off: keywords are the user's only, KSSA is off")
    return EditResult(source, target, run.spec, info, latents=x)


@torch.no_grad()
def select_keywords(spec, pipeline, progress: bool = True) -> list[dict]:
    """Run mrgd sampling only as far as keyword selection needs; per region, its keywords."""
    run = _prepare(spec, pipeline, "mrgd", None)
    steps = run.spec.options.keyword_steps
    _sample(run, pipeline, progress, until=max(steps) if steps else 0.0)
    return _keyword_info(run)
