"""The panel: a mount point the canvas script fills, and the one hidden field holding the spec.

Everything a user edits (Enable, boxes, prompts, keywords, feather, Advanced options) lives in
``javascript/mrgd.js`` and is written as the edit spec JSON into the hidden textbox with the
WebUI's ``updateInput``; pasting an infotext writes the same textbox and the script redraws.
Region files of other tools pasted into *Import / export* go through a hidden button to the
Python importer (one importer for the CLI, the API and the panel) and come back as a spec.
"""

from __future__ import annotations

import html
import itertools
import json

from ..importer import import_text
from ..spec import MAX_REGIONS, Options, SpecError

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
        source = gr.Textbox(value="", show_label=False, lines=1, elem_id=f"{tab}_mrgd_import",
                            elem_classes=["mrgd-hidden"])
        result = gr.Textbox(value="", show_label=False, lines=1, elem_id=f"{tab}_mrgd_import_result",
                            elem_classes=["mrgd-hidden"])
        run = gr.Button("import", elem_id=f"{tab}_mrgd_import_run", elem_classes=["mrgd-hidden"])
        run.click(fn=import_for_panel, inputs=[source], outputs=[result], show_progress=False)
    return spec


_serial = itertools.count(1)


def import_for_panel(text: str) -> str:
    """The Import box's conversion: ``{"spec", "warnings"}`` or ``{"error"}`` as JSON, with a
    serial number so importing the same text twice is still seen as new."""
    notes: list[str] = []
    try:
        data = {"spec": import_text(text or "", warnings=notes).to_dict(), "warnings": notes}
    except SpecError as exc:
        data = {"error": str(exc)}
    return json.dumps({**data, "serial": next(_serial)}, ensure_ascii=False)
