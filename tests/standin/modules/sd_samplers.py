from modules import sd_samplers_common, sd_samplers_kdiffusion, sd_samplers_timesteps


def create_sampler(name, model):
    if name == "DDIM":
        sampler = sd_samplers_timesteps.CompVisSampler("ddim", model)
    elif name == "Euler a":
        sampler = sd_samplers_kdiffusion.KDiffusionSampler("sample_euler_ancestral", model)
    elif name == "Heun":
        sampler = sd_samplers_kdiffusion.KDiffusionSampler("sample_heun", model)
    else:
        raise ValueError(f"stand-in has no sampler {name}")
    sampler.config = sd_samplers_common.SamplerConfig(name, second_order=name == "Heun")
    return sampler
