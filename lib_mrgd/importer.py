"""Region files of other tools as edit specs.

Reads (a) Tiled Diffusion's region-control JSON (``{"bbox_controls": [...]}``, boxes as fractions),
(b) the MRGD authors' configs, the same format with the edit blend modes and ``key_prompt``, and
(c) an A1111 infotext (text, or a PNG's ``parameters`` chunk) with a ``Tiled Diffusion`` field,
whose ``Region control`` holds the same entries. Mapping, as the authors' code reads these files:

- Background covering the whole image -> ``background`` (its negative -> ``negative``);
- Foreground -> an inherent region (source = target); AdditionForeground -> target only;
  RemovalForeground -> source only; an EditedSource/EditedTarget pair on one box -> one
  attribute region; ``key_prompt`` -> keywords; ``feather_ratio`` -> feather;
- the infotext's main prompt and negative -> ``common``/``common_negative`` (prepended to every
  layer, as Tiled Diffusion and the authors do), and its seed, steps, CFG, sampler and size.
"""

from __future__ import annotations

import ast
import json
import os
import warnings as _warnings
from pathlib import Path
from typing import Any, Iterable

from .spec import EditSpec, SpecError, load_spec

BLEND_MODES = ("Background", "Foreground", "AdditionForeground", "RemovalForeground", "EditedSource",
               "EditedTarget")
INFOTEXT_FIELD = "Tiled Diffusion"
FULL_FRAME_TOLERANCE = 1e-3


class RegionImportWarning(UserWarning):
    """Something in an imported file was changed to fit (a clipped box, per-region seeds)."""


# -- reading the source --------------------------------------------------------------------------


def _read(src: str | os.PathLike | bytes) -> str:
    """The text of ``src``: a path (JSON, infotext .txt or PNG) or the text itself."""
    if isinstance(src, bytes):
        return _png_parameters(src) if src.startswith(b"\x89PNG") else src.decode("utf-8")
    if isinstance(src, str) and ("\n" in src or src.lstrip().startswith("{") or f"{INFOTEXT_FIELD}:" in src):
        return src
    path = Path(src)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise SpecError("import", f"file not found: {path}") from exc
    except OSError as exc:
        raise SpecError("import", f"cannot read {path}: {exc.strerror or exc}") from exc
    if data.startswith(b"\x89PNG"):
        return _png_parameters(data)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpecError("import", f"{path} is neither text nor a PNG") from exc


def _png_parameters(data: bytes) -> str:
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            text = image.info.get("parameters")
    except (UnidentifiedImageError, OSError) as exc:
        raise SpecError("import", f"unreadable PNG: {exc}") from exc
    if not isinstance(text, str):
        raise SpecError("import", "the PNG has no 'parameters' text (no WebUI infotext)")
    return text


# -- infotexts -----------------------------------------------------------------------------------


def parse_parameters(line: str) -> dict[str, str]:
    """The ``Key: value, Key: value`` line of an infotext; quoted values are JSON strings."""
    out: dict[str, str] = {}
    decoder = json.JSONDecoder()
    i, n = 0, len(line)
    while i < n:
        while i < n and line[i] in " ,":
            i += 1
        colon = line.find(":", i)
        if colon < 0:
            break
        key = line[i:colon].strip()
        i = colon + 1
        while i < n and line[i] == " ":
            i += 1
        if i < n and line[i] == '"':
            try:
                value, i = decoder.raw_decode(line, i)
            except json.JSONDecodeError as exc:
                raise SpecError(f"infotext.{key}", "unterminated quoted value") from exc
        else:
            end = line.find(",", i)
            end = n if end < 0 else end
            value, i = line[i:end].strip(), end
        out[key] = value
    return out


def parse_infotext(text: str) -> tuple[str, str, dict[str, str]]:
    """Prompt, negative prompt and parameters of an A1111 infotext."""
    lines = text.strip().splitlines()
    params = {}
    if lines and "Steps:" in lines[-1]:
        params = parse_parameters(lines.pop())
    prompt, negative, in_negative = [], [], False
    for line in lines:
        if line.startswith("Negative prompt:"):
            in_negative, line = True, line[len("Negative prompt:"):].lstrip()
        (negative if in_negative else prompt).append(line)
    return "\n".join(prompt).strip(), "\n".join(negative).strip(), params


def _literal(value: str, path: str) -> Any:
    """Tiled Diffusion writes its field as a Python dict repr; read it without evaluating code."""
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise SpecError(path, "not a readable dict") from exc


def _infotext_fields(params: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "Size" in params:
        try:
            w, h = (int(v) for v in params["Size"].lower().split("x"))
        except ValueError as exc:
            raise SpecError("infotext.Size", f"expected WxH, got {params['Size']!r}") from exc
        out.update(width=w, height=h)
    for key, name, kind in (("Seed", "seed", int), ("Steps", "steps", int), ("CFG scale", "cfg_scale", float)):
        if key in params:
            try:
                out[name] = kind(params[key])
            except ValueError as exc:
                raise SpecError(f"infotext.{key}", f"not a number: {params[key]!r}") from exc
    if params.get("Sampler"):
        out["sampler"] = params["Sampler"]
    return out


# -- regions -------------------------------------------------------------------------------------


def _number(entry: dict, key: str, path: str, default: float | None = None) -> float:
    value = entry.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(f"{path}.{key}", f"expected a number, got {value!r}")
    return float(value)


def _box(entry: dict, path: str, notes: list[str]) -> list[float]:
    x, y, w, h = (_number(entry, k, path) for k in ("x", "y", "w", "h"))
    x0, y0, x1, y1 = max(x, 0.0), max(y, 0.0), min(x + w, 1.0), min(y + h, 1.0)
    if x1 <= x0 or y1 <= y0:
        raise SpecError(path, f"box [{x:g}, {y:g}, {w:g}, {h:g}] has no area inside the image")
    box = [round(x0, 6), round(y0, 6), round(x1 - x0, 6), round(y1 - y0, 6)]
    if (x0, y0, x1, y1) != (x, y, x + w, y + h):
        notes.append(f"{path}: box [{x:g}, {y:g}, {w:g}, {h:g}] reaches past the image; clipped to "
                     f"[{', '.join(f'{v:g}' for v in box)}]")
    return box


def _words(text: Any) -> list[str]:
    return [w.strip() for w in str(text or "").split(",") if w.strip()]


def _merge(*lists: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(w for words in lists for w in words))


def _full_frame(box: list[float]) -> bool:
    return all(abs(a - b) <= FULL_FRAME_TOLERANCE for a, b in zip(box, (0.0, 0.0, 1.0, 1.0)))


def regions_to_spec(entries: list[tuple[str, Any]], notes: list[str]) -> dict[str, Any]:
    """Spec fields from ``(path, entry)`` pairs in the Tiled Diffusion / authors' format."""
    out: dict[str, Any] = {"background": "", "negative": "", "regions": []}
    pending: dict[tuple, dict] = {}  # box -> the half of an attribute edit waiting for its partner
    unpaired: list[dict] = []
    seeds: list[int] = []
    have_background = False
    for path, entry in entries:
        if not isinstance(entry, dict):
            raise SpecError(path, f"expected an object, got {type(entry).__name__}")
        if entry.get("enable", True) is False:
            continue
        mode = entry.get("blend_mode", "Background")
        if mode not in BLEND_MODES:
            raise SpecError(f"{path}.blend_mode", f"unknown blend mode {mode!r} (known: {', '.join(BLEND_MODES)})")
        box = _box(entry, path, notes)
        prompt = str(entry.get("prompt") or "").strip()
        negative = str(entry.get("neg_prompt") or "").strip()
        seed = entry.get("seed", -1)
        if isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0:
            seeds.append(seed)
        if mode == "Background" and _full_frame(box) and not have_background:
            out["background"], out["negative"], have_background = prompt, negative, True
            continue
        if mode == "Background":
            notes.append(f"{path}: a Background region that is not the whole image is blended as a "
                         "foreground region (inherent)")
        region = {"box": box, "feather": min(max(_number(entry, "feather_ratio", path, 0.2), 0.0), 1.0),
                  "negative": negative, "keywords": _words(entry.get("key_prompt"))}
        if mode in ("EditedSource", "EditedTarget"):
            half = "source" if mode == "EditedSource" else "target"
            partner = pending.pop(tuple(box), None)
            if partner is not None and partner["_half"] != half:
                partner[half] = prompt
                partner["keywords"] = _merge(partner["keywords"], region["keywords"])
                partner["feather"] = region["feather"]  # the second half's settings win, as in the authors' code
                continue
            if partner is not None:
                unpaired.append(partner)
            region.update(source="", target="", _half=half, _path=path)
            region[half] = prompt
            pending[tuple(box)] = region
            out["regions"].append(region)
            continue
        region["source"] = "" if mode == "AdditionForeground" else prompt
        region["target"] = "" if mode == "RemovalForeground" else prompt
        out["regions"].append(region)
    for region in unpaired + list(pending.values()):
        mode = "EditedSource" if region["_half"] == "source" else "EditedTarget"
        raise SpecError(region["_path"], f"{mode} has no partner with the same box (an attribute edit needs both)")
    for region in out["regions"]:
        region.pop("_half", None)
        region.pop("_path", None)
    if seeds:
        out["seed"] = seeds[0]
        if len(set(seeds)) > 1:
            notes.append(f"regions have their own seeds ({', '.join(map(str, dict.fromkeys(seeds)))}); "
                         "mrgd uses the spec's one seed for the whole image")
    return out


# -- entry point ---------------------------------------------------------------------------------


def import_spec(src: str | os.PathLike | bytes, warnings: list[str] | None = None) -> EditSpec:
    """An edit spec from a Tiled Diffusion region JSON, an MRGD authors' config, an infotext with a
    ``Tiled Diffusion`` field (text or PNG), or an mrgd spec. ``src`` is a path, the text, or PNG
    bytes. What was changed to fit goes to ``warnings`` (or is issued as a
    :class:`RegionImportWarning` when no list is given)."""
    return import_text(_read(src), warnings)


def import_text(text: str, warnings: list[str] | None = None) -> EditSpec:
    """:func:`import_spec` for text only: never reads a file (the panel's Import box uses it)."""
    notes: list[str] = []
    text = text.strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError("import", f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from exc
        if not isinstance(data, dict) or "bbox_controls" not in data:
            return load_spec(data)  # an mrgd spec
        controls = data["bbox_controls"]
        if not isinstance(controls, list):
            raise SpecError("bbox_controls", f"expected a list, got {type(controls).__name__}")
        fields = regions_to_spec([(f"bbox_controls[{i}]", e) for i, e in enumerate(controls)], notes)
    else:
        prompt, negative, params = parse_infotext(text)
        if INFOTEXT_FIELD not in params:
            raise SpecError("import", f"not a region file: no bbox_controls JSON and no '{INFOTEXT_FIELD}' "
                                      "field in the infotext")
        td = _literal(params[INFOTEXT_FIELD], f"infotext.{INFOTEXT_FIELD}")
        control = td.get("Region control") if isinstance(td, dict) else None
        if not isinstance(control, dict):
            raise SpecError(f"infotext.{INFOTEXT_FIELD}", "has no 'Region control'")
        fields = regions_to_spec([(f"Region control.{name}", e) for name, e in control.items()], notes)
        fields.update(_infotext_fields(params), common=prompt, common_negative=negative)
    spec = EditSpec.from_dict({**fields, "main_prompt_common": True})
    if warnings is None:
        for note in notes:
            _warnings.warn(note, RegionImportWarning, stacklevel=2)
    else:
        warnings.extend(notes)
    return spec
