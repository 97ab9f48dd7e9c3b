"""k-diffusion samplers as the host runs them: the inner CompVisDenoiser takes sigma and returns
x0; "Euler a" adds noise from the processing object's generator."""

import torch

from modules import sd_samplers_cfg_denoiser, sd_samplers_common, shared


class CompVisDenoiser(torch.nn.Module):
    """k-diffusion's DiscreteEpsDDPMDenoiser for a CompVis model."""

    def __init__(self, model):
        super().__init__()
        self.inner_model = model
        self.register_buffer("sigmas", ((1 - model.alphas_cumprod) / model.alphas_cumprod) ** 0.5)
        self.register_buffer("log_sigmas", self.sigmas.log())

    def sigma_to_t(self, sigma):
        log_sigma = sigma.log()
        dists = log_sigma - self.log_sigmas[:, None]
        low_idx = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=self.log_sigmas.shape[0] - 2)
        high_idx = low_idx + 1
        low, high = self.log_sigmas[low_idx], self.log_sigmas[high_idx]
        w = ((low - log_sigma) / (low - high)).clamp(0, 1)
        return ((1 - w) * low_idx + w * high_idx).view(sigma.shape)

    def forward(self, input, sigma, **kwargs):
        c_in = (1 / (sigma**2 + 1) ** 0.5)[:, None, None, None]
        eps = self.inner_model.apply_model(input * c_in, self.sigma_to_t(sigma), **kwargs)
        return input + eps * (-sigma)[:, None, None, None]


class CFGDenoiserKDiffusion(sd_samplers_cfg_denoiser.CFGDenoiser):
    @property
    def inner_model(self):
        if self.model_wrap is None:
            self.model_wrap = CompVisDenoiser(shared.sd_model)
        return self.model_wrap


class KDiffusionSampler(sd_samplers_common.Sampler):
    def __init__(self, funcname, sd_model):
        super().__init__(funcname)
        self.model_wrap_cfg = CFGDenoiserKDiffusion(self)
        self.model_wrap = self.model_wrap_cfg.inner_model

    def get_sigmas(self, p, steps):
        sigmas = self.model_wrap.sigmas
        idx = torch.linspace(len(sigmas) - 1, 0, steps)
        return torch.cat([sigmas[idx.round().long()], sigmas.new_zeros(1)])

    def _euler_ancestral(self, x, sigmas, extra, gen):
        s_in = x.new_ones([x.shape[0]])
        for i in range(len(sigmas) - 1):
            self.last_latent = x
            denoised = self.model_wrap_cfg(x, sigmas[i] * s_in, **extra)
            sigma_up = min(sigmas[i + 1], (sigmas[i + 1] ** 2 * (sigmas[i] ** 2 - sigmas[i + 1] ** 2) / sigmas[i] ** 2) ** 0.5)
            sigma_down = (sigmas[i + 1] ** 2 - sigma_up**2) ** 0.5
            x = x + (x - denoised) / sigmas[i] * (sigma_down - sigmas[i])
            if sigmas[i + 1] > 0:
                x = x + gen(x.shape) * sigma_up
            self.callback_state({"i": i})
        return x

    def _heun(self, x, sigmas, extra, gen):
        """Second order: two model calls per step (the last step takes one)."""
        s_in = x.new_ones([x.shape[0]])
        for i in range(len(sigmas) - 1):
            self.last_latent = x
            denoised = self.model_wrap_cfg(x, sigmas[i] * s_in, **extra)
            d = (x - denoised) / sigmas[i]
            dt = sigmas[i + 1] - sigmas[i]
            if sigmas[i + 1] == 0:
                x = x + d * dt
            else:
                x_2 = x + d * dt
                d_2 = (x_2 - self.model_wrap_cfg(x_2, sigmas[i + 1] * s_in, **extra)) / sigmas[i + 1]
                x = x + (d + d_2) / 2 * dt
            self.callback_state({"i": i})
        return x

    def _run(self, x, sigmas, extra, gen):
        method = self._heun if self.funcname == "sample_heun" else self._euler_ancestral
        return method(x, sigmas, extra, gen)

    def sample(self, p, x, conditioning, unconditional_conditioning, steps=None, image_conditioning=None):
        steps = steps or p.steps
        sigmas = self.get_sigmas(p, steps)
        self.model_wrap_cfg.p = p
        extra = {"cond": conditioning, "image_cond": image_conditioning, "uncond": unconditional_conditioning,
                 "cond_scale": p.cfg_scale, "s_min_uncond": 0.0}
        x = x * sigmas[0]
        self.last_latent = x
        return self.launch_sampling(steps, lambda: self._run(x, sigmas, extra, p.rng.ancestral))

    def sample_img2img(self, p, x, noise, conditioning, unconditional_conditioning, steps=None, image_conditioning=None):
        steps, t_enc = sd_samplers_common.setup_img2img_steps(p, steps)
        sigma_sched = self.get_sigmas(p, steps)[steps - t_enc - 1:]
        self.model_wrap_cfg.p = p
        extra = {"cond": conditioning, "image_cond": image_conditioning, "uncond": unconditional_conditioning,
                 "cond_scale": p.cfg_scale, "s_min_uncond": 0.0}
        xi = x + noise * sigma_sched[0]
        self.last_latent = xi
        return self.launch_sampling(t_enc + 1, lambda: self._run(xi, sigma_sched, extra, p.rng.ancestral))
