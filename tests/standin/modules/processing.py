"""Processing objects and process_images, in the host's order: before_process -> prompts and
seeds -> process -> conditioning -> sampler -> process_before_every_sampling -> sample -> decode
-> postprocess, with override settings applied and restored around it."""

import json
import random
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from modules import prompt_parser, sd_samplers, shared
from modules.shared import opts


def get_fixed_seed(seed):
    if seed in ("", None) or seed == -1:
        return int(random.randrange(4294967294))
    return seed


def quote(text):
    if "," not in str(text) and "\n" not in str(text) and ":" not in str(text):
        return text
    return json.dumps(text, ensure_ascii=False)


class _Rng:
    """Per-image seeded noise, shared by the first draw and ancestral steps."""

    def __init__(self, seeds, shape):
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.shape = shape

    def next(self):
        return torch.stack([torch.randn(self.shape, generator=g) for g in self.generators])

    def ancestral(self, shape):
        return torch.stack([torch.randn(shape[1:], generator=g) for g in self.generators])


@dataclass
class StableDiffusionProcessing:
    prompt: object = ""
    negative_prompt: object = ""
    seed: object = -1
    subseed: object = -1
    sampler_name: str = "DDIM"
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 6
    cfg_scale: float = 7.0
    width: int = 128
    height: int = 128
    override_settings: dict = field(default_factory=dict)
    extra_generation_params: dict = field(default_factory=dict)
    scripts: object = None
    script_args: list = field(default_factory=list)
    is_api: bool = False
    is_hr_pass: bool = False
    eta: object = None
    refiner_checkpoint_info: object = None
    refiner_switch_at: object = None
    do_not_save_grid: bool = False
    disable_extra_networks: bool = False

    @property
    def sd_model(self):
        return shared.sd_model

    def setup_prompts(self):
        n = self.batch_size * self.n_iter
        self.all_prompts = list(self.prompt) if isinstance(self.prompt, list) else [self.prompt] * n
        self.all_negative_prompts = (list(self.negative_prompt) if isinstance(self.negative_prompt, list)
                                     else [self.negative_prompt] * n)
        seed = self.seed if isinstance(self.seed, list) else get_fixed_seed(self.seed)
        self.all_seeds = list(seed) if isinstance(seed, list) else [int(seed) + i for i in range(n)]


@dataclass
class StableDiffusionProcessingTxt2Img(StableDiffusionProcessing):
    enable_hr: bool = False
    hr_prompt: str = ""
    hr_negative_prompt: str = ""
    def sample(self, conditioning, unconditional_conditioning, seeds):
        self.sampler = sd_samplers.create_sampler(self.sampler_name, self.sd_model)
        x = self.rng.next()
        if self.scripts is not None:
            self.scripts.process_before_every_sampling(self, x=x, noise=x, c=conditioning, uc=unconditional_conditioning)
        return self.sampler.sample(self, x, conditioning, unconditional_conditioning,
                                   image_conditioning=x.new_zeros(x.shape[0], 5, 1, 1))


@dataclass
class StableDiffusionProcessingImg2Img(StableDiffusionProcessing):
    init_images: list = field(default_factory=list)
    denoising_strength: float = 0.75

    def sample(self, conditioning, unconditional_conditioning, seeds):
        self.sampler = sd_samplers.create_sampler(self.sampler_name, self.sd_model)
        image = self.init_images[0].convert("RGB").resize((self.width, self.height))
        arr = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
        self.init_latent = self.sd_model.encode_first_stage(arr).repeat(self.batch_size, 1, 1, 1)
        x = self.init_latent
        noise = self.rng.next()
        if self.scripts is not None:
            self.scripts.process_before_every_sampling(self, x=x, noise=noise, c=conditioning, uc=unconditional_conditioning)
        return self.sampler.sample_img2img(self, x, noise, conditioning, unconditional_conditioning,
                                           image_conditioning=x.new_zeros(x.shape[0], 5, 1, 1))


class Processed:
    def __init__(self, p, images, infotexts, index_of_first_image=0):
        self.images = images
        self.infotexts = infotexts
        self.all_seeds = getattr(p, "all_seeds", [])
        self.index_of_first_image = index_of_first_image


def create_infotext(p, all_prompts, all_seeds, all_subseeds, comments=None, iteration=0, position_in_batch=0,
                    use_main_prompt=False, index=None, all_negative_prompts=None):
    if use_main_prompt:
        index = 0
    elif index is None:
        index = position_in_batch + iteration * p.batch_size
    all_negative_prompts = all_negative_prompts or p.all_negative_prompts
    params = {"Steps": p.steps, "Sampler": p.sampler_name, "CFG scale": p.cfg_scale, "Seed": all_seeds[index],
              "Size": f"{p.width}x{p.height}", **p.extra_generation_params}
    for key, value in list(params.items()):
        if callable(value):
            params[key] = value(**locals())
    text = ", ".join(f"{k}: {quote(v)}" for k, v in params.items() if v is not None)
    negative = f"\nNegative prompt: {all_negative_prompts[index]}" if all_negative_prompts[index] else ""
    return f"{all_prompts[index]}{negative}\n{text}"


def process_images(p):
    if p.scripts is not None:
        p.scripts.before_process(p)
    stored = {k: opts.data[k] for k in p.override_settings if k in opts.data}
    try:
        for k, v in p.override_settings.items():
            opts.set(k, v, is_api=True, run_callbacks=False)
        return _process_images_inner(p)
    finally:
        for k, v in stored.items():
            opts.data[k] = v
        for k in p.override_settings:
            if k not in stored:
                opts.data.pop(k, None)


@torch.no_grad()
def _process_images_inner(p):
    p.setup_prompts()
    if p.scripts is not None:
        p.scripts.process(p)
    images = []
    for n in range(p.n_iter):  # as the host: one sampler call per batch, seeds sliced per batch
        batch = slice(n * p.batch_size, (n + 1) * p.batch_size)
        prompts, negatives, seeds = p.all_prompts[batch], p.all_negative_prompts[batch], p.all_seeds[batch]
        p.c = prompt_parser.get_multicond_learned_conditioning(p.sd_model, prompts, p.steps)
        p.uc = prompt_parser.get_learned_conditioning(p.sd_model, negatives, p.steps)
        p.rng = _Rng(seeds, (4, p.height // 8, p.width // 8))
        samples = p.sample(p.c, p.uc, seeds)
        p.samples = samples
        decoded = (p.sd_model.decode_first_stage(samples) / 2 + 0.5).clamp(0, 1)
        images += [Image.fromarray(np.round(img.permute(1, 2, 0).numpy() * 255).astype(np.uint8)) for img in decoded]
    # as the host's per-image infotext (processing.py:1026): the index is given, position_in_batch is not
    infotexts = [create_infotext(p, p.all_prompts, p.all_seeds, [], index=i) for i in range(len(images))]
    first = 0
    if opts.return_grid and not p.do_not_save_grid and not (len(images) < 2 and opts.grid_only_if_multiple):
        grid = Image.new("RGB", (sum(im.width for im in images), images[0].height))
        for k, im in enumerate(images):
            grid.paste(im, (k * im.width, 0))
        images.insert(0, grid)
        infotexts.insert(0, create_infotext(p, p.all_prompts, p.all_seeds, [], use_main_prompt=True))
        first = 1
    processed = Processed(p, images, infotexts, first)
    if p.scripts is not None:
        p.scripts.postprocess(p, processed)
    return processed
