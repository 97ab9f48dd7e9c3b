"""The panel: a mount point the canvas script fills, and the one hidden field holding the spec.

Everything a user edits (Enable, boxes, prompts, keywords, feather, Advanced options) lives in
``javascript/mrgd.js`` and is written as the edit spec JSON into the hidden textbox with the
WebUI's ``updateInput``; pasting an infotext writes the same textbox and the script redraws.
"""

from __future__ import annotations

import html
import json

from ..spec import MAX_REGIONS, Options

TITLE = "Multi-Region Guided Diffusion"


def defaults_json() -> str:
    """The option defaults the canvas starts from (one source of truth: the spec module)."""
    return json.dumps({"options": Options().to_dict(), "max_regions": MAX_REGIONS})


def build_panel(tab: str):
    """Create the panel's components inside the current Gradio block; returns the spec textbox."""
    import gradio as gr

    with gr.Accordion(TITLE, open=False, elem_id=f"{tab}_mrgd"):
        gr.HTML(f'<div class="mrgd-root" id="{tab}_mrgd_root" data-tab="{tab}" '
                f'data-defaults="{html.escape(defaults_json(), quote=True)}"></div>')
        spec = gr.Textbox(value="", label="MRGD spec (JSON)", show_label=False, lines=1,
                          elem_id=f"{tab}_mrgd_spec", elem_classes=["mrgd-hidden"])
    return spec
