"""Script and a runner that dispatches hooks to always-on scripts; like the host, an exception in
a hook is logged and generation goes on."""

import logging
import traceback

AlwaysVisible = object()
log = logging.getLogger("standin.scripts")


class Script:
    filename = None
    args_from = None
    args_to = None
    alwayson = False
    is_txt2img = False
    is_img2img = False
    infotext_fields = None
    paste_field_names = None

    def title(self):
        raise NotImplementedError

    def show(self, is_img2img):
        return True

    def ui(self, is_img2img):
        pass

    def before_process(self, p, *args):
        pass

    def process(self, p, *args):
        pass

    def process_before_every_sampling(self, p, *args, **kwargs):
        pass

    def postprocess(self, p, processed, *args):
        pass


class ScriptRunner:
    """script_args as the host lays them out: [selected script's 1-based index (0: none), the
    selectable scripts' args..., the always-on scripts' args...]."""

    def __init__(self, scripts, selectable=()):
        self.alwayson_scripts = scripts
        self.selectable_scripts = list(selectable)
        self.errors = []

    def run(self, p, *args):
        index = args[0] if args else 0
        if not index:
            return None
        script = self.selectable_scripts[index - 1]
        return script.run(p, *args[script.args_from:script.args_to])

    def _each(self, method, p, *extra, **kwargs):
        for script in self.alwayson_scripts:
            args = p.script_args[script.args_from:script.args_to]
            try:
                getattr(script, method)(p, *extra, *args, **kwargs)
            except Exception:
                self.errors.append(traceback.format_exc())
                log.error("Error running %s: %s", method, script.filename)

    def before_process(self, p):
        self._each("before_process", p)

    def process(self, p):
        self._each("process", p)

    def process_before_every_sampling(self, p, **kwargs):
        self._each("process_before_every_sampling", p, **kwargs)

    def postprocess(self, p, processed):
        self._each("postprocess", p, processed)
