"""Shared fixtures: the tiny seeded models (built once per session, never downloaded), and the
test tiers as markers (``pytest -m unit`` runs one tier alone): ``browser`` for the panel in
Chromium, ``host`` for the stand-in WebUI, ``tiny`` for anything that builds a model, ``unit``
for the rest."""

from __future__ import annotations

import copy

import pytest

HOST_FILES = ("test_webui.py", "test_webui_host.py")
UNIT_FILES = ("test_spec.py", "test_layout.py", "test_keywords.py", "test_mappers.py", "test_prompts.py",
              "test_importer.py", "test_engine.py")


def _tier(item) -> str:
    name = item.path.name
    if name == "test_browser.py":
        return "browser"
    if name in HOST_FILES or "script" in item.fixturenames:
        return "host"
    if name in UNIT_FILES and "tiny" not in item.fixturenames:
        return "unit"
    return "tiny"


@pytest.hookimpl(tryfirst=True)  # before -m selects by marker
def pytest_collection_modifyitems(config, items):
    for item in items:
        item.add_marker(getattr(pytest.mark, _tier(item)))


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
