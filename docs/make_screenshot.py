"""Make ``docs/panel.png``: the MRGD panel with two regions, in headless Chromium.

    python docs/make_screenshot.py [--out docs/panel.png]

Uses the browser tests' small Gradio app (tests/browser_app.py) and Debian's chromium.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

from test_browser import CHROMIUM, FLAGS  # noqa: E402

REGIONS = [((0.10, 0.20), (0.40, 0.70), "a girl in a red sweater", "a girl in a blue sweater"),
           ((0.60, 0.10), (0.90, 0.40), "", "a dog")]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "panel.png"))
    args = parser.parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from playwright.sync_api import sync_playwright

    from browser_app import launch

    demo, url = launch()
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1600})
            page.goto(url)
            page.wait_for_selector("#txt2img_mrgd_root .mrgd-canvas", state="attached", timeout=60_000)
            page.get_by_text("Multi-Region Guided Diffusion").first.click()
            canvas = page.locator("#txt2img_mrgd_root .mrgd-canvas")
            canvas.wait_for(state="visible")
            page.locator("#txt2img_mrgd_root .mrgd-enable").check()
            box = canvas.bounding_box()
            rows = page.locator("#txt2img_mrgd_root .mrgd-region")
            for k, (start, end, source, target) in enumerate(REGIONS):
                page.mouse.move(box["x"] + start[0] * box["width"], box["y"] + start[1] * box["height"])
                page.mouse.down()
                page.mouse.move(box["x"] + end[0] * box["width"], box["y"] + end[1] * box["height"], steps=8)
                page.mouse.up()
                rows.nth(k).locator(".mrgd-source").fill(source)
                rows.nth(k).locator(".mrgd-target").fill(target)
            page.locator("#txt2img_mrgd").screenshot(path=args.out)
            browser.close()
    finally:
        demo.close()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
