"""opts, state, sd_model and OptionInfo as the extension sees them."""


class OptionInfo:
    def __init__(self, default=None, label="", component=None, component_args=None, section=None, **kwargs):
        self.default, self.label, self.component, self.component_args = default, label, component, component_args
        self.section = section


class Options:
    def __init__(self):
        self.data = {}
        self.data_labels = {}
        self.defaults = {
            "batch_cond_uncond": True, "skip_early_cond": 0.0, "s_min_uncond_all": False,
            "pad_cond_uncond": False, "pad_cond_uncond_v0": False, "token_merging_ratio": 0.0,
            "token_merging_ratio_hr": 0.0, "token_merging_ratio_img2img": 0.0,
            "hypertile_enable_unet": False, "hypertile_enable_unet_secondpass": False,
            "enable_prompt_comments": True, "eta_ddim": 0.0, "return_grid": True, "grid_only_if_multiple": True,
        }

    def add_option(self, key, info):
        self.data_labels[key] = info
        self.defaults.setdefault(key, info.default)

    def set(self, key, value, is_api=False, run_callbacks=True):
        self.data[key] = value

    def get_default(self, key):
        return self.defaults.get(key)

    def __getattr__(self, key):
        if key in ("data", "data_labels", "defaults"):
            raise AttributeError(key)
        if key in self.data:
            return self.data[key]
        if key in self.defaults:
            return self.defaults[key]
        raise AttributeError(key)


class State:
    def __init__(self):
        self.interrupted = False
        self.skipped = False
        self.sampling_step = 0
        self.sampling_steps = 0
        self.textinfo = None
        self.job = ""


opts = Options()
state = State()
sd_model = None
