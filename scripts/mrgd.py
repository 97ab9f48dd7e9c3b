"""Multi-Region Guided Diffusion for the Stable Diffusion WebUI: a thin always-on script.

All logic lives in ``lib_mrgd``; see lib_mrgd/webui/script.py.
"""

import modules.scripts as scripts

from lib_mrgd.webui import script as mrgd


class Script(scripts.Script):
    def title(self):
        return mrgd.TITLE

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        return mrgd.ui(self, is_img2img)

    def before_process(self, p, *args):
        mrgd.before_process(p, *args)

    def process_before_every_sampling(self, p, *args, **kwargs):
        mrgd.process_before_every_sampling(p, *args, **kwargs)

    def postprocess(self, p, processed, *args):
        mrgd.postprocess(p, processed, *args)


mrgd.register_callbacks()
