"""The panel: a mount point the canvas script fills, and the one hidden field holding the spec.

Everything a user edits (Enable, boxes, prompts, keywords, feather, Advanced options) lives in
``javascript/mrgd.js`` and is written as the edit spec JSON into the hidden textbox with the
WebUI's ``updateInput``; pasting an infotext writes the same textbox and the script redraws.
Region files of other tools pasted into *Import / export* go through a hidden button to the
Python importer (one importer for the CLI, the API and the panel) and come back as a spec.
"""

from __future__ import annotations

import dataclasses
import html
import itertools
import json

from ..importer import import_text
from ..errors import SpecError
from ..spec import MAX_REGIONS, Options, Region, RegionKind

TITLE = "Multi-Region Guided Diffusion"

# The Advanced section's label and help of every option (a test checks none is missing).
OPTION_TEXT = {
    "guidance": ("Guidance", "CLIPSeg multi-region guidance (RS, IS, IP losses)"),
    "kssa": ("KSSA", "keyword-selected self-attention in r_total"),
    "total_region": ("r_total", "the whole image with all prompts, late in sampling"),
    "keyword_selection": ("Keyword selection", "add each region's lowest-entropy words to its keywords"),
    "lambda_rs": ("λ RS", "weight of the region-specific loss (mask mass outside its box)"),
    "lambda_is": ("λ IS", "weight of the inter-image loss (InfoNCE of source and target masks)"),
    "lambda_ip": ("λ IP", "weight of the inherent-preservation loss (the unedited area)"),
    "is_start": ("IS from", "fraction of the steps from which IS applies"),
    "ip_start": ("IP from", "fraction of the steps from which IP applies"),
    "nce_temperature": ("IS temperature", "InfoNCE temperature of the IS loss"),
    "guidance_every": ("Guide every", "guide every k-th sampler step"),
    "guidance_decode_scale": ("Guidance decode scale", "decode for guidance at this fraction of the size (0.125 to 1)"),
    "guidance_decoder": ("Guidance decoder", "vae: the model's VAE; tiny: a tiny autoencoder (standalone only, much faster, another gradient)"),
    "guidance_check": ("Guidance check", "measure the loss again after each correction (one more decode per guided step)"),
    "t_total": ("T_total", "r_total joins for this last fraction of the steps"),
    "t_total_add_remove": ("T_total (add/remove)", "...or this one when the edit adds or removes an object"),
    "keyword_count": ("Keywords per region", "lowest-entropy words selected per region"),
    "keyword_steps": ("Keyword steps", "fractions of sampling at which keywords are selected, comma separated"),
    "kssa_factor": ("KSSA factor", "self-attention logit factor toward keyword pixels (1 = off)"),
    "kssa_blocks": ("KSSA blocks", "UNet blocks where KSSA acts: down, mid, up"),
    "self_replace_factor": ("Self-attention size", "inject self-attention on maps of at most (latent side / this)² pixels"),
    "img2img_inversion": ("img2img inversion", "img2img: start from the init image's null-text inversion (DDIM samplers)"),
    "inject_background": ("Inject background", "cross, self: fractions of steps the background inherits the source's attention"),
    "inject_inherent": ("Inject kept regions", "cross, self: ...for regions that stay as they are"),
    "inject_edit": ("Inject changed regions", "cross, self: ...for attribute changes"),
    "inject_total": ("Inject r_total", "cross, self: ...for r_total, counted from the step it joins"),
}


def panel_config(max_regions: int = MAX_REGIONS) -> dict:
    """What the canvas starts from, from the spec module (one source of truth): option defaults,
    labels and help, a new region's fields, the badge of each region kind, and the maximum
    number of boxes (the extension's setting)."""
    region = {f.name: f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
              for f in dataclasses.fields(Region) if f.name != "box"}
    return {"options": Options().to_dict(), "option_text": OPTION_TEXT, "region": region,
            "badges": {kind.value: kind.badge for kind in RegionKind}, "max_regions": int(max_regions)}


def build_panel(tab: str, max_regions: int = MAX_REGIONS):
    """Create the panel's components inside the current Gradio block; returns the spec textbox."""
    import gradio as gr

    config = json.dumps(panel_config(max_regions), ensure_ascii=False)
    with gr.Accordion(TITLE, open=False, elem_id=f"{tab}_mrgd"):
        gr.HTML(f'<div class="mrgd-root" id="{tab}_mrgd_root" data-tab="{tab}" '
                f'data-defaults="{html.escape(config, quote=True)}"></div>')
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
