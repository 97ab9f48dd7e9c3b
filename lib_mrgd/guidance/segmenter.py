"""CLIPSeg with gradients to the pixels.

transformers' ``CLIPSegForImageSegmentation.forward`` runs the CLIP vision tower under
``no_grad``, which would cut guidance off from the image; here its parts are called directly:
vision tower (with grad), text features (no grad, cached per query), decoder (with grad).
Preprocessing (resize, normalisation) is done in torch so it is differentiable too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from ..backends.pipeline import ModelError

DEFAULT_CLIPSEG = "CIDAS/clipseg-rd64-refined"
# CLIP's normalisation, used when a weights folder has no preprocessor_config.json
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIPSEG_FILES = ["config.json", "preprocessor_config.json", "*.json", "*.txt", "model.safetensors"]


class Segmenter:
    """One soft mask per (image, text query)."""

    def __init__(self, model, tokenizer, size: int = 352, mean=CLIP_MEAN, std=CLIP_STD, name: str = "clipseg"):
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.size = size
        self.name = name
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        self._mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(std, device=self.device).view(1, 3, 1, 1)
        self._queries: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """Conditional embeddings of text queries (cached: queries repeat every step)."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._queries]
        if missing:
            tok = self.tokenizer(missing, padding=True, truncation=True, max_length=77, return_tensors="pt")
            feats = self.model.clip.get_text_features(
                tok["input_ids"].to(self.device), attention_mask=tok["attention_mask"].to(self.device))
            if not isinstance(feats, torch.Tensor):  # newer transformers return an output object
                feats = feats.pooler_output if hasattr(feats, "pooler_output") else feats[0]
            self._queries.update(zip(missing, feats))
        return torch.stack([self._queries[t] for t in texts])

    def activations(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The vision tower's hidden states the decoder reads; ``images`` in [0, 1], (B, 3, H, W)."""
        x = F.interpolate(images.to(self.dtype), size=(self.size, self.size), mode="bilinear",
                          align_corners=False, antialias=False)
        x = (x - self._mean.to(x.dtype)) / self._std.to(x.dtype)
        out = self.model.clip.vision_model(pixel_values=x, output_hidden_states=True)
        hidden = out.hidden_states if hasattr(out, "hidden_states") else out[2]
        return [hidden[i + 1] for i in self.model.extract_layers]

    def masks(self, images: torch.Tensor, rows: Sequence[int], queries: Sequence[str],
              size: tuple[int, int]) -> torch.Tensor:
        """Sigmoid masks ``(len(rows), *size)``: query k on image ``rows[k]``."""
        acts = self.activations(images)
        index = torch.tensor(list(rows), device=images.device)
        acts = [a.index_select(0, index) for a in acts]
        cond = self.embed(queries).to(acts[0].dtype)
        out = self.model.decoder(acts, cond)
        logits = out.logits if hasattr(out, "logits") else out[0]
        logits = logits.reshape(len(rows), 1, *logits.shape[-2:]).float()
        return torch.sigmoid(F.interpolate(logits, size=size, mode="bilinear", align_corners=False))[:, 0]


def _from_folder(folder: Path, device, dtype) -> Segmenter:
    from transformers import CLIPSegForImageSegmentation, CLIPTokenizer

    try:
        model = CLIPSegForImageSegmentation.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:  # a missing, truncated or corrupt file (safetensors raises its own type)
        raise ModelError(f"cannot load CLIPSeg from {folder} ({type(exc).__name__}: {str(exc)[:200]}); it needs "
                         "config.json and model.safetensors (or pytorch_model.bin) of CLIPSegForImageSegmentation") from None
    if (folder / "vocab.json").is_file():
        tokenizer = CLIPTokenizer.from_pretrained(str(folder))
    else:
        from ..backends.tokenizer import clip_tokenizer

        tokenizer = clip_tokenizer()
    size, mean, std = 352, CLIP_MEAN, CLIP_STD
    pre = folder / "preprocessor_config.json"
    if pre.is_file():
        cfg = json.loads(pre.read_text())
        size = cfg.get("size", {}).get("height", size) if isinstance(cfg.get("size"), dict) else cfg.get("size", size)
        mean, std = cfg.get("image_mean", mean), cfg.get("image_std", std)
    return Segmenter(model.to(device, dtype), tokenizer, int(size), mean, std, name=folder.name)


def load_segmenter(source: str | os.PathLike | None, device, dtype, fill_hint: str | None = None) -> Segmenter:
    """CLIPSeg from a local folder, or a hub id via the Hugging Face cache (downloaded when the
    network allows). ``fill_hint`` names the folder a user should fill when nothing is found."""
    source = str(source or DEFAULT_CLIPSEG)
    path = Path(source).expanduser()
    if path.is_dir():
        return _from_folder(path, device, dtype)
    from ..backends.loaders import fetch_snapshot, looks_like_path

    if looks_like_path(source):
        raise ModelError(f"CLIPSeg weights folder not found: {source}")
    hint = fill_hint or "pass a local folder with the CLIPSeg weights (clipseg option / --clipseg)"
    return _from_folder(fetch_snapshot(source, CLIPSEG_FILES, f"CLIPSeg weights {source!r} are", hint), device, dtype)


def tiny_segmenter(seed: int = 0, device="cpu", dtype=torch.float32) -> Segmenter:
    """A seeded random CLIPSeg of the real architecture (4 vision layers, hidden 32, 352 px)."""
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation

    from ..backends.tokenizer import clip_tokenizer

    config = CLIPSegConfig(
        text_config={"vocab_size": 49408, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "max_position_embeddings": 77,
                     "bos_token_id": 49406, "eos_token_id": 49407},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 4,
                       "num_attention_heads": 2, "image_size": 352, "patch_size": 16},
        projection_dim=32, extract_layers=[1, 2, 3], reduce_dim=16, decoder_num_attention_heads=2,
        decoder_intermediate_size=32, conditional_layer=0,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPSegForImageSegmentation(config)
    return Segmenter(model.to(device, dtype), clip_tokenizer(), 352, name="tiny-clipseg")
