"""mrgd: Multi-Region Guided Diffusion, region-by-region editing for Stable Diffusion.

The public Python API::

    import lib_mrgd
    spec = lib_mrgd.load_spec("edit.json")
    pipe = lib_mrgd.load_pipeline("tiny")
    result = lib_mrgd.run_edit(spec, pipe, method="multidiffusion")
    result.source.save("source.png"); result.target.save("target.png")

Names load on first use, so a host that imports one module (the WebUI adapter) pays for no
other.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "METHODS": "method", "MethodPlan": "method",
    "EditResult": "runner", "run_edit": "runner",
    "EditSpec": "spec", "Options": "spec", "Region": "spec", "RegionKind": "spec", "load_spec": "spec",
    "MrgdError": "errors", "SpecError": "errors", "ImageError": "errors", "InversionError": "errors",
    "ModelError": "errors", "ArgumentError": "errors",
    "Inversion": "inversion", "invert": "inversion",
    "RegionImportWarning": "importer", "import_spec": "importer",
}


def load_pipeline(name_or_path: str, device=None, dtype=None, clipseg: str | None = None, taesd: str | None = None):
    """A model for the standalone runner: ``"tiny"``, ``"random-sd15"``, a diffusers folder, a
    ``.safetensors`` / ``.ckpt`` file or a Hugging Face hub id. ``clipseg`` names the CLIPSeg
    weights guidance uses (a folder or hub id; default ``CIDAS/clipseg-rd64-refined``; ``tiny``
    carries its own); ``taesd`` the tiny decoder of ``guidance_decoder: "tiny"`` (default
    ``madebyollin/taesd``). Raises :class:`ModelError` with one clear line."""
    from .backends.loaders import load_model

    return load_model(name_or_path, device=device, dtype=dtype, clipseg=clipseg, taesd=taesd)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted([*_EXPORTS, "__version__", "load_pipeline"])
