"""The paper's metrics (Table 1), written down precisely because the paper does not.

For an edit with source I^S and target I^T (same size), "edited boxes" are the boxes of regions
that are added, removed or changed:

- **CLIP score**: 100 x cosine between open_clip ViT-B/16 embeddings of the edited box's crop of
  I^T and a text: the target prompt for additions and attribute changes; for removals, the
  background prompt (the box should now show background). Averaged over edited boxes.
- **SSIM-e**: SSIM of I^S and I^T over the band around the edited boxes: each box dilated by
  ``margin`` (a fraction of the shorter image side, 0.1 by default: 51 px at 512) minus all edited
  boxes. It shows interference that leaks out of an edit. ``include_box`` keeps the boxes in the
  area (the dilated boxes whole), a reading that also counts the edit itself and so scores lower.
- **SSIM-i**: SSIM of I^S and I^T over the inherent area: the image minus the edited boxes
  (background and kept regions). It shows how well the rest is preserved.

SSIM is scikit-image's (7x7 window, data range 1, colour channels averaged); a masked SSIM is the
mean of its SSIM map over the mask's pixels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from .errors import ModelError
from .spec import EditSpec, RegionKind

EDITED = (RegionKind.ADDITION, RegionKind.REMOVAL, RegionKind.ATTRIBUTE)
BAND_MARGIN = 0.1


def _array(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0


def ssim_map(a: Image.Image, b: Image.Image) -> np.ndarray:
    from skimage.metrics import structural_similarity

    _, full = structural_similarity(_array(a), _array(b), channel_axis=-1, data_range=1.0, full=True)
    return full.mean(axis=-1)


def box_pixels(box: Sequence[float], width: int, height: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) in pixels, rounded to the nearest pixel, at least one pixel wide."""
    x, y, w, h = box
    x0, y0 = int(round(x * width)), int(round(y * height))
    x1, y1 = max(x0 + 1, int(round((x + w) * width))), max(y0 + 1, int(round((y + h) * height)))
    return x0, y0, min(x1, width), min(y1, height)


def edited_mask(boxes: Sequence[Sequence[float]], width: int, height: int) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    for box in boxes:
        x0, y0, x1, y1 = box_pixels(box, width, height)
        mask[y0:y1, x0:x1] = True
    return mask


def band_mask(boxes: Sequence[Sequence[float]], width: int, height: int, margin: float = BAND_MARGIN,
              include_box: bool = False) -> np.ndarray:
    pad = int(round(margin * min(width, height)))
    band = np.zeros((height, width), bool)
    for box in boxes:
        x0, y0, x1, y1 = box_pixels(box, width, height)
        band[max(0, y0 - pad):min(height, y1 + pad), max(0, x0 - pad):min(width, x1 + pad)] = True
    return band if include_box else band & ~edited_mask(boxes, width, height)


def edited_boxes(spec: EditSpec) -> list[list[float]]:
    return [r.box for r in spec.regions if r.kind in EDITED]


def _masked_mean(values: np.ndarray, mask: np.ndarray) -> float | None:
    """Mean over ``mask``; None when it is empty (e.g. an edited box covering the image)."""
    return float(values[mask].mean()) if mask.any() else None


def pair_metrics(spec: EditSpec, source: Image.Image, target: Image.Image, clip: "ClipScorer | None" = None,
                 margin: float = BAND_MARGIN, include_box: bool = False) -> dict[str, float | None]:
    """CLIP score, SSIM-e and SSIM-i of one source/target pair (CLIP None without a scorer)."""
    smap = ssim_map(source, target)
    boxes = edited_boxes(spec)
    return {
        "clip": clip.clip_score(spec, target) if clip is not None else None,
        "ssim_e": _masked_mean(smap, band_mask(boxes, source.width, source.height, margin, include_box)),
        "ssim_i": _masked_mean(smap, ~edited_mask(boxes, source.width, source.height)),
    }


def clip_text(spec: EditSpec, region_index: int) -> str:
    """What an edited region's crop of the target is scored against."""
    region = spec.regions[region_index]
    return spec.background if region.kind == RegionKind.REMOVAL else region.target


# -- CLIP ---------------------------------------------------------------------------------------


@dataclass
class ClipScorer:
    model: torch.nn.Module
    tokenize: object
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str
    meaningful: bool = True  # False for the tiny random model

    @torch.no_grad()
    def score(self, image: Image.Image, text: str) -> float:
        """100 x cosine similarity of the image and the text."""
        x = torch.from_numpy(_array(image.resize((self.image_size, self.image_size), Image.BICUBIC))).float()
        x = (x - torch.tensor(self.mean)) / torch.tensor(self.std)
        device = next(self.model.parameters()).device
        img = self.model.encode_image(x.permute(2, 0, 1)[None].to(device))
        txt = self.model.encode_text(self.tokenize([text]).to(device))
        img, txt = img / img.norm(dim=-1, keepdim=True), txt / txt.norm(dim=-1, keepdim=True)
        return float(100.0 * (img * txt).sum())

    def clip_score(self, spec: EditSpec, target: Image.Image) -> float | None:
        scores = []
        for i, region in enumerate(spec.regions):
            if region.kind not in EDITED or not clip_text(spec, i):
                continue
            crop = target.crop(box_pixels(region.box, target.width, target.height))
            scores.append(self.score(crop, clip_text(spec, i)))
        return float(np.mean(scores)) if scores else None


def tiny_clip_scorer(seed: int = 0) -> ClipScorer:
    """A seeded random open_clip model of the real architecture, small: numbers mean nothing."""
    import open_clip
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIP(embed_dim=32, vision_cfg=CLIPVisionCfg(layers=2, width=32, head_width=16, patch_size=16, image_size=64),
                     text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=32, heads=2, layers=2))
    return ClipScorer(model.eval(), open_clip.tokenize, 64, OPENAI_DATASET_MEAN, OPENAI_DATASET_STD,
                      "tiny random open_clip", meaningful=False)


def load_clip_scorer(source: str | None = None, device="cpu") -> ClipScorer:
    """open_clip ViT-B/16: ``None`` for OpenAI's weights (downloaded once by open_clip), a tag of
    ``open_clip.list_pretrained_tags_by_model("ViT-B-16")``, or a local weights file."""
    import open_clip
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    pretrained = source or "openai"
    if os.sep in pretrained and not os.path.isfile(pretrained):
        raise ModelError(f"CLIP weights file not found: {pretrained}")
    try:
        model = open_clip.create_model("ViT-B-16", pretrained=pretrained, device=device)
    except Exception as exc:
        raise ModelError(f"open_clip ViT-B-16 weights {pretrained!r} are not available ({type(exc).__name__}); "
                         "connect once so open_clip can fetch them, or pass a local file with --clip") from exc
    return ClipScorer(model.eval(), open_clip.get_tokenizer("ViT-B-16"), 224, OPENAI_DATASET_MEAN,
                      OPENAI_DATASET_STD, f"open_clip ViT-B-16 ({pretrained})")
