"""Shared fixtures: the tiny seeded models (built once per session, never downloaded)."""

from __future__ import annotations

import copy

import pytest


@pytest.fixture(scope="session")
def tiny():
    from lib_mrgd.backends.tiny import tiny_pipeline

    return tiny_pipeline()


@pytest.fixture(scope="session")
def script(tiny):
    """The extension's script in the stand-in WebUI, with the tiny model loaded and its CLIPSeg
    where the WebUI keeps CLIPSeg."""
    from pathlib import Path

    from standin.harness import install_model, load_extension_script

    from modules import paths

    install_model(tiny)
    folder = Path(paths.models_path) / "clipseg" / "clipseg-rd64-refined"
    tiny.segmenter.model.save_pretrained(folder)
    tiny.segmenter.tokenizer.save_pretrained(folder)
    return load_extension_script()


BASE_SPEC = {
    "width": 128, "height": 128, "seed": 7, "steps": 6, "cfg_scale": 7.0,
    "background": "a living room with a sofa, best quality",
    "negative": "blurry",
    "regions": [
        {"box": [0.05, 0.25, 0.4, 0.6], "source": "a girl in a red sweater", "target": "a girl in a blue sweater"},
        {"box": [0.55, 0.3, 0.4, 0.5], "source": "", "target": "a dog"},
    ],
}


@pytest.fixture
def spec_dict():
    return copy.deepcopy(BASE_SPEC)
