class InterruptedException(BaseException):
    pass


class SamplerConfig:
    def __init__(self, name, second_order=False):
        self.name = name
        self.second_order = second_order
        self.options = {}

    def total_steps(self, steps):
        return steps * 2 - 1 if self.second_order else steps


class Sampler:
    def __init__(self, funcname):
        self.funcname = funcname
        self.config = None
        self.last_latent = None

    def launch_sampling(self, steps, func):
        from modules.shared import state

        self.model_wrap_cfg.steps = steps
        self.model_wrap_cfg.total_steps = self.config.total_steps(steps)
        self.model_wrap_cfg.step = 0
        state.sampling_steps, state.sampling_step = steps, 0
        try:
            return func()
        except InterruptedException:
            return self.last_latent


def setup_img2img_steps(p, steps=None):
    """The host's default (img2img_fix_steps off)."""
    steps = p.steps
    t_enc = int(min(p.denoising_strength, 0.999) * steps)
    return steps, t_enc
