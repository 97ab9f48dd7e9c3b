"""Loading real Stable Diffusion weights for the standalone runner.

Three sources, one result: a diffusers folder, a single-file community checkpoint (ldm layout,
converted in memory with diffusers' converters), or a Hugging Face hub id (from the local cache
first, downloaded only when the network allows). Every failure becomes one :class:`ModelError`
line that says what to do, never a traceback.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch

from ..errors import ModelError
from .hub import CHECKPOINT_SUFFIXES, fetch_snapshot, looks_like_path
from .pipeline import Pipeline
from .tokenizer import clip_tokenizer

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
HUB_FILES = [
    "model_index.json", "scheduler/scheduler_config.json", "tokenizer/*",
    "text_encoder/config.json", "text_encoder/model.safetensors",
    "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
]

# The parts of SD1's ldm config (v1-inference.yaml) that the converters read.
SD1_ORIGINAL_CONFIG = {"model": {"params": {
    "scale_factor": 0.18215,
    "unet_config": {"params": {
        "in_channels": 4, "out_channels": 4, "model_channels": 320,
        "attention_resolutions": [4, 2, 1], "num_res_blocks": 2, "channel_mult": [1, 2, 4, 4],
        "num_heads": 8, "transformer_depth": 1, "context_dim": 768, "use_linear_in_transformer": False,
    }},
    "first_stage_config": {"params": {"ddconfig": {
        "z_channels": 4, "in_channels": 3, "out_ch": 3, "ch": 128, "ch_mult": [1, 2, 4, 4],
        "num_res_blocks": 2,
    }}},
    "cond_stage_config": {"params": {}},
}}}


def _sd2_original_config() -> dict:
    """SD2's (v2-inference.yaml): SD1's, with linear transformer projections, 64-channel heads and
    OpenCLIP ViT-H's context."""
    config = copy.deepcopy(SD1_ORIGINAL_CONFIG)
    unet = config["model"]["params"]["unet_config"]["params"]
    del unet["num_heads"]
    unet.update(num_head_channels=64, context_dim=1024, use_linear_in_transformer=True)
    return config


SD2_ORIGINAL_CONFIG = _sd2_original_config()
OPEN_CLIP = "cond_stage_model.model."
# CLIP ViT-L/14's text tower, SD1's text encoder.
CLIP_L_TEXT = {
    "vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
    "num_attention_heads": 12, "max_position_embeddings": 77, "projection_dim": 768,
    "hidden_act": "quick_gelu", "bos_token_id": 49406, "eos_token_id": 49407,
}


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ModelError(f"unknown device {device!r} (try cpu, cuda or cuda:1)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelError("device 'cuda' was asked for but no CUDA GPU is available here")
    return device


_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16,
           "float16": torch.float16, "half": torch.float16, "bf16": torch.bfloat16,
           "bfloat16": torch.bfloat16}


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if dtype is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype.lower() not in _DTYPES:
        raise ModelError(f"unknown dtype {dtype!r} (choose fp32, fp16 or bf16)")
    return _DTYPES[dtype.lower()]


def _schedule(folder: Path) -> tuple[torch.Tensor | None, str]:
    path = folder / "scheduler" / "scheduler_config.json"
    if not path.is_file():
        return None, "epsilon"
    cfg = json.loads(path.read_text())
    from ..sampling import scaled_linear_alphas_cumprod

    start, end = cfg.get("beta_start", 0.00085), cfg.get("beta_end", 0.012)
    n = cfg.get("num_train_timesteps", 1000)
    if cfg.get("beta_schedule", "scaled_linear") == "linear":
        betas = torch.linspace(start, end, n, dtype=torch.float64)
        alphas = torch.cumprod(1 - betas, 0)
    else:
        alphas = scaled_linear_alphas_cumprod(start, end, n)
    return alphas, cfg.get("prediction_type", "epsilon")


def load_diffusers_folder(folder: Path, device: torch.device, dtype: torch.dtype, name: str) -> Pipeline:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    if (folder / "text_encoder_2").exists():
        raise ModelError(f"{name}: SDXL models are not supported yet (SD1.x and SD2.x folders are)")
    for part in ("unet", "vae", "text_encoder"):
        if not (folder / part).is_dir():
            raise ModelError(f"{name}: not a Stable Diffusion diffusers folder (no {part}/ inside)")
    try:
        unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", local_files_only=True)
        vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", local_files_only=True)
        text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", local_files_only=True)
        tokenizer = (CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
                     if (folder / "tokenizer" / "vocab.json").is_file() else clip_tokenizer())
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelError(f"{name}: cannot load the diffusers folder ({_first_line(exc)})") from exc
    alphas, prediction = _schedule(folder)
    return Pipeline(unet, vae, text_encoder, tokenizer, name=name, device=device, dtype=dtype,
                    prediction_type=prediction, alphas_cumprod=alphas)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _original_config(path: Path, sd2: bool) -> dict:
    """The ldm yaml next to the checkpoint (as the WebUI uses it), else the family's."""
    yaml_path = path.with_suffix(".yaml")
    if not yaml_path.is_file():
        return SD2_ORIGINAL_CONFIG if sd2 else SD1_ORIGINAL_CONFIG
    import yaml

    try:
        config = yaml.safe_load(yaml_path.read_text())
        config["model"]["params"]["unet_config"]["params"]
        return config
    except Exception as exc:  # a broken yaml is the user's file: say which
        raise ModelError(f"{yaml_path}: not a usable ldm model config ({_first_line(exc)})") from exc


def _open_clip_config(checkpoint: dict):
    """SD2's text encoder from the checkpoint's shapes: OpenCLIP's text tower with 64-channel
    heads, GELU, and every block but the last (SD2 reads the penultimate layer)."""
    from transformers import CLIPTextConfig

    width = checkpoint[OPEN_CLIP + "ln_final.weight"].shape[0]
    blocks = {k.split(".")[4] for k in checkpoint if k.startswith(OPEN_CLIP + "transformer.resblocks.")}
    vocab, _ = checkpoint[OPEN_CLIP + "token_embedding.weight"].shape
    return CLIPTextConfig(
        vocab_size=vocab, hidden_size=width, num_attention_heads=max(1, width // 64), num_hidden_layers=len(blocks) - 1,
        intermediate_size=checkpoint[OPEN_CLIP + "transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        max_position_embeddings=checkpoint[OPEN_CLIP + "positional_embedding"].shape[0], hidden_act="gelu",
        projection_dim=width, bos_token_id=49406, eos_token_id=49407, pad_token_id=0)


def uses_v_prediction(unet: torch.nn.Module, context_dim: int) -> bool:
    """Whether an SD2 UNet predicts v: at the last timestep a v-model's output is about -x for a
    constant input (an eps-model's is not), as the WebUI decides for checkpoints without a yaml."""
    x = torch.full((1, unet.config.in_channels, 8, 8), 0.5)
    with torch.no_grad():
        out = unet(x, torch.tensor([999]), encoder_hidden_states=torch.full((1, 2, context_dim), 0.5)).sample
    return float((out - x).mean()) < -1


def _text_config(original: dict, checkpoint_path: Path):
    """CLIP text config: a local folder named by the yaml's cond_stage_config, else ViT-L/14."""
    from transformers import CLIPTextConfig

    version = original["model"]["params"].get("cond_stage_config", {}).get("params", {}).get("version")
    if version:
        # Relative to the WebUI folder (models/Stable-diffusion/../..), here, or beside the file.
        webui = checkpoint_path.parent.parent.parent
        for folder in (Path(version), webui / version, checkpoint_path.parent / Path(version).name):
            if (folder / "config.json").is_file():
                return CLIPTextConfig.from_pretrained(folder), folder
    return CLIPTextConfig(**CLIP_L_TEXT), None


def load_single_file(path: Path, device: torch.device, dtype: torch.dtype) -> Pipeline:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders import single_file_utils as sfu
    from transformers import CLIPTextModel, CLIPTokenizer

    try:
        checkpoint = sfu.load_single_file_checkpoint(str(path), local_files_only=True)
    except Exception as exc:
        raise ModelError(f"{path}: cannot read the checkpoint ({_first_line(exc)})") from exc
    if "model.diffusion_model.input_blocks.0.0.weight" not in checkpoint:
        raise ModelError(f"{path}: not a Stable Diffusion checkpoint in the ldm layout")
    if "conditioner.embedders.1.model.ln_final.weight" in checkpoint:
        raise ModelError(f"{path}: SDXL checkpoints are not supported yet (SD1.x and SD2.x are)")
    sd2 = OPEN_CLIP + "ln_final.weight" in checkpoint
    if not sd2 and not any(k.startswith("cond_stage_model.transformer.") for k in checkpoint):
        raise ModelError(f"{path}: not an SD1.x or SD2.x checkpoint (no CLIP or OpenCLIP text encoder inside)")
    original = _original_config(path, sd2)
    try:
        unet_config = sfu.create_unet_diffusers_config_from_ldm(original, checkpoint, image_size=64)
        unet = UNet2DConditionModel(**unet_config)
        unet.load_state_dict(sfu.convert_ldm_unet_checkpoint(checkpoint, unet_config))
        vae_config = sfu.create_vae_diffusers_config_from_ldm(original, checkpoint, image_size=512)
        vae = AutoencoderKL(**vae_config)
        vae.load_state_dict(sfu.convert_ldm_vae_checkpoint(checkpoint, vae_config))
        text_config, text_folder = _text_config(original, path)
        if sd2 and text_folder is None:
            text_config = _open_clip_config(checkpoint)
        text_encoder = CLIPTextModel(text_config)
        expected = {k: v.shape for k, v in text_encoder.state_dict().items() if "position_ids" not in k}
        if sd2:  # every OpenCLIP block but the last, which SD2 does not read
            converted = sfu.convert_open_clip_checkpoint(text_encoder, checkpoint)
            text_weights = {k: v for k, v in converted.items() if k in expected}
        else:
            text_weights = sfu.convert_ldm_clip_checkpoint(checkpoint)
        found = {k: v.shape for k, v in text_weights.items() if "position_ids" not in k}
        if expected != found:
            fits = "the config in " + str(text_folder) if text_folder else ("OpenCLIP" if sd2 else "CLIP ViT-L/14")
            raise ModelError(f"{path}: the text encoder does not fit {fits}; put the model's .yaml beside the checkpoint")
        text_encoder.load_state_dict(text_weights, strict=False)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"{path}: cannot convert the checkpoint ({_first_line(exc)})") from exc
    if text_folder is not None and (text_folder / "vocab.json").is_file():
        tokenizer = CLIPTokenizer.from_pretrained(text_folder)
    else:
        tokenizer = clip_tokenizer(pad="!") if sd2 else clip_tokenizer()  # OpenCLIP pads with id 0
    params = original["model"]["params"]
    from ..sampling import scaled_linear_alphas_cumprod

    alphas = scaled_linear_alphas_cumprod(params.get("linear_start", 0.00085), params.get("linear_end", 0.012),
                                          params.get("timesteps", 1000))
    if "parameterization" in params or not sd2 or path.with_suffix(".yaml").is_file():
        v = params.get("parameterization") == "v"
    else:  # an SD2 checkpoint without its yaml: 768-v or 512-base
        v = uses_v_prediction(unet, unet.config.cross_attention_dim)
    prediction = "v_prediction" if v else "epsilon"
    return Pipeline(unet, vae, text_encoder, tokenizer, name=path.name, device=device, dtype=dtype,
                    prediction_type=prediction, alphas_cumprod=alphas)


def load_hub(repo_id: str, device: torch.device, dtype: torch.dtype) -> Pipeline:
    folder = fetch_snapshot(repo_id, HUB_FILES, f"model {repo_id!r} is",
                            "connect to the network once, or pass a local diffusers folder or .safetensors checkpoint")
    return load_diffusers_folder(folder, device, dtype, name=repo_id)


def load_model(name: str, device=None, dtype=None, clipseg: str | None = None, taesd: str | None = None) -> Pipeline:
    """``clipseg``: CLIPSeg weights for guidance (a folder or hub id), loaded on first use;
    ``taesd``: the tiny decoder ``guidance_decoder: "tiny"`` uses (the same)."""
    pipeline = _load_model(name, resolve_device(device), dtype)
    pipeline.source = name
    if clipseg is not None:
        pipeline.clipseg, pipeline.segmenter = str(clipseg), None
    if taesd is not None:
        pipeline.taesd, pipeline.tiny_vae = str(taesd), None
    return pipeline


def _load_model(name: str, device: torch.device, dtype) -> Pipeline:
    dtype = resolve_dtype(dtype, device)
    path = Path(name).expanduser()
    if name in ("tiny", "tiny-sd2"):
        from .tiny import tiny_pipeline

        return tiny_pipeline(device=device, dtype=dtype, name=name)
    if name.startswith("random-"):
        from .random_models import RANDOM_MODELS, random_pipeline

        if name not in RANDOM_MODELS:
            raise ModelError(f"unknown random model {name!r} (there is {', '.join(RANDOM_MODELS)})")
        return random_pipeline(name, device=device, dtype=dtype)
    if path.is_dir():
        return load_diffusers_folder(path, device, dtype, name=path.name)
    if path.is_file():
        if not path.name.lower().endswith(CHECKPOINT_SUFFIXES):
            raise ModelError(f"{path}: not a checkpoint file (expected one of {', '.join(CHECKPOINT_SUFFIXES)})")
        return load_single_file(path, device, dtype)
    if looks_like_path(name):
        raise ModelError(f"no such model file or folder: {name}")
    return load_hub(name, device, dtype)
