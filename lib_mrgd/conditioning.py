"""The text each layer is denoised with, per image and CFG branch, and its encoding.

Each context keeps the token id of every position, because attention control (which source
token feeds which target token) and keyword selection (which tokens belong to which region of
r_total) work on positions, and the positions are the host's: 77-token chunks with BOS and EOS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence

import torch

from .layout import IMAGES, Branch, LayerKind, Layout
from .spec import EditSpec

Key = tuple[int, int, Branch]  # (layer index, image, branch)
SEPARATOR = ", "


class TextModel(Protocol):
    """What conditioning needs from a host's text encoder."""

    bos_id: int
    eos_id: int
    pad_id: int  # the padding of a chunk (EOS for SD1, 0 for SD2's OpenCLIP)

    def encode_prompts(self, texts: Sequence[str]) -> Sequence[torch.Tensor]:
        """One ``(positions, dim)`` context per text."""

    def context_ids(self, text: str) -> list[int]:
        """The token id at every position of ``text``'s context (chunks of BOS + 75 + EOS)."""


    def id_to_token(self, ids: Sequence[int]) -> list[str]:
        """BPE strings; a word's last piece ends with ``</w>``."""


def content_ids(model: TextModel, text: str) -> list[int]:
    """The ids of ``text`` without BOS, EOS, padding or chunking, as the host tokenises it."""
    special = {model.bos_id, model.eos_id, model.pad_id}
    return [t for t in model.context_ids(text) if t not in special]


def with_common(common: str, text: str) -> str:
    """``common, text`` as the authors join the main prompt and a region's prompt; either one
    alone when the other is empty."""
    return SEPARATOR.join(t for t in (common, text) if t)


def total_parts(spec: EditSpec, image: int) -> list[tuple[str, int | None]]:
    """r_total's prompt in pieces: the common prompt and the background (tag None), then each
    region present in ``image`` (tagged with its index), joined by :data:`SEPARATOR`."""
    parts = [(spec.common, None), (spec.background, None)]
    parts += [(r.prompt(image), i) for i, r in enumerate(spec.regions)]
    return [(text, tag) for text, tag in parts if text]


def total_prompt(spec: EditSpec, image: int) -> str:
    return SEPARATOR.join(text for text, _ in total_parts(spec, image))


def layer_prompts(spec: EditSpec, layout: Layout) -> dict[Key, str]:
    prompts: dict[Key, str] = {}
    for layer in layout.layers:
        for image in IMAGES:
            if not layer.present[image]:
                continue
            if layer.kind == LayerKind.BACKGROUND:
                cond, uncond = with_common(spec.common, spec.background), spec.negative
            elif layer.kind == LayerKind.TOTAL:
                cond, uncond = total_prompt(spec, image), spec.negative  # the common prompt is its first part
            else:
                region = spec.regions[layer.region]
                cond, uncond = with_common(spec.common, region.prompt(image)), region.negative or spec.negative
            prompts[(layer.index, image, Branch.COND)] = cond
            prompts[(layer.index, image, Branch.UNCOND)] = with_common(spec.common_negative, uncond)
    return prompts


def pad_to_common_length(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Repeat each context's last vector up to the longest one, as the WebUI does when it stacks
    the prompts of one batch; source and target rows of a layer must share a UNet call."""
    longest = max(t.shape[0] for t in tensors)
    return [t if t.shape[0] == longest else torch.cat([t, t[-1:].expand(longest - t.shape[0], -1)])
            for t in tensors]


@dataclass
class Conditioning:
    prompts: dict[Key, str]
    contexts: dict[Key, torch.Tensor]
    ids: dict[Key, list[int]]  # one id per context position, padding included


def encode_layers(prompts: Mapping[Key, str], model: TextModel) -> Conditioning:
    """Encode each distinct text once; pad the source/target pair of each layer and branch."""
    texts = sorted(set(prompts.values()))
    encoded = dict(zip(texts, model.encode_prompts(texts)))
    contexts = {key: encoded[text] for key, text in prompts.items()}
    ids = {key: model.context_ids(text) for key, text in prompts.items()}
    for (layer, image, branch) in list(contexts):
        if image != IMAGES[0]:
            continue
        pair = [(layer, i, branch) for i in IMAGES if (layer, i, branch) in contexts]
        for key, padded in zip(pair, pad_to_common_length([contexts[k] for k in pair])):
            contexts[key] = padded
            ids[key] = ids[key] + [ids[key][-1]] * (padded.shape[0] - len(ids[key]))
    return Conditioning(dict(prompts), contexts, ids)
