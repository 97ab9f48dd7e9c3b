"""run_edit: the standalone edit, from a spec to the source and target images."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from .conditioning import encode_layers, layer_prompts
from .fusion import RegionFusion
from .layout import Branch, Layout
from .sampling import DDIMSampler, apply_cfg
from .spec import EditSpec, SpecError, load_spec

METHODS = ("multidiffusion", "p2p", "mrgd")
SAMPLERS = ("ddim",)
_NOT_YET = {
    "p2p": "attention control between source and target",
    "mrgd": "attention control, keyword selection, KSSA and guidance",
}


class MethodNotAvailable(SpecError):
    """A method whose parts have not landed in this release."""


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
    if method in _NOT_YET:
        raise MethodNotAvailable(
            "method", f"{method!r} is not available yet ({_NOT_YET[method]} has not landed); "
                      "use 'multidiffusion'")


def check_sampler(spec: EditSpec) -> None:
    if spec.sampler.lower() not in SAMPLERS:
        raise SpecError("sampler", f"{spec.sampler!r} is not supported by the standalone runner "
                                   f"(supported: {', '.join(s.upper() for s in SAMPLERS)})")


def _progress_bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc="mrgd", unit="step", leave=False)


@torch.no_grad()
def run_edit(spec, pipeline, method: str = "mrgd", progress: bool = True,
             max_batch: int | None = None) -> EditResult:
    """Generate the source and the edited target image of ``spec`` with ``pipeline``.

    ``spec`` is anything :func:`load_spec` takes. ``max_batch`` caps the rows of one UNet call
    (memory); results do not depend on it.
    """
    started = time.perf_counter()
    check_method(method)
    spec = load_spec(spec).resolved()
    check_sampler(spec)
    layout = Layout.from_spec(spec, pipeline.latent_multiple, total_region=False)

    t0 = time.perf_counter()
    contexts = encode_layers(layer_prompts(spec, layout), pipeline.encode_prompts)
    encode_s = time.perf_counter() - t0

    fusion = RegionFusion(layout, contexts, pipeline.denoise, max_batch=max_batch)
    sampler = DDIMSampler(pipeline.alphas_cumprod, spec.steps)
    use_uncond = spec.cfg_scale != 1.0
    branches = (Branch.COND, Branch.UNCOND) if use_uncond else (Branch.COND,)
    x = pipeline.initial_noise(spec.seed, spec.height, spec.width).repeat(2, 1, 1, 1)

    t0 = time.perf_counter()
    with _progress_bar(spec.steps, progress) as bar:
        for i, t in enumerate(sampler.timesteps):
            out = fusion(x, t, i / spec.steps, branches=branches)
            eps = apply_cfg(out[Branch.COND], out.get(Branch.UNCOND), spec.cfg_scale)
            x = sampler.step(x, eps, i)
            bar.update(1)
    sampling_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    source, target = pipeline.decode(x)
    decode_s = time.perf_counter() - t0

    info = {
        "method": method,
        "model": pipeline.name,
        "seed": spec.seed,
        "kinds": [k.value for k in spec.kinds],
        "unet_calls_per_step": len(fusion.plan(0.0, branches=branches)),
        "unet_rows_per_step": sum(len(c) for c in fusion.plan(0.0, branches=branches)),
        "timings": {
            "encode_s": encode_s, "sampling_s": sampling_s, "decode_s": decode_s,
            "per_step_s": sampling_s / spec.steps, "total_s": time.perf_counter() - started,
        },
        "warnings": [],
    }
    return EditResult(source, target, spec, info, latents=x)
