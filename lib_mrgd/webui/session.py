"""One MRGD request inside the WebUI: from the script argument to patched sampling and back.

- ``begin`` (``before_process``): read the spec, take size, seed, steps, CFG, sampler and prompts
  from the WebUI's own fields, and turn the request into one batch of two (source, target) with
  the same seed. A bad spec changes nothing on ``p``; the error is raised when sampling starts, so
  the UI shows it and the API answers with the host's error response.
- :class:`lib_mrgd.webui.runtime.Runtime` (``process_before_every_sampling``, once per sampling
  pass) assembles the edit through the engine and patches the sampler for that pass.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any


from ..attention.patcher import sweep
from ..errors import SpecError
from ..spec import EditSpec
from . import host
from .patches import Patches

log = logging.getLogger("mrgd")
INFOTEXT_KEY = "MRGD"
IMAGE_KEY = "MRGD image"
NOTES_KEY = "MRGD notes"
HOST_FIELDS = ("width", "height", "seed", "steps", "cfg_scale", "sampler")
# where the main prompt and negative go: spec.main_prompt_common true -> common, false -> background
MAIN_PROMPT_FIELDS = {True: ("common", "common_negative"), False: ("background", "negative")}


@dataclass
class Session:
    spec: EditSpec | None
    error: SpecError | None = None
    warnings: list[str] = field(default_factory=list)
    keywords: list[dict] = field(default_factory=list)
    guidance: list[dict] = field(default_factory=list)

    def note(self, p, text: str) -> None:
        """A warning for the console and the infotext (what an API client sees)."""
        if text not in self.warnings:
            self.warnings.append(text)
        p.extra_generation_params[NOTES_KEY] = "; ".join(self.warnings)


def read_argument(arg: Any) -> dict | None:
    """The spec as a dict, or None when the script is off (no spec, or ``"enabled": false``)."""
    if arg is None or (isinstance(arg, str) and not arg.strip()):
        return None
    if isinstance(arg, str):
        try:
            arg = json.loads(arg)
        except json.JSONDecodeError as exc:
            raise SpecError("spec", f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from exc
    if not isinstance(arg, dict):
        raise SpecError("spec", f"expected an object, got {type(arg).__name__}")
    # checked first: "false" or 0 must not run the edit, and a switched-off spec is not validated
    if not arg or not EditSpec.from_dict({"enabled": arg.get("enabled", True)}).enabled:
        return None
    return arg


def host_spec(data: dict, p, max_regions: int) -> EditSpec:
    """The spec with the WebUI's own fields filled in (they win over the spec's). The main
    prompt and negative become ``common``/``common_negative`` (every layer's prefix) or, with
    ``main_prompt_common`` false, ``background``/``negative``."""
    from modules import processing

    prompt = p.prompt if isinstance(p.prompt, str) else p.prompt[0]
    negative = p.negative_prompt if isinstance(p.negative_prompt, str) else p.negative_prompt[0]
    seed = p.seed[0] if isinstance(p.seed, list) else p.seed
    merged = {**data, "width": p.width, "height": p.height, "seed": int(processing.get_fixed_seed(seed)),
              "steps": p.steps, "cfg_scale": float(max(p.cfg_scale, 1.0)), "sampler": p.sampler_name or "DDIM"}
    merged.pop("enabled", None)
    mode = merged.get("main_prompt_common", True)
    if isinstance(mode, bool):  # anything else is refused by the spec check below
        main, main_negative = MAIN_PROMPT_FIELDS[mode]
        merged.update({main: prompt or "", main_negative: negative or ""})
    spec = EditSpec.from_dict(merged)
    if len(spec.regions) > max_regions:
        raise SpecError("regions", f"at most {max_regions} region{'s' if max_regions != 1 else ''} "
                                   f"(the MRGD maximum-regions setting), got {len(spec.regions)}")
    return spec


def begin(p, arg: Any, max_regions: int = 16) -> Session | None:
    """``before_process``: validate and, when valid, make ``p`` a source/target batch."""
    sweep(host.unet(p.sd_model))  # hooks a crashed request may have left (postprocess is skipped then)
    try:
        data = read_argument(arg)
        if data is None:
            return None
        host.check_model(p.sd_model)
        spec = host_spec(data, p, max_regions)
        # a p this request already prepared (scripts that call processing again on it) keeps its pairs
        if getattr(p, "batch_size", 1) != 1 and getattr(p, "mrgd_session", None) is None:
            raise SpecError("batch_size", f"MRGD makes each source/target pair as one batch, so batch size "
                                          f"must be 1 (got {p.batch_size}); use batch count for more pairs")
    except SpecError as exc:
        session = Session(None, exc)
        p.mrgd_session = session
        return session
    session = Session(spec)
    # both images share the prompts, so they stay strings (an empty hires prompt copies the prompt,
    # and the host's comment stripping expects a string there); the seed list makes the pair
    main, main_negative = MAIN_PROMPT_FIELDS[spec.main_prompt_common]
    p.prompt = getattr(spec, main)
    p.negative_prompt = getattr(spec, main_negative)
    # batch count N: N pairs, seeds seed .. seed+N-1, each pair one batch with one seed
    pairs = max(1, int(getattr(p, "n_iter", 1) or 1))
    p.seed = [spec.seed + k for k in range(pairs) for _ in range(2)]
    subseed = p.subseed[0] if isinstance(p.subseed, list) else p.subseed
    from modules import processing

    subseed = int(processing.get_fixed_seed(subseed))
    p.subseed = [subseed + k for k in range(pairs) for _ in range(2)]
    p.batch_size, p.n_iter = 2, pairs
    p.do_not_save_grid = True  # the pair is two images, not a grid
    # attention-shape changers would hide the maps attention control reads
    for key in ("token_merging_ratio", "token_merging_ratio_hr", "token_merging_ratio_img2img"):
        p.override_settings[key] = 0.0
    p.override_settings["hypertile_enable_unet"] = False
    p.override_settings["hypertile_enable_unet_secondpass"] = False
    p.extra_generation_params[INFOTEXT_KEY] = infotext_value(spec)
    p.extra_generation_params[IMAGE_KEY] = _image_name
    p.mrgd_session = session
    return session


# a pasted infotext without MRGD switches the panel off and keeps its boxes (the panel script
# reads this; sent as the script's argument it is simply "off")
PASTED_OFF = '{"enabled":false,"keep_regions":true}'


def pasted_value(params: dict) -> str:
    """The spec field's value for a pasted infotext (the host calls this with the parsed fields)."""
    return params.get(INFOTEXT_KEY) or PASTED_OFF


def lead_with_pair(p, processed) -> None:
    """Put the source | target pair first, for scripts that keep a run's first image (X/Y/Z
    plot cells); later infotexts made from ``p`` (the plot's grid) say ``MRGD image: pair``."""
    from PIL import Image

    images = [im for im in processed.images[processed.index_of_first_image:] if im is not None]
    if len(images) < 2:
        return
    source, target = images[:2]
    pair = Image.new(source.mode, (source.width + target.width, max(source.height, target.height)))
    pair.paste(source, (0, 0))
    pair.paste(target, (source.width, 0))
    text = processed.infotexts[processed.index_of_first_image]
    text = text.replace(f"{IMAGE_KEY}: source", f"{IMAGE_KEY}: pair")
    pair.info["parameters"] = text
    processed.images.insert(0, pair)
    processed.infotexts.insert(0, text)
    p.extra_generation_params[IMAGE_KEY] = "pair"


def infotext_value(spec: EditSpec) -> str:
    """The spec without the fields the infotext already carries, as one compact JSON."""
    data = spec.to_dict()
    for key in (*HOST_FIELDS, *MAIN_PROMPT_FIELDS[spec.main_prompt_common], "enabled"):
        data.pop(key, None)
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def _image_name(index: int | None = None, position_in_batch: int = 0, **_) -> str:
    """Called by the host's create_infotext with its locals; the batch is (source, target)."""
    return "source" if (position_in_batch if index is None else index) % 2 == 0 else "target"


def encoded_spec(spec: EditSpec, p, session: Session) -> EditSpec:
    """The spec with every prompt as the host encodes its own (comments stripped, extra-network
    tags removed), so a comment or a LoRA tag does not change what MRGD encodes."""
    def text(t: str) -> str:
        return host.encoded_text(t, p)[0] if t else t

    regions = []
    for i, r in enumerate(spec.regions):
        sides = {}
        for side in ("source", "target"):
            raw = getattr(r, side)
            sides[side], networks = host.encoded_text(raw, p) if raw else (raw, False)
            if raw and not sides[side]:
                raise SpecError(f"regions[{i}].{side}", "nothing is left once comments and extra-network tags are removed")
            if networks:
                session.note(p, f"regions[{i}].{side}: extra networks in a region prompt are not applied "
                                "(networks apply from the main prompt, to the whole image)")
        regions.append(dataclasses.replace(r, **sides, negative=text(r.negative)))
    return dataclasses.replace(spec, background=text(spec.background), negative=text(spec.negative),
                               common=text(spec.common), common_negative=text(spec.common_negative), regions=regions)


def shown(error: SpecError) -> SpecError:
    """The error as the UI shows it: regions counted from 1 as the panel numbers its boxes,
    with the spec's own path kept (``region 1 (regions[0].box): ...``)."""
    match = re.match(r"regions\[(\d+)\]", error.path)
    if not match:
        return error
    return SpecError(f"region {int(match[1]) + 1} ({error.path})", error.reason)


def refuse(p, error: SpecError) -> None:
    """Make sampling fail with ``error``: hooks' own exceptions are only logged by the host."""
    patches = Patches()
    error = shown(error)

    def fail(*args, **kwargs):
        patches.undo()
        raise error

    for name in ("sample", "sample_img2img"):
        if hasattr(p.sampler, name):
            patches.set(p.sampler, name, fail)


def summary(session: Session) -> str:
    """One line for the console after a run."""
    parts = []
    if session.keywords:
        parts.append("keywords " + "; ".join(f"[{k['region']}] {', '.join(k['keywords']) or '-'}" for k in session.keywords))
    checked = [r for r in session.guidance if "after" in r]
    if checked:
        fell = sum(r["after"]["total"] <= r["before"]["total"] for r in checked)
        parts.append(f"guidance lowered the loss at {fell}/{len(checked)} steps")
    elif session.guidance:
        first, last = session.guidance[0]["before"]["total"], session.guidance[-1]["before"]["total"]
        parts.append(f"guidance at {len(session.guidance)} steps (loss {first:.4g} -> {last:.4g})")
    parts += session.warnings
    return "MRGD: " + (" | ".join(parts) if parts else "done")
