"""The CFG denoiser with the host's batch layout: [cond per image..., uncond per image...],
sent whole, in slices when batch_cond_uncond is off, or as separate cond/uncond calls when their
token lengths differ."""

import torch

from modules import prompt_parser, sd_samplers_common
from modules.shared import opts, state


def catenate_conds(conds):
    return torch.cat(conds)


class CFGDenoiser(torch.nn.Module):
    def __init__(self, sampler):
        super().__init__()
        self.sampler = sampler
        self.model_wrap = None
        self.step = 0
        self.steps = None
        self.total_steps = None
        self.p = None

    @property
    def inner_model(self):
        raise NotImplementedError

    def update_inner_model(self):
        self.model_wrap = None

    def combine_denoised(self, x_out, conds_list, uncond, cond_scale):
        denoised_uncond = x_out[-uncond.shape[0]:]
        denoised = torch.clone(denoised_uncond)
        for i, conds in enumerate(conds_list):
            for cond_index, weight in conds:
                denoised[i] += (x_out[cond_index] - denoised_uncond[i]) * (weight * cond_scale)
        return denoised

    def forward(self, x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond):
        if state.interrupted or state.skipped:
            raise sd_samplers_common.InterruptedException
        sd_samplers_common.apply_refiner(self, sigma)
        conds_list, tensor = prompt_parser.reconstruct_multicond_batch(cond, self.step)
        uncond = prompt_parser.reconstruct_cond_batch(uncond, self.step)
        batch_size = len(conds_list)
        repeats = [len(conds_list[i]) for i in range(batch_size)]
        x_in = torch.cat([torch.stack([x[i] for _ in range(n)]) for i, n in enumerate(repeats)] + [x])
        sigma_in = torch.cat([torch.stack([sigma[i] for _ in range(n)]) for i, n in enumerate(repeats)] + [sigma])
        image_cond_in = torch.cat([torch.stack([image_cond[i] for _ in range(n)]) for i, n in enumerate(repeats)] + [image_cond])

        def make(c, ic):
            return {"c_crossattn": [c], "c_concat": [ic]}

        if tensor.shape[1] == uncond.shape[1]:
            cond_in = catenate_conds([tensor, uncond])
            if opts.batch_cond_uncond:
                x_out = self.inner_model(x_in, sigma_in, cond=make(cond_in, image_cond_in))
            else:
                x_out = torch.zeros_like(x_in)
                for a in range(0, x_out.shape[0], batch_size):
                    b = a + batch_size
                    x_out[a:b] = self.inner_model(x_in[a:b], sigma_in[a:b], cond=make(cond_in[a:b], image_cond_in[a:b]))
        else:
            x_out = torch.zeros_like(x_in)
            step = batch_size * 2 if opts.batch_cond_uncond else batch_size
            for a in range(0, tensor.shape[0], step):
                b = min(a + step, tensor.shape[0])
                x_out[a:b] = self.inner_model(x_in[a:b], sigma_in[a:b], cond=make(tensor[a:b], image_cond_in[a:b]))
            n = uncond.shape[0]
            x_out[-n:] = self.inner_model(x_in[-n:], sigma_in[-n:], cond=make(uncond, image_cond_in[-n:]))
        denoised = self.combine_denoised(x_out, conds_list, uncond, cond_scale)
        self.step += 1
        return denoised
