"""The three guidance losses (Eqs. 2-4), on masks and images of the source/target pair."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def region_specific(masks: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """RS: each mask's mass outside its region's box, ``mean(M * (1 - box))`` summed over masks.
    ``masks`` and ``boxes`` are ``(K, h, w)``; boxes are 1 inside."""
    if masks.numel() == 0:
        return masks.sum()
    return (masks * (1 - boxes)).flatten(1).mean(1).sum()


def inter_image_similarity(source: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    """IS: InfoNCE between the source and target masks of the same regions (``(K, h, w)`` each):
    region k's source mask should match its own target mask, not the other regions'."""
    if source.shape[0] < 2:
        return source.new_zeros(())
    a = F.normalize(source.flatten(1), dim=1)
    b = F.normalize(target.flatten(1), dim=1)
    logits = a @ b.T / temperature
    labels = torch.arange(len(a), device=a.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def inherent_preservation(image_s: torch.Tensor, image_t: torch.Tensor, image_mask: torch.Tensor,
                          latent_s: torch.Tensor, latent_t: torch.Tensor, latent_mask: torch.Tensor) -> torch.Tensor:
    """IP: mean squared difference of source and target over the inherent area, in RGB and latent."""
    rgb = ((image_mask * (image_s - image_t)) ** 2).mean()
    latent = ((latent_mask * (latent_s - latent_t)) ** 2).mean()
    return rgb + latent
