"""CLIPSeg weights for guidance: a local folder, a hub id, or the seeded tiny model.

Both hosts load CLIPSeg through here (the WebUI fetches into its own models folder); the
differentiable wrapper itself is :class:`lib_mrgd.guidance.segmenter.Segmenter`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..errors import ModelError
from ..guidance.segmenter import CLIP_MEAN, CLIP_STD, Segmenter
from .hub import fetch_snapshot, looks_like_path
from .tokenizer import clip_tokenizer

DEFAULT_CLIPSEG = "CIDAS/clipseg-rd64-refined"
CLIPSEG_FILES = ["config.json", "preprocessor_config.json", "*.json", "*.txt", "model.safetensors"]


def _from_folder(folder: Path, device, dtype) -> Segmenter:
    from transformers import CLIPSegForImageSegmentation, CLIPTokenizer

    try:
        model = CLIPSegForImageSegmentation.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:  # a missing, truncated or corrupt file (safetensors raises its own type)
        raise ModelError(f"cannot load CLIPSeg from {folder} ({type(exc).__name__}: {str(exc)[:200]}); it needs "
                         "config.json and model.safetensors (or pytorch_model.bin) of CLIPSegForImageSegmentation") from exc
    if (folder / "vocab.json").is_file():
        tokenizer = CLIPTokenizer.from_pretrained(str(folder))
    else:
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
    if looks_like_path(source):
        raise ModelError(f"CLIPSeg weights folder not found: {source}")
    hint = fill_hint or "pass a local folder with the CLIPSeg weights (clipseg option / --clipseg)"
    return _from_folder(fetch_snapshot(source, CLIPSEG_FILES, f"CLIPSeg weights {source!r} are", hint), device, dtype)


def tiny_segmenter(seed: int = 0, device="cpu", dtype=torch.float32) -> Segmenter:
    """A seeded random CLIPSeg of the real architecture (4 vision layers, hidden 32, 352 px)."""
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation

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
