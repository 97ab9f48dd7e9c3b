"""DDIM as the host runs it: the CFG denoiser gets whole-number timesteps as a float "sigma"
and the inner model returns eps."""

import torch

from modules import sd_samplers_cfg_denoiser, sd_samplers_common, shared
from modules.shared import state


class CompVisTimestepsDenoiser(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.inner_model = model

    def forward(self, input, timesteps, **kwargs):
        return self.inner_model.apply_model(input, timesteps, **kwargs)


class CFGDenoiserTimesteps(sd_samplers_cfg_denoiser.CFGDenoiser):
    @property
    def inner_model(self):
        if self.model_wrap is None:
            self.model_wrap = CompVisTimestepsDenoiser(shared.sd_model)
        return self.model_wrap


class CompVisSampler(sd_samplers_common.Sampler):
    def __init__(self, funcname, sd_model):
        super().__init__(funcname)
        self.model_wrap_cfg = CFGDenoiserTimesteps(self)
        self.model_wrap = self.model_wrap_cfg.inner_model

    def get_timesteps(self, p, steps):
        return torch.clip(torch.asarray(list(range(0, 1000, 1000 // steps))) + 1, 0, 999)

    def _ddim(self, x, timesteps, extra_args, start=None):
        alphas_cumprod = shared.sd_model.alphas_cumprod
        ts = timesteps.tolist()
        alphas = alphas_cumprod[ts]
        alphas_prev = alphas_cumprod[[0] + ts[:-1]]
        indices = list(range(len(ts)))[::-1] if start is None else list(range(start))[::-1]
        s_in = x.new_ones([x.shape[0]])
        for i in indices:
            self.last_latent = x
            eps = self.model_wrap_cfg(x, ts[i] * s_in.float(), **extra_args)
            a, a_prev = alphas[i].item(), alphas_prev[i].item()
            pred_x0 = (x - (1 - a) ** 0.5 * eps) / a**0.5
            x = a_prev**0.5 * pred_x0 + (1 - a_prev) ** 0.5 * eps
            state.sampling_step += 1
        return x

    def _extra(self, p, conditioning, unconditional_conditioning, image_conditioning):
        self.model_wrap_cfg.p = p
        return {"cond": conditioning, "image_cond": image_conditioning, "uncond": unconditional_conditioning,
                "cond_scale": p.cfg_scale, "s_min_uncond": 0.0}

    def sample(self, p, x, conditioning, unconditional_conditioning, steps=None, image_conditioning=None):
        steps = steps or p.steps
        extra = self._extra(p, conditioning, unconditional_conditioning, image_conditioning)
        timesteps = self.get_timesteps(p, steps)
        self.last_latent = x
        return self.launch_sampling(steps, lambda: self._ddim(x, timesteps, extra))

    def sample_img2img(self, p, x, noise, conditioning, unconditional_conditioning, steps=None, image_conditioning=None):
        steps = steps or p.steps
        t_enc = max(1, int(min(p.denoising_strength, 0.999) * steps))
        timesteps = self.get_timesteps(p, steps)
        a = shared.sd_model.alphas_cumprod[timesteps[t_enc - 1]].item()
        xi = x * a**0.5 + noise * (1 - a) ** 0.5
        extra = self._extra(p, conditioning, unconditional_conditioning, image_conditioning)
        self.last_latent = xi
        return self.launch_sampling(t_enc, lambda: self._ddim(xi, timesteps, extra, start=t_enc))
