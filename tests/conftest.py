"""Shared fixtures: the tiny seeded models (built once per session, never downloaded)."""

from __future__ import annotations

import copy

import pytest


@pytest.fixture(scope="session")
def tiny():
    from lib_mrgd.backends.tiny import tiny_pipeline

    return tiny_pipeline()


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
