"""mrgd: Multi-Region Guided Diffusion, region-by-region editing for Stable Diffusion.

The public Python API::

    import lib_mrgd
    spec = lib_mrgd.load_spec("edit.json")
    pipe = lib_mrgd.load_pipeline("tiny")
    result = lib_mrgd.run_edit(spec, pipe, method="multidiffusion")
    result.source.save("source.png"); result.target.save("target.png")
"""

from __future__ import annotations

from .backends.pipeline import ModelError
from .importer import RegionImportWarning, import_spec
from .inversion import Inversion, InversionError, invert
from .runner import METHODS, EditResult, run_edit
from .spec import EditSpec, Options, Region, RegionKind, SpecError, load_spec

__version__ = "0.1.0"


def load_pipeline(name_or_path: str, device=None, dtype=None, clipseg: str | None = None):
    """A model for the standalone runner: ``"tiny"``, a diffusers folder, a ``.safetensors`` /
    ``.ckpt`` file or a Hugging Face hub id. ``clipseg`` names the CLIPSeg weights guidance uses
    (a folder or hub id; default ``CIDAS/clipseg-rd64-refined``; ``tiny`` carries its own).
    Raises :class:`ModelError` with one clear line."""
    from .backends import load_model

    return load_model(name_or_path, device=device, dtype=dtype, clipseg=clipseg)


__all__ = ["METHODS", "EditResult", "EditSpec", "Inversion", "InversionError", "ModelError",
           "Options", "Region", "RegionImportWarning", "RegionKind", "SpecError", "__version__", "import_spec",
           "invert", "load_pipeline", "load_spec", "run_edit"]
