"""Multi-region null-text inversion (Sec. 3.3 and Alg. 1, lines 2-11 of the paper).

A real photo becomes the source image of an edit:

1. the photo is encoded by the VAE, then walked back to noise by true DDIM inversion (eta 0, CFG
   1) on the timestep grid sampling will use; every layer (r_bg, each box's crop, r_total when its
   window is on) predicts eps for its own crop with its own source prompt, fused as in sampling.
   Each step is solved for the latent whose DDIM step lands on the previous one, by a few
   fixed-point refinements of the usual first-order guess (``refine``), which makes the round trip
   far tighter for a few extra UNet calls;
2. walking forward again at the spec's CFG scale, each layer's unconditional embedding is tuned
   per step with Adam (lr 1e-2 * (1 - i/100), at most 10 inner steps, stop below
   1e-5 + i * 2e-5) so the guided step lands on the inversion's latent.

The tuned embeddings replace each layer's negative conditioning during the edit, for the source
and for the target rows of the same layer. An :class:`Inversion` saves to one safetensors file
with its metadata, so one inversion serves many edits of the same source.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from PIL import Image

from .conditioning import Key
from .engine import EditDenoiser, build_edit
from .method import check_method
from .errors import InversionError
from .fusion import RegionFusion
from .images import prepare
from .layout import SOURCE, TARGET, Branch, Layer, LayerKind, Layout
from .progress import progress_bar
from .sampling import DDIMSampler, apply_cfg, sample
from .spec import EditSpec, load_spec

FORMAT = "mrgd-inversion/1"
INNER_STEPS = 10
REFINE = 3
EARLY_STOP, EARLY_STOP_PER_STEP = 1e-5, 2e-5


def layer_key(layer: Layer) -> str:
    """Names that survive adding a region at the end of the spec (indices of layers would not)."""
    if layer.kind == LayerKind.BACKGROUND:
        return "bg"
    if layer.kind == LayerKind.TOTAL:
        return "total"
    return f"region{layer.region}"


def source_fingerprint(spec: EditSpec, layout: Layout) -> str:
    """What the inversion depends on: size, steps, CFG and the source side of every layer."""
    data = {
        "size": [spec.width, spec.height], "steps": spec.steps, "cfg_scale": spec.cfg_scale,
        "background": spec.background, "negative": spec.negative,
        "regions": [[i, r.box, r.source, r.feather, r.negative] for i, r in enumerate(spec.regions) if r.source],
        "total_start": layout.total_start,
    }
    for key in ("common", "common_negative"):  # only when set, so inversions saved before them still fit
        if getattr(spec, key):
            data[key] = getattr(spec, key)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Inversion:
    latent: torch.Tensor  # z_T, (1, C, h, w)
    null_texts: list[dict[str, torch.Tensor]]  # per sampling step: layer key -> (tokens, dim)
    metadata: dict[str, Any]
    report: dict[str, Any] = field(default_factory=dict)

    # -- reuse ----------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        from safetensors.torch import save_file

        tensors = {"latent": self.latent.detach().float().cpu().contiguous()}
        for i, step in enumerate(self.null_texts):
            for key, value in step.items():
                tensors[f"null.{i}.{key}"] = value.detach().float().cpu().contiguous()
        meta = {"format": FORMAT, **{k: json.dumps(v) for k, v in self.metadata.items()}}
        save_file(tensors, str(path), metadata=meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Inversion":
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise InversionError(f"file not found: {path}")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as exc:
            raise InversionError(f"{path} is not a readable inversion file ({type(exc).__name__})") from exc
        if meta.get("format") != FORMAT or "latent" not in tensors:
            raise InversionError(f"{path} is not an mrgd inversion file")
        try:
            metadata = {k: json.loads(v) for k, v in meta.items() if k != "format"}
            steps = int(metadata["steps"])
        except (ValueError, KeyError) as exc:
            raise InversionError(f"{path} has damaged metadata") from exc
        null_texts: list[dict[str, torch.Tensor]] = [{} for _ in range(steps)]
        for name, value in tensors.items():
            if name.startswith("null."):
                _, i, key = name.split(".", 2)
                if not i.isdigit() or int(i) >= steps:
                    raise InversionError(f"{path} has damaged contents ({name})")
                null_texts[int(i)][key] = value
        return cls(tensors["latent"], null_texts, metadata)

    def check(self, spec: EditSpec, layout: Layout, model_hash: str, method: str) -> None:
        """Refuse to serve an edit this inversion was not made for."""
        m = self.metadata
        if m.get("model_hash") != model_hash:
            raise InversionError(f"made with another model ({m.get('model_hash')}, this one is {model_hash}); invert again")
        if m.get("method") != method:
            raise InversionError(f"made for method {m.get('method')!r}, not {method!r}; invert again with this method")
        if m.get("spec_hash") != source_fingerprint(spec, layout):
            raise InversionError(
                "made for another source side (size, steps, CFG, background, negative, the boxes and source "
                "prompts, or when r_total joins); only target prompts and added regions may change: invert again")

    # -- use in an edit --------------------------------------------------------------------------

    def contexts(self, step: int, base: dict[Key, torch.Tensor], layout: Layout) -> dict[Key, torch.Tensor]:
        return with_null_texts(self.null_texts[step], base, layout)


def with_null_texts(tuned: dict[str, torch.Tensor], base: dict[Key, torch.Tensor], layout: Layout) -> dict[Key, torch.Tensor]:
    """``base`` with one step's tuned unconditional embeddings for every layer they exist for
    (source and target rows alike, so the pair still shares each UNet call)."""
    out = dict(base)
    for layer in layout.layers:
        value = tuned.get(layer_key(layer))
        if value is None:
            continue
        for image in (SOURCE, TARGET):
            key = (layer.index, image, Branch.UNCOND)
            if key in out:
                out[key] = value.to(out[key])
    return out


def _fused_source(fusion: RegionFusion, x, t, progress, branch: Branch, contexts) -> torch.Tensor:
    return fusion(x, t, progress, images=(SOURCE,), branches=(branch,), contexts=contexts)[branch]


@dataclass
class Tuned:
    """What inverting one latent gives: the start noise and, per step, each layer's embedding."""

    latent: torch.Tensor
    null_texts: list[dict[str, torch.Tensor]]
    inner_steps: list[int]
    final_losses: list[float]
    inversion_s: float
    null_text_s: float


def invert_latent(z0: torch.Tensor, fusion: RegionFusion, grid: DDIMSampler, cfg_scale: float, layout: Layout,
                  progress_of=None, refine: int = REFINE, inner_steps: int = INNER_STEPS,
                  tick: Callable[[str, bool], None] | None = None) -> Tuned:
    """Invert a clean latent on ``grid`` and tune each layer's negative embedding per step.

    ``fusion`` holds the source contexts (tuned ones are passed per call, never stored);
    ``progress_of(i)`` is the sampling progress the host will report at step ``i`` (default
    ``i / len(grid)``), so layers join and leave as they will during the edit.
    ``tick(phase, step_finished)`` is called before the first step, before every further UNet
    evaluation and at the end of every step of each phase ("inversion", "null-text"): a progress
    bar counts the finished steps; a host checks its interrupt flag at every call (an exception
    there stops the inversion within one evaluation).
    """
    tick = tick or (lambda phase, finished: None)
    n = len(grid.timesteps)
    progress_of = progress_of or (lambda i: i / n)
    base = dict(fusion.contexts)
    t0 = time.perf_counter()
    trajectory: list[torch.Tensor] = [z0] * (n + 1)
    x = z0
    tick("inversion", False)
    for i in reversed(range(n)):
        t, p = grid.timesteps[i], progress_of(i)
        guess = grid.invert_step(x, _fused_source(fusion, x, t, p, Branch.COND, base), i)
        for _ in range(refine):
            tick("inversion", False)
            guess = grid.invert_step(x, _fused_source(fusion, guess, t, p, Branch.COND, base), i)
        x = trajectory[i] = guess
        tick("inversion", True)
    inversion_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    current = {k: v.clone() for k, v in base.items() if k[1] == SOURCE and k[2] == Branch.UNCOND}
    null_texts: list[dict[str, torch.Tensor]] = []
    inner_counts, losses = [], []
    x = trajectory[0]
    for i, t in enumerate(grid.timesteps):
        if cfg_scale == 1.0:  # the unconditional branch is never used: nothing to tune
            null_texts.append({})
            inner_counts.append(0)
            continue
        p = progress_of(i)
        active = [l for l in layout.layers if l.index in layout.contributing(SOURCE, p) and l.present[SOURCE]]
        keys = [(l.index, SOURCE, Branch.UNCOND) for l in active]
        eps_cond = _fused_source(fusion, x, t, p, Branch.COND, {**base, **current})
        params = {k: current[k].clone().float().requires_grad_(True) for k in keys}
        opt = torch.optim.Adam(params.values(), lr=1e-2 * (1 - i / 100))
        used, loss_value = 0, float("nan")
        with torch.enable_grad():
            for _ in range(inner_steps):
                tick("null-text", False)
                eps_uncond = _fused_source(fusion, x, t, p, Branch.UNCOND, {**base, **current, **params})
                x_prev = grid.step(x, apply_cfg(eps_cond, eps_uncond, cfg_scale), i)
                loss = torch.nn.functional.mse_loss(x_prev.float(), trajectory[i + 1].float())
                # gradients for the embeddings only: a host's model weights may require grad
                grads = torch.autograd.grad(loss, list(params.values()))
                for param, grad in zip(params.values(), grads):
                    param.grad = grad
                opt.step()
                used, loss_value = used + 1, loss.item()
                if loss_value < EARLY_STOP + i * EARLY_STOP_PER_STEP:
                    break
        for k in keys:
            current[k] = params[k].detach().to(current[k].dtype)
        null_texts.append({layer_key(layout.layers[k[0]]): current[k].clone() for k in keys})
        eps_uncond = _fused_source(fusion, x, t, p, Branch.UNCOND, {**base, **current})
        x = grid.step(x, apply_cfg(eps_cond, eps_uncond, cfg_scale), i)
        inner_counts.append(used)
        losses.append(loss_value)
        tick("null-text", True)
    return Tuned(trajectory[0], null_texts, inner_counts, losses, inversion_s, time.perf_counter() - t0)


@torch.no_grad()
def invert(image, spec, pipeline, method: str = "mrgd", progress: bool = True,
           inner_steps: int = INNER_STEPS, refine: int = REFINE) -> Inversion:
    """Invert ``image`` (a path or a PIL image) for the source side of ``spec``.

    ``refine``: fixed-point iterations per inversion step (0 = plain first-order DDIM inversion).
    At CFG 1 the unconditional branch is never used, so there is nothing to tune.
    """
    started = time.perf_counter()
    check_method(method)
    spec = load_spec(spec).resolved()
    photo, notes = prepare(image, spec.width, spec.height)
    edit = build_edit(spec, method, pipeline, control=False)
    layout = edit.layout
    grid = DDIMSampler(pipeline.alphas_cumprod, spec.steps)
    with progress_bar(2 * spec.steps, progress) as bar:
        tuned = invert_latent(pipeline.encode_image(photo), edit.fusion, grid, spec.cfg_scale, layout,
                              refine=refine, inner_steps=inner_steps,
                              tick=lambda phase, finished: bar.update(int(finished)))
    metadata = {
        "model_hash": pipeline.model_hash(), "spec_hash": source_fingerprint(spec, layout), "method": method,
        "steps": spec.steps, "width": spec.width, "height": spec.height, "cfg_scale": spec.cfg_scale, "refine": refine,
    }
    report = {"notes": notes, "inner_steps": tuned.inner_steps, "final_losses": tuned.final_losses,
              "timings": {"inversion_s": tuned.inversion_s, "null_text_s": tuned.null_text_s,
                          "total_s": time.perf_counter() - started}}
    return Inversion(tuned.latent, tuned.null_texts, metadata, report)


@torch.no_grad()
def reconstruct(inversion: Inversion, spec, pipeline, null_text: bool = True) -> torch.Tensor:
    """The source alone, sampled from the inverted noise at the spec's CFG, with the tuned
    embeddings (``null_text``) or the plain negative prompts; final latent (1, C, h, w)."""
    spec = load_spec(spec).resolved()
    edit = build_edit(spec, inversion.metadata.get("method", "p2p"), pipeline, control=False)
    contexts_at = (lambda i: inversion.contexts(i, edit.contexts, edit.layout)) if null_text else None
    denoiser = EditDenoiser(edit, DDIMSampler(pipeline.alphas_cumprod, spec.steps), images=(SOURCE,),
                            contexts_at=contexts_at, separate=True)
    return sample(denoiser, inversion.latent.to(pipeline.device), denoiser.grid)


def latent_psnr(reference: torch.Tensor, latent: torch.Tensor) -> float:
    """PSNR (dB) of a latent against the photo's own latent, over the reference's value range:
    the inversion's error without the VAE's."""
    import math

    mse = float(((latent.float() - reference.float()) ** 2).mean())
    span = float(reference.max() - reference.min())
    return math.inf if mse == 0 else 10 * math.log10(span**2 / mse)


def image_scores(reference: Image.Image, image: Image.Image) -> dict[str, float]:
    """PSNR (dB) and SSIM of ``image`` against ``reference`` (scikit-image)."""
    import numpy as np
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    a = np.asarray(reference.convert("RGB"), dtype=np.float64) / 255
    b = np.asarray(image.convert("RGB"), dtype=np.float64) / 255
    return {"psnr": float(peak_signal_noise_ratio(a, b, data_range=1.0)),
            "ssim": float(structural_similarity(a, b, channel_axis=-1, data_range=1.0))}
