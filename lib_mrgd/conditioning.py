"""The text each layer is denoised with, per image and CFG branch, and its encoding."""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch

from .layout import IMAGES, Branch, Layout, LayerKind
from .spec import EditSpec

Key = tuple[int, int, Branch]  # (layer index, image, branch)
TextEncoder = Callable[[Sequence[str]], Sequence[torch.Tensor]]  # texts -> [(tokens, dim)] each


def total_prompt(spec: EditSpec, image: int) -> str:
    """r_total's prompt: the background followed by every region prompt present in ``image``."""
    parts = [spec.background] + [r.prompt(image) for r in spec.regions]
    return ", ".join(p for p in parts if p)


def layer_prompts(spec: EditSpec, layout: Layout) -> dict[Key, str]:
    prompts: dict[Key, str] = {}
    for layer in layout.layers:
        for image in IMAGES:
            if not layer.present[image]:
                continue
            if layer.kind == LayerKind.BACKGROUND:
                cond, uncond = spec.background, spec.negative
            elif layer.kind == LayerKind.TOTAL:
                cond, uncond = total_prompt(spec, image), spec.negative
            else:
                region = spec.regions[layer.region]
                cond, uncond = region.prompt(image), region.negative or spec.negative
            prompts[(layer.index, image, Branch.COND)] = cond
            prompts[(layer.index, image, Branch.UNCOND)] = uncond
    return prompts


def pad_to_common_length(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Repeat each context's last vector up to the longest one, as the WebUI does when it stacks
    the prompts of one batch; source and target rows of a layer must share a UNet call."""
    longest = max(t.shape[0] for t in tensors)
    return [t if t.shape[0] == longest else torch.cat([t, t[-1:].expand(longest - t.shape[0], -1)])
            for t in tensors]


def encode_layers(prompts: Mapping[Key, str], encode: TextEncoder) -> dict[Key, torch.Tensor]:
    """Encode each distinct text once; pad the source/target pair of each layer and branch."""
    texts = sorted(set(prompts.values()))
    encoded = dict(zip(texts, encode(texts)))
    contexts = {key: encoded[text] for key, text in prompts.items()}
    for (layer, image, branch) in list(contexts):
        if image != IMAGES[0]:
            continue
        pair = [(layer, i, branch) for i in IMAGES if (layer, i, branch) in contexts]
        for key, padded in zip(pair, pad_to_common_length([contexts[k] for k in pair])):
            contexts[key] = padded
    return contexts
