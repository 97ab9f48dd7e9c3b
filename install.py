"""Run by the WebUI at start-up: install only what the WebUI does not already ship.

mrgd needs torch, transformers, open_clip_torch, numpy, Pillow, safetensors, huggingface_hub and
gradio, all of which WebUI v1.10 provides; nothing is installed unless one is missing.
"""

import launch

NEEDED = {
    "torch": "torch",
    "transformers": "transformers",
    "open_clip": "open-clip-torch",
    "safetensors": "safetensors",
    "huggingface_hub": "huggingface-hub",
    "yaml": "PyYAML",
}

for module, package in NEEDED.items():
    if not launch.is_installed(module):
        launch.run_pip(f"install {package}", f"{package} for Multi-Region Guided Diffusion")
