"""DDIM as the host runs it: the CFG denoiser gets whole-number timesteps as a float "sigma"
and the inner model returns eps."""

import torch

from modules import sd_samplers_cfg_denoiser, sd_samplers_common, shared


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

    eta_option_field = "eta_ddim"

    def _ddim(self, x, timesteps, extra_args, eta=0.0, noise=None):
        """The host's ddim (sd_samplers_timesteps_impl): len(timesteps) - 1 model calls, from
        timesteps[-1] down to the level of timesteps[0]; eta > 0 adds fresh noise each step."""
        alphas_cumprod = shared.sd_model.alphas_cumprod
        alphas = alphas_cumprod[timesteps]
        alphas_prev = alphas_cumprod[torch.nn.functional.pad(timesteps[:-1], pad=(1, 0))]
        s_in = x.new_ones([x.shape[0]])
        for i in range(len(timesteps) - 1):
            index = len(timesteps) - 1 - i
            self.last_latent = x
            e_t = self.model_wrap_cfg(x, timesteps[index].item() * s_in.float(), **extra_args)
            a_t, a_prev = alphas[index].item(), alphas_prev[index].item()
            pred_x0 = (x - (1 - a_t) ** 0.5 * e_t) / a_t**0.5
            sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)) ** 0.5
            x = a_prev**0.5 * pred_x0 + (1 - a_prev - sigma**2) ** 0.5 * e_t
            if sigma > 0:
                x = x + sigma * noise(x.shape)
            self.callback_state({"i": i})
        return x

    def _eta(self, p):
        from modules.shared import opts

        eta = p.eta if p.eta is not None else getattr(opts, self.eta_option_field, 0.0)
        if eta:
            p.extra_generation_params["Eta DDIM"] = eta
        return eta

    def _extra(self, p, conditioning, unconditional_conditioning, image_conditioning):
        self.model_wrap_cfg.p = p
        return {"cond": conditioning, "image_cond": image_conditioning, "uncond": unconditional_conditioning,
                "cond_scale": p.cfg_scale, "s_min_uncond": 0.0}

    def sample(self, p, x, conditioning, unconditional_conditioning, steps=None, image_conditioning=None):
        steps = steps or p.steps
        extra = self._extra(p, conditioning, unconditional_conditioning, image_conditioning)
        timesteps = self.get_timesteps(p, steps)
        self.last_latent = x
        eta = self._eta(p)
        return self.launch_sampling(steps, lambda: self._ddim(x, timesteps, extra, eta, p.rng.ancestral))

    def sample_img2img(self, p, x, noise, conditioning, unconditional_conditioning, steps=None, image_conditioning=None):
        steps, t_enc = sd_samplers_common.setup_img2img_steps(p, steps)
        timesteps = self.get_timesteps(p, steps)
        alphas_cumprod = shared.sd_model.alphas_cumprod
        a = alphas_cumprod[timesteps[t_enc]]
        xi = x * a.sqrt() + noise * (1 - a).sqrt()
        extra = self._extra(p, conditioning, unconditional_conditioning, image_conditioning)
        self.model_wrap_cfg.init_latent = x
        self.last_latent = x
        eta = self._eta(p)
        return self.launch_sampling(t_enc + 1, lambda: self._ddim(xi, timesteps[:t_enc], extra, eta, p.rng.ancestral))
