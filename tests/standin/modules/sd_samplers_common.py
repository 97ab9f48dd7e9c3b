class InterruptedException(BaseException):
    pass


class SamplerConfig:
    def __init__(self, name, second_order=False):
        self.name = name
        self.second_order = second_order
        self.options = {}

    def total_steps(self, steps):
        return steps * 2 - 1 if self.second_order else steps


def apply_refiner(cfg_denoiser, sigma=None):
    """The host's refiner switch: at ``refiner_switch_at`` of the steps, load the refiner
    checkpoint (here: the model object in ``refiner_checkpoint_info``), send the old model's
    weights away (the host moves them to meta) and rebuild the inner model."""
    from modules import shared

    p = cfg_denoiser.p
    refiner = getattr(p, "refiner_checkpoint_info", None)
    if refiner is None or p.refiner_switch_at is None or shared.sd_model is refiner:
        return False
    if cfg_denoiser.step / cfg_denoiser.total_steps < p.refiner_switch_at:
        return False
    p.extra_generation_params["Refiner"] = "refiner"
    p.extra_generation_params["Refiner switch at"] = p.refiner_switch_at
    old = shared.sd_model
    old.alphas_cumprod = old.alphas_cumprod.to("meta")
    shared.sd_model = refiner
    cfg_denoiser.update_inner_model()
    return True


class Sampler:
    def __init__(self, funcname):
        self.funcname = funcname
        self.config = None
        self.last_latent = None

    def callback_state(self, d):
        from modules.shared import state

        state.sampling_step = d["i"]

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
