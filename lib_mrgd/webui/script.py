"""What the thin ``scripts/mrgd.py`` delegates to: one always-on script in txt2img and img2img.

Hooks: ``before_process`` (read the spec, make the source/target batch), ``process_before_every_sampling``
(patch this pass, undone in a ``finally`` around the sampler call), ``postprocess`` (report). The
script's single argument is the edit spec (a dict or a JSON string); an empty one means off.
"""

from __future__ import annotations

import logging

from ..errors import ModelError, SpecError
from . import host, runtime, session, settings
from .ui import TITLE, build_panel

log = logging.getLogger("mrgd")


def ui(script, is_img2img: bool) -> list:
    spec = build_panel("img2img" if is_img2img else "txt2img", int(settings.get(settings.MAX_REGIONS)))
    # assignments, not appends: the API calls ui() again and it must not pile up
    script.infotext_fields = [(spec, session.pasted_value)]
    script.paste_field_names = [session.INFOTEXT_KEY]
    return [spec]


def before_process(p, spec_arg=None, *args) -> None:
    session.begin(p, spec_arg, int(settings.get(settings.MAX_REGIONS, p)))


def process_before_every_sampling(p, *args, **kwargs) -> None:
    s = getattr(p, "mrgd_session", None)
    if s is None:
        return
    if s.error is not None:
        session.refuse(p, s.error)
        return
    x = kwargs.get("x")
    try:
        device = next(host.unet(p.sd_model).parameters()).device
        runtime.Runtime(p, s, x, guidance_segmenter=lambda: settings.segmenter(device))
    except (SpecError, ModelError) as exc:
        session.refuse(p, exc if isinstance(exc, SpecError) else SpecError("guidance", str(exc)))
    except Exception as exc:  # never generate a silent non-MRGD pair
        log.exception("MRGD could not set up sampling")
        session.refuse(p, SpecError("mrgd", f"{type(exc).__name__}: {exc}"))


def postprocess(p, processed, *args) -> None:
    s = getattr(p, "mrgd_session", None)
    if s is not None and s.error is None:
        print(session.summary(s))
        if host.running_script(p) is not None:  # X/Y/Z plot and kin keep each run's first image
            session.lead_with_pair(p, processed)


def unloaded() -> None:
    """``on_script_unloaded``: leave no hook of ours on the loaded model."""
    from modules import shared

    model = getattr(shared, "sd_model", None)
    if model is not None and hasattr(model, "model"):
        from ..attention.patcher import sweep

        sweep(host.unet(model))


def register_callbacks() -> None:
    from modules import script_callbacks

    script_callbacks.on_ui_settings(settings.register)
    script_callbacks.on_script_unloaded(unloaded)


__all__ = ["TITLE", "before_process", "postprocess", "process_before_every_sampling", "register_callbacks", "ui"]
