"""Write the tiny diffusers models as an ldm-layout single-file checkpoint with its yaml, the
format community checkpoints come in, so the single-file loader is tested without downloads."""

from __future__ import annotations

import re
from pathlib import Path

import torch
import yaml

_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
           "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _unet_key(key: str, per_level: int) -> str:
    rules = [
        (r"time_embedding\.linear_1", "time_embed.0"), (r"time_embedding\.linear_2", "time_embed.2"),
        (r"conv_in", "input_blocks.0.0"), (r"conv_norm_out", "out.0"), (r"conv_out", "out.2"),
    ]
    for pat, rep in rules:
        if re.match(pat + r"\.", key):
            return re.sub("^" + pat, rep, key)
    m = re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key)
    if m:
        level, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        block = 1 + level * (per_level + 1) + j
        return f"input_blocks.{block}.{0 if kind == 'resnets' else 1}.{_resnet_part(rest) if kind == 'resnets' else rest}"
    m = re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key)
    if m:
        return f"input_blocks.{(int(m[1]) + 1) * (per_level + 1)}.0.op.{m[2]}"
    m = re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.*)", key)
    if m:
        if m[1] == "attentions":
            return f"middle_block.1.{m[3]}"
        return f"middle_block.{0 if m[2] == '0' else 2}.{_resnet_part(m[3])}"
    m = re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key)
    if m:
        level, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        block = level * (per_level + 1) + j
        return f"output_blocks.{block}.{0 if kind == 'resnets' else 1}.{_resnet_part(rest) if kind == 'resnets' else rest}"
    m = re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key)
    if m:
        return f"output_blocks.{int(m[1]) * (per_level + 1) + per_level}.2.conv.{m[2]}"
    raise KeyError(key)


def _resnet_part(rest: str) -> str:
    name, param = rest.rsplit(".", 1)
    return f"{_RESNET[name]}.{param}"


def _vae_key(key: str, n_levels: int) -> tuple[str, bool]:
    """(ldm key, is an attention projection that ldm stores as a 1x1 conv)"""
    key = key.replace("conv_norm_out", "norm_out")
    m = re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)\.(weight|bias)", key)
    if m:
        return f"{m[1]}.mid.attn_1.{_VAE_ATTN[m[2]]}.{m[3]}", m[2] != "group_norm"
    m = re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d)\.(.*)", key)
    if m:
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3].replace('conv_shortcut', 'nin_shortcut')}", False
    m = re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key)
    if m:
        return f"encoder.down.{m[1]}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}", False
    m = re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key)
    if m:
        return f"encoder.down.{m[1]}.downsample.conv.{m[2]}", False
    m = re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key)
    if m:
        return f"decoder.up.{n_levels - 1 - int(m[1])}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}", False
    m = re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key)
    if m:
        return f"decoder.up.{n_levels - 1 - int(m[1])}.upsample.conv.{m[2]}", False
    return key, False


def _open_clip_state(text_encoder) -> dict[str, torch.Tensor]:
    """The text encoder in OpenCLIP's layout (SD2), with one more block at the end, as SD2
    checkpoints carry the last block that SD2 does not read."""
    sd = {k: v for k, v in text_encoder.state_dict().items() if "position_ids" not in k}
    out = {"token_embedding.weight": sd["text_model.embeddings.token_embedding.weight"],
           "positional_embedding": sd["text_model.embeddings.position_embedding.weight"],
           "ln_final.weight": sd["text_model.final_layer_norm.weight"],
           "ln_final.bias": sd["text_model.final_layer_norm.bias"]}
    n = text_encoder.config.num_hidden_layers
    for i in range(n + 1):
        src = min(i, n - 1)  # the unread last block: a copy of the one before
        p = f"text_model.encoder.layers.{src}."
        q = f"transformer.resblocks.{i}."
        for part in ("weight", "bias"):
            out[q + f"attn.in_proj_{part}"] = torch.cat([sd[p + f"self_attn.{x}_proj.{part}"] for x in "qkv"])
            out[q + f"attn.out_proj.{part}"] = sd[p + f"self_attn.out_proj.{part}"]
            out[q + f"ln_1.{part}"] = sd[p + f"layer_norm1.{part}"]
            out[q + f"ln_2.{part}"] = sd[p + f"layer_norm2.{part}"]
            out[q + f"mlp.c_fc.{part}"] = sd[p + f"mlp.fc1.{part}"]
            out[q + f"mlp.c_proj.{part}"] = sd[p + f"mlp.fc2.{part}"]
    return out


def export_ldm(unet, vae, text_encoder, folder: Path, name: str = "tiny-ldm", sd2: bool = False) -> Path:
    """``sd2``: the OpenCLIP text layout, linear transformer projections and v-prediction."""
    from safetensors.torch import save_file

    ucfg, vcfg, tcfg = unet.config, vae.config, text_encoder.config
    per_level = ucfg.layers_per_block
    state = {}
    for k, v in unet.state_dict().items():
        state["model.diffusion_model." + _unet_key(k, per_level)] = v
    n_levels = len(vcfg.block_out_channels)
    for k, v in vae.state_dict().items():
        new, conv = _vae_key(k, n_levels)
        state["first_stage_model." + new] = v[..., None, None] if conv and v.dim() == 2 else v
    if sd2:
        for k, v in _open_clip_state(text_encoder).items():
            state["cond_stage_model.model." + k] = v
    else:
        for k, v in text_encoder.state_dict().items():
            state["cond_stage_model.transformer." + k] = v
    state = {k: v.detach().contiguous().clone() for k, v in state.items()}
    path = folder / f"{name}.safetensors"
    save_file(state, str(path))
    text_folder = folder / "tiny-text"
    tcfg.save_pretrained(text_folder)
    ch = vcfg.block_out_channels[0]
    config = {"model": {"params": {
        "linear_start": 0.00085, "linear_end": 0.012, "timesteps": 1000, "scale_factor": vcfg.scaling_factor,
        "unet_config": {"params": {
            "in_channels": ucfg.in_channels, "out_channels": ucfg.out_channels,
            "model_channels": ucfg.block_out_channels[0],
            "attention_resolutions": [2**i for i, t in enumerate(ucfg.down_block_types) if "CrossAttn" in t],
            "num_res_blocks": per_level,
            "channel_mult": [c // ucfg.block_out_channels[0] for c in ucfg.block_out_channels],
            **({"num_head_channels": ucfg.block_out_channels[0] // ucfg.attention_head_dim[0]}
               if isinstance(ucfg.attention_head_dim, (list, tuple)) else {"num_heads": ucfg.attention_head_dim}),
            "transformer_depth": 1,
            "context_dim": ucfg.cross_attention_dim, "use_linear_in_transformer": bool(ucfg.use_linear_projection),
        }},
        "first_stage_config": {"params": {"ddconfig": {
            "z_channels": vcfg.latent_channels, "in_channels": 3, "out_ch": 3, "ch": ch,
            "ch_mult": [c // ch for c in vcfg.block_out_channels], "num_res_blocks": vcfg.layers_per_block,
        }}},
        "cond_stage_config": {"params": {"version": "tiny-text"}},
    }}}
    if sd2:
        config["model"]["params"]["parameterization"] = "v"
    path.with_suffix(".yaml").write_text(yaml.safe_dump(config))
    return path


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    keys = {k for k in sa if "position_ids" not in k}
    assert keys == {k for k in sb if "position_ids" not in k}
    for k in keys:
        assert torch.equal(sa[k], sb[k].reshape(sa[k].shape)), k
