"""Acceptance in a real WebUI (run by hand against a running server started with --api):

    python tests/acceptance/webui_api.py --url http://127.0.0.1:7860 [--size 128]

Checks: the script is listed; one spec dict gives a source and a target with DDIM and with
Euler a, and no grid; a bad spec is refused with its field path (regions counted from 1) and the
server keeps serving; "enabled" must be a boolean; a prompt comment and an extra-network tag do
not change the edit; img2img with DDIM eta 1 runs the inversion at eta 0 and says so; a plain
generation after all that is bit-identical to one made before. Prints one line per check and
exits non-zero on the first failure.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import sys
import time

import requests
from PIL import Image

TITLE = "multi-region guided diffusion"


def spec() -> dict:
    return {"regions": [
        {"box": [0.0, 0.25, 0.5, 0.6], "source": "a girl in a red sweater", "target": "a girl in a blue sweater",
         "keywords": ["girl"]},
        {"box": [0.5, 0.25, 0.5, 0.5], "source": "", "target": "a dog"},
    ]}


def pixels(images: list[str]) -> list[bytes]:
    """The decoded pixels: the PNG bytes also hold the infotext, which names the prompt."""
    return [Image.open(io.BytesIO(base64.b64decode(im))).convert("RGB").tobytes() for im in images]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:7860")
    ap.add_argument("--size", type=int, default=128)
    args = ap.parse_args()
    url = args.url.rstrip("/")
    base = {"prompt": "a living room, best quality", "negative_prompt": "blurry", "seed": 1234, "steps": 6,
            "cfg_scale": 7, "width": args.size, "height": args.size, "sampler_name": "DDIM"}

    def check(name, ok, detail=""):
        print(f"{'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)
        if not ok:
            sys.exit(1)

    def txt2img(payload):
        t0 = time.perf_counter()
        r = requests.post(f"{url}/sdapi/v1/txt2img", json=payload, timeout=600)
        return r, time.perf_counter() - t0

    scripts = requests.get(f"{url}/sdapi/v1/scripts", timeout=60).json()
    check("listed in /sdapi/v1/scripts", TITLE in scripts["txt2img"] and TITLE in scripts["img2img"])
    info = [s for s in requests.get(f"{url}/sdapi/v1/script-info", timeout=60).json() if s["name"] == TITLE]
    check("listed in /sdapi/v1/script-info", len(info) == 2 and all(s["is_alwayson"] for s in info),
          f"args {[a['label'] for a in info[0]['args']]}")

    r, _ = txt2img(base)
    check("plain generation before", r.status_code == 200 and len(r.json()["images"]) == 1)
    plain_before = r.json()["images"][0]

    for sampler in ("DDIM", "Euler a"):
        r, took = txt2img({**base, "sampler_name": sampler,
                           "alwayson_scripts": {TITLE: {"args": [spec()]}}})
        ok = r.status_code == 200
        body = r.json() if ok else {}
        images = body.get("images", [])
        infotexts = json.loads(body.get("info", "{}")).get("infotexts", [])
        check(f"edit with {sampler}", ok and len(images) == 2 and all("MRGD: " in t for t in infotexts),
              f"{len(images)} images, {took:.1f} s" if ok else r.text[:300])
        a, b = (Image.open(io.BytesIO(base64.b64decode(im))) for im in images)
        check(f"  source and target differ ({sampler})", a.tobytes() != b.tobytes())
        check(f"  image names in infotext ({sampler})",
              "MRGD image: source" in infotexts[0] and "MRGD image: target" in infotexts[1])

    r, _ = txt2img({**base, "alwayson_scripts": {TITLE: {"args": [json.dumps(spec())]}}})
    check("edit with the spec as a JSON string", r.status_code == 200 and len(r.json()["images"]) == 2)
    edited = r.json()["images"]

    r, _ = txt2img({**base, "save_images": True, "alwayson_scripts": {TITLE: {"args": [spec()]}}})
    check("no grid for the pair, also when saving", r.status_code == 200 and len(r.json()["images"]) == 2)

    noisy = {**base, "prompt": base["prompt"] + " <lora:not_installed:0.5>\n# a note",
             "alwayson_scripts": {TITLE: {"args": [spec()]}}}
    r, _ = txt2img(noisy)
    check("a prompt comment and an extra-network tag leave the edit as it was",
          r.status_code == 200 and pixels(r.json()["images"]) == pixels(edited), f"HTTP {r.status_code}")

    for value in ("false", 0):
        r, _ = txt2img({**base, "alwayson_scripts": {TITLE: {"args": [{**spec(), "enabled": value}]}}})
        check(f'"enabled": {value!r} is refused', r.status_code >= 400 and "enabled: expected true or false" in r.text,
              f"HTTP {r.status_code}: {r.text[:200]}")

    photo = requests.post(f"{url}/sdapi/v1/txt2img", json=base, timeout=600).json()["images"][0]
    img = {**base, "init_images": [photo], "denoising_strength": 0.8, "sampler_name": "DDIM",
           "alwayson_scripts": {TITLE: {"args": [{**spec(), "options": {"guidance": False}}]}}}
    at_zero = requests.post(f"{url}/sdapi/v1/img2img", json={**img, "eta": 0.0}, timeout=600)
    at_one = requests.post(f"{url}/sdapi/v1/img2img", json={**img, "eta": 1.0}, timeout=600)
    note = json.loads(at_one.json().get("info", "{}")).get("infotexts", [""])[0] if at_one.ok else at_one.text
    check("img2img inversion runs at eta 0 and says so",
          at_zero.ok and at_one.ok and pixels(at_zero.json()["images"]) == pixels(at_one.json()["images"])
          and "set to 0 for img2img inversion" in note, note[-200:])

    bad = {"regions": [{"box": [0.1, 0.2, 0.3, 0.0], "source": "a cat"}]}
    r, _ = txt2img({**base, "alwayson_scripts": {TITLE: {"args": [bad]}}})
    check("bad spec refused with its field path", r.status_code >= 400 and "region 1 (regions[0].box): height must be > 0" in r.text,
          f"HTTP {r.status_code}: {r.text[:200]}")
    r, _ = txt2img({**base, "alwayson_scripts": {TITLE: {"args": [spec()]}}})
    check("server keeps serving after the error", r.status_code == 200 and len(r.json()["images"]) == 2)

    r, _ = txt2img({**base, "alwayson_scripts": {TITLE: {"args": [{**spec(), "enabled": False}]}}})
    check('"enabled": false switches it off', r.status_code == 200 and len(r.json()["images"]) == 1)

    r, _ = txt2img(base)
    check("plain generation after is bit-identical to before", r.status_code == 200 and r.json()["images"][0] == plain_before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
