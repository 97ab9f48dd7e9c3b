"""CLIPSeg with gradients to the pixels.

transformers' ``CLIPSegForImageSegmentation.forward`` runs the CLIP vision tower under
``no_grad``, which would cut guidance off from the image; here its parts are called directly:
vision tower (with grad), text features (no grad, cached per query), decoder (with grad).
Preprocessing (resize, normalisation) is done in torch so it is differentiable too.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

# CLIP's normalisation, used when a weights folder has no preprocessor_config.json
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


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
