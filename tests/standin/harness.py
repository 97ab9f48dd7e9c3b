"""Drive the extension through the stand-in WebUI with the tiny model, as the host would."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from modules import processing, scripts, shared  # noqa: E402

# the edit and the WebUI fields the host tests send
SPEC = {"regions": [
    {"box": [0.05, 0.25, 0.4, 0.6], "source": "a girl in a red sweater", "target": "a girl in a blue sweater",
     "keywords": ["girl"]},
    {"box": [0.55, 0.3, 0.4, 0.5], "source": "", "target": "a dog"},
]}
FIELDS = dict(prompt="a living room, best quality", negative_prompt="blurry", seed=7, steps=6, cfg_scale=7.0,
              width=128, height=128)


class StandInClip:
    """The hijacked SD1 text encoder's tokenisation surface."""

    def __init__(self, pipe):
        self.pipe = pipe
        self.id_start, self.id_end, self.id_pad = pipe.bos_id, pipe.eos_id, pipe.pad_id

    def tokenize_line(self, line):
        tp = self.pipe.tokenize(line)
        return [SimpleNamespace(tokens=c, multipliers=m, fixes=[]) for c, m in zip(tp.chunks, tp.multipliers)], tp.token_count

    def tokenize(self, texts):
        return [self.pipe.tokenizer(t, add_special_tokens=False).input_ids for t in texts]


class StandInVAE(torch.nn.Module):
    """ldm's AutoencoderKL surface: decode returns the image tensor."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def decode(self, z):
        return self.vae.decode(z).sample


class StandInSDModel(torch.nn.Module):
    """``shared.sd_model`` for an SD1 checkpoint: ldm-style surface over the tiny diffusers parts."""

    is_sdxl = False
    cond_stage_key = "txt"
    parameterization = "eps"

    def __init__(self, pipe):
        super().__init__()
        self.pipe = pipe
        self.model = torch.nn.Module()
        self.model.diffusion_model = pipe.unet
        self.first_stage_model = StandInVAE(pipe.vae)
        self.cond_stage_model = StandInClip(pipe)
        self.scale_factor = pipe.vae_scale
        self.register_buffer("alphas_cumprod", pipe.alphas_cumprod.float())

    @torch.no_grad()
    def get_learned_conditioning(self, texts):
        encoded = self.pipe.encode_prompts(list(texts))
        count = max(t.shape[0] for t in encoded)
        return torch.stack([torch.cat([t, t[-1:].repeat(count - t.shape[0], 1)]) for t in encoded])

    def apply_model(self, x, t, cond):
        return self.model.diffusion_model(x, t, encoder_hidden_states=cond["c_crossattn"][0]).sample

    @torch.no_grad()
    def decode_first_stage(self, z):
        return self.first_stage_model.decode(z / self.scale_factor)

    @torch.no_grad()
    def encode_first_stage(self, x):
        return self.pipe.vae.encode(x).latent_dist.mean * self.scale_factor


def load_extension_script():
    """Import ``scripts/mrgd.py`` the way the host does (extension folder on sys.path)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    spec = importlib.util.spec_from_file_location("mrgd_extension_script", ROOT / "scripts" / "mrgd.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    script = module.Script()
    script.filename = str(ROOT / "scripts" / "mrgd.py")
    script.args_from, script.args_to = 1, 2  # after the selected script's index, as in the host
    script.alwayson = True
    return script


def install_model(pipe) -> StandInSDModel:
    shared.sd_model = StandInSDModel(pipe)
    return shared.sd_model


def _run(p, script, spec_arg, selected=None, selected_args=()):
    """As the host's txt2img/img2img: the selected script runs the request, else process_images."""
    selectable = [selected] if selected else []
    p.scripts = scripts.ScriptRunner([script] if script else [], selectable)
    if selected:
        selected.args_from, selected.args_to = 2, 2 + len(selected_args)
    p.script_args = [1 if selected else 0, spec_arg, *selected_args]
    return p, p.scripts.run(p, *p.script_args) or processing.process_images(p)


def txt2img(script, spec_arg, selected=None, selected_args=(), **fields):
    return _run(processing.StableDiffusionProcessingTxt2Img(**fields), script, spec_arg, selected, selected_args)


def img2img(script, spec_arg, init_image, **fields):
    return _run(processing.StableDiffusionProcessingImg2Img(init_images=[init_image], **fields), script, spec_arg)
