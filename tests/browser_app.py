"""A small Gradio 3.41 app that mounts the MRGD panel and loads the extension's script and style
the way the WebUI does (script and style tags injected into the page), with the few WebUI
helpers the script uses (gradioApp, onUiLoaded, updateInput) and stand-ins of the fields it reads."""

from __future__ import annotations

import socket
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TAB = "txt2img"

# The WebUI's helper functions, re-stated: the page's gradio root, a callback once the UI exists,
# and an input event that makes Gradio read a value set from script.
HELPERS = """
function gradioApp() {
    const elem = document.getElementsByTagName('gradio-app')[0] || document;
    return elem.shadowRoot ? elem.shadowRoot : elem;
}
var uiLoadedCallbacks = [];
function onUiLoaded(callback) { uiLoadedCallbacks.push(callback); }
function updateInput(target) {
    const e = new Event("input", {bubbles: true});
    Object.defineProperty(e, "target", {value: target});
    target.dispatchEvent(e);
}
(function waitForUi() {
    const observer = new MutationObserver(() => {
        if (gradioApp().querySelector('#txt2img_mrgd_root')) {
            observer.disconnect();
            uiLoadedCallbacks.forEach((cb) => cb());
        }
    });
    observer.observe(document, {childList: true, subtree: true});
})();
"""

PASTED = ('{"version":1,"regions":[{"box":[0.5,0.5,0.25,0.25],"source":"a cat","target":"a cat",'
          '"keywords":["cat"],"feather":0.3,"negative":""}],"options":{"kssa":false}}')


def _inject_assets() -> None:
    """Put our script and style into every page Gradio renders, as the WebUI does for extensions."""
    import gradio.routes

    if getattr(gradio.routes.templates, "mrgd_injected", False):
        return
    original = gradio.routes.templates.TemplateResponse
    head = (f"<script>{HELPERS}</script>\n<script>{(ROOT / 'javascript' / 'mrgd.js').read_text()}</script>\n"
            f"<style>{(ROOT / 'style.css').read_text()}</style>")

    def response(*args, **kwargs):
        res = original(*args, **kwargs)
        res.body = res.body.replace(b"</head>", head.encode() + b"</head>")
        res.init_headers()
        return res

    gradio.routes.templates.TemplateResponse = response
    gradio.routes.templates.mrgd_injected = True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build():
    import gradio as gr

    from lib_mrgd.webui.session import pasted_value
    from lib_mrgd.webui.ui import build_panel

    _inject_assets()
    with gr.Blocks(analytics_enabled=False) as demo:
        gr.Textbox(label="Prompt", elem_id=f"{TAB}_prompt", value="a living room")
        with gr.Row():
            gr.Slider(64, 2048, value=512, step=8, label="Width", elem_id=f"{TAB}_width")
            gr.Slider(64, 2048, value=384, step=8, label="Height", elem_id=f"{TAB}_height")
        spec = build_panel(TAB)
        received = gr.Textbox(label="received by Python", elem_id="received")
        gr.Button("Generate", elem_id="generate").click(lambda s: s, inputs=[spec], outputs=[received])
        gr.Button("Paste infotext", elem_id="paste").click(lambda: PASTED, outputs=[spec])
        # what the host's paste writes for an infotext without an MRGD field
        gr.Button("Paste plain infotext", elem_id="paste_plain").click(lambda: pasted_value({"Steps": "20"}), outputs=[spec])
    return demo


def launch():
    demo = build()
    port = free_port()
    demo.queue(concurrency_count=1).launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True,
                                           quiet=True, show_api=False)
    return demo, f"http://127.0.0.1:{port}/"
