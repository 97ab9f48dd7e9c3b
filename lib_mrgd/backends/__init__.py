"""Standalone model backends (diffusers models; never imported inside the WebUI)."""

from .loaders import DEFAULT_MODEL, load_model
from .pipeline import ModelError, Pipeline

__all__ = ["DEFAULT_MODEL", "ModelError", "Pipeline", "load_model"]
