"""The extension's own settings section, and where its CLIPSeg weights live."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from ..backends.clipseg import CLIPSEG_FILES, DEFAULT_CLIPSEG, load_segmenter
from ..backends.hub import fetch_snapshot
from ..guidance.segmenter import Segmenter

SECTION = ("mrgd", "Multi-Region Guided Diffusion")
CLIPSEG_PATH = "mrgd_clipseg_path"
MAX_REGIONS = "mrgd_max_regions"
GUIDANCE_DTYPE = "mrgd_guidance_dtype"
DEFAULTS = {CLIPSEG_PATH: "", MAX_REGIONS: 16, GUIDANCE_DTYPE: "auto"}


def register() -> None:
    """``on_ui_settings``: the extension's settings section."""
    import gradio as gr
    from modules import shared

    opts = [
        (CLIPSEG_PATH, shared.OptionInfo(DEFAULTS[CLIPSEG_PATH], "CLIPSeg weights folder (empty: models/clipseg/clipseg-rd64-refined)")),
        (MAX_REGIONS, shared.OptionInfo(DEFAULTS[MAX_REGIONS], "Maximum number of regions", gr.Slider,
                                        {"minimum": 1, "maximum": 16, "step": 1})),
        (GUIDANCE_DTYPE, shared.OptionInfo(DEFAULTS[GUIDANCE_DTYPE], "Guidance model precision", gr.Radio,
                                           {"choices": ["auto", "fp32", "fp16"]})),
    ]
    for key, info in opts:
        info.section = SECTION
        shared.opts.add_option(key, info)


def get(key: str, p=None):
    """A setting; a request's ``override_settings`` win (the host applies them only after
    ``before_process``, where the spec is checked)."""
    from modules import shared

    overrides = getattr(p, "override_settings", None) or {}
    if key in overrides:
        return overrides[key]
    return getattr(shared.opts, key, DEFAULTS[key]) if hasattr(shared, "opts") else DEFAULTS[key]


def clipseg_folder() -> Path:
    configured = str(get(CLIPSEG_PATH) or "").strip()
    if configured:
        return Path(configured).expanduser()
    from modules import paths

    return Path(paths.models_path) / "clipseg" / "clipseg-rd64-refined"


def guidance_dtype(device: torch.device) -> torch.dtype:
    choice = get(GUIDANCE_DTYPE)
    if choice == "fp16" or (choice == "auto" and device.type == "cuda"):
        return torch.float16
    return torch.float32


def segmenter(device: torch.device) -> Segmenter:
    """CLIPSeg from the settings' folder; fetched into it on first use when online."""
    folder = clipseg_folder()
    dtype = guidance_dtype(device)
    return _cached(str(folder), str(device), str(dtype), dtype, device)


@functools.lru_cache(maxsize=2)
def _cached(folder_key: str, device_key: str, dtype_key: str, dtype, device) -> Segmenter:
    folder = Path(folder_key)
    hint = f"put the files of {DEFAULT_CLIPSEG} (config.json, model.safetensors, tokenizer) in {folder}"
    if not (folder / "config.json").is_file():  # fetched into the WebUI's folder, not the hub cache
        fetch_snapshot(DEFAULT_CLIPSEG, CLIPSEG_FILES, "CLIPSeg weights are", hint, local_dir=folder)
    return load_segmenter(folder, device, dtype, fill_hint=hint)
