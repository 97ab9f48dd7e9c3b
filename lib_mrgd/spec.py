"""The edit spec: one JSON document that the UI, the HTTP API, the infotext, the CLI and the
evaluation set all read and write.

Validation lives here and nowhere else, so every entry point rejects the same inputs with the same
message. Every rejection is a :class:`SpecError` whose text starts with the field path
(``regions[2].box: height must be > 0``), which is what a user needs to find the mistake in a
hand-written JSON file or an API payload.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import SpecError

SPEC_VERSION = 1
MAX_REGIONS = 16
MIN_SIZE, MAX_SIZE, SIZE_MULTIPLE = 64, 4096, 8
MIN_STEPS, MAX_STEPS = 1, 150
MIN_CFG, MAX_CFG = 1.0, 30.0
MAX_SEED = 2**32 - 1
MAX_PROMPT_CHARS = 20_000
MAX_KEYWORDS = 64
# The VAE of every SD family downsamples 8x: boxes must survive snapping to this grid.
LATENT_FACTOR = 8


def grid_span(start: float, length: float, size: int) -> tuple[int, int]:
    """A box side ``[start, start + length)`` (fractions) rounded to a grid of ``size`` cells."""
    return (min(max(round(start * size), 0), size),
            min(max(round((start + length) * size), 0), size))


class RegionKind(str, enum.Enum):
    INHERENT = "inherent"  # source == target: must stay as it is
    ADDITION = "addition"  # no source: the object appears in the target only
    REMOVAL = "removal"  # no target: the object is gone from the target
    ATTRIBUTE = "attribute"  # both set and different: the object changes

    @property
    def badge(self) -> str:
        return {"inherent": "keep", "addition": "add", "removal": "remove", "attribute": "change"}[
            self.value
        ]


# -- field checkers -------------------------------------------------------------------------------
# Each checker takes (value, path) and returns the normalised value or raises SpecError.


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)


def _bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise SpecError(path, f"expected true or false, got {_type_name(value)}")
    return value


def _int(lo: int | None = None, hi: int | None = None, multiple: int | None = None):
    def check(value: Any, path: str) -> int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(path, f"expected an integer, got {_type_name(value)}")
        if lo is not None and value < lo:
            raise SpecError(path, f"must be >= {lo}, got {value}")
        if hi is not None and value > hi:
            raise SpecError(path, f"must be <= {hi}, got {value}")
        if multiple is not None and value % multiple:
            raise SpecError(path, f"must be a multiple of {multiple}, got {value}")
        return value

    return check


def _float(lo: float | None = None, hi: float | None = None):
    def check(value: Any, path: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(path, f"expected a number, got {_type_name(value)}")
        value = float(value)
        if not math.isfinite(value):
            raise SpecError(path, f"must be a finite number, got {value}")
        if lo is not None and value < lo:
            raise SpecError(path, f"must be >= {lo:g}, got {value:g}")
        if hi is not None and value > hi:
            raise SpecError(path, f"must be <= {hi:g}, got {value:g}")
        return value

    return check


def _str(max_chars: int = MAX_PROMPT_CHARS, nonempty: bool = False):
    def check(value: Any, path: str) -> str:
        if not isinstance(value, str):
            raise SpecError(path, f"expected a string, got {_type_name(value)}")
        value = value.strip()
        if nonempty and not value:
            raise SpecError(path, "must not be empty")
        if len(value) > max_chars:
            raise SpecError(path, f"longer than {max_chars} characters")
        return value

    return check


def _list(item, length: int | None = None, max_len: int | None = None):
    def check(value: Any, path: str) -> list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise SpecError(path, f"expected a list, got {_type_name(value)}")
        if length is not None and len(value) != length:
            raise SpecError(path, f"expected {length} items, got {len(value)}")
        if max_len is not None and len(value) > max_len:
            raise SpecError(path, f"at most {max_len} items, got {len(value)}")
        return [item(v, f"{path}[{i}]") for i, v in enumerate(value)]

    return check


def _choices(*allowed: str):
    def check(value: Any, path: str) -> str:
        if value not in allowed:
            raise SpecError(path, f"must be one of {', '.join(allowed)}; got {value!r}")
        return value

    return check


def _fraction_pair(value: Any, path: str) -> list[float]:
    return _list(_float(0.0, 1.0), length=2)(value, path)


# options older specs and infotexts may carry; accepted and dropped (added or removed objects
# exist in one image only, so there was never a pair to inject between)
RETIRED_OPTIONS = ("inject_add_remove",)


def _check_fields(cls, data: Mapping[str, Any], path: str) -> dict[str, Any]:
    """Check a mapping against a dataclass whose fields carry a ``check`` in their metadata."""
    if not isinstance(data, Mapping):
        raise SpecError(path or "spec", f"expected an object, got {_type_name(data)}")
    prefix = f"{path}." if path else ""
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            raise SpecError(f"{prefix}{key}", "unknown key")
    out = {}
    for name, f in known.items():
        if name in data:
            out[name] = f.metadata["check"](data[name], f"{prefix}{name}")
    return out


def _opt(default: Any, check) -> Any:
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"check": check})
    return field(default=default, metadata={"check": check})


# -- the spec -------------------------------------------------------------------------------------


@dataclass
class Options:
    """Method switches and hyper-parameters. Defaults follow the paper and the authors' code (README: Options).

    Fractions of steps count from the start of sampling (0 = first step, 1 = the end).
    Injection pairs are ``[cross, self]``: the fraction of a layer's steps, from the step it joins
    (the first step; r_total's first step late in sampling), during which the source's cross- and
    self-attention maps are handed to the target. Self-attention is handed over only on maps of at
    most (latent side / ``self_replace_factor``)^2 query pixels (16x16 at 512x512), wherever the
    crop is.
    ``img2img_inversion``: in WebUI img2img, start from the multi-region null-text inversion of the
    init image (DDIM samplers) instead of noising it.
    """

    guidance: bool = _opt(True, _bool)
    kssa: bool = _opt(True, _bool)
    total_region: bool = _opt(True, _bool)
    keyword_selection: bool = _opt(True, _bool)
    lambda_rs: float = _opt(1000.0, _float(0.0, 1e6))
    lambda_is: float = _opt(2000.0, _float(0.0, 1e6))
    lambda_ip: float = _opt(300.0, _float(0.0, 1e6))
    is_start: float = _opt(0.3, _float(0.0, 1.0))
    ip_start: float = _opt(0.2, _float(0.0, 1.0))
    nce_temperature: float = _opt(0.07, _float(1e-4, 10.0))
    guidance_every: int = _opt(1, _int(1, 150))
    guidance_decode_scale: float = _opt(1.0, _float(0.125, 1.0))
    guidance_decoder: str = _opt("vae", _choices("vae", "tiny"))
    guidance_check: bool = _opt(False, _bool)
    t_total: float = _opt(0.5, _float(0.0, 1.0))
    t_total_add_remove: float = _opt(0.6, _float(0.0, 1.0))
    keyword_count: int = _opt(15, _int(0, 75))
    keyword_steps: list[float] = _opt([0.5, 0.75], _list(_float(0.0, 1.0), max_len=8))
    kssa_factor: float = _opt(1.5, _float(0.0, 10.0))
    kssa_blocks: list[str] = _opt(["down"], _list(_choices("down", "mid", "up"), max_len=3))
    self_replace_factor: int = _opt(4, _int(1, 64))
    img2img_inversion: bool = _opt(True, _bool)
    inject_background: list[float] = _opt([1.0, 0.5], _fraction_pair)
    inject_inherent: list[float] = _opt([1.0, 0.7], _fraction_pair)
    inject_edit: list[float] = _opt([0.6, 0.3], _fraction_pair)
    inject_total: list[float] = _opt([0.5, 0.2], _fraction_pair)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], path: str = "options") -> "Options":
        if isinstance(data, Mapping):  # keys of older releases that never had an effect
            data = {k: v for k, v in data.items() if k not in RETIRED_OPTIONS}
        return cls(**_check_fields(cls, data, path))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _box(value: Any, path: str) -> list[float]:
    x, y, w, h = _list(_float(), length=4)(value, path)
    for name, v in (("x", x), ("y", y)):
        if not 0.0 <= v <= 1.0:
            raise SpecError(path, f"{name} must be in [0, 1], got {v:g}")
    if w <= 0:
        raise SpecError(path, f"width must be > 0, got {w:g}")
    if h <= 0:
        raise SpecError(path, f"height must be > 0, got {h:g}")
    eps = 1e-6
    if x + w > 1 + eps:
        raise SpecError(path, f"x + width must be <= 1, got {x + w:g}")
    if y + h > 1 + eps:
        raise SpecError(path, f"y + height must be <= 1, got {y + h:g}")
    return [x, y, min(w, 1.0 - x), min(h, 1.0 - y)]


def _keywords(value: Any, path: str) -> list[str]:
    return _list(_str(200, nonempty=True), max_len=MAX_KEYWORDS)(value, path)


@dataclass
class Region:
    """One box with its source and target prompts. ``box`` is ``[x, y, w, h]`` in fractions of
    the image; an empty ``negative`` means the spec's ``negative``."""

    box: list[float] = field(metadata={"check": _box})
    source: str = _opt("", _str())
    target: str = _opt("", _str())
    keywords: list[str] = _opt([], _keywords)
    feather: float = _opt(0.2, _float(0.0, 1.0))
    negative: str = _opt("", _str())

    @property
    def kind(self) -> RegionKind:
        if not self.source:
            return RegionKind.ADDITION
        if not self.target:
            return RegionKind.REMOVAL
        return RegionKind.INHERENT if self.source == self.target else RegionKind.ATTRIBUTE

    def prompt(self, image: int) -> str:
        """The prompt of this region in image 0 (source) or 1 (target); '' = absent there."""
        return self.source if image == 0 else self.target

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], path: str) -> "Region":
        values = _check_fields(cls, data, path)
        if "box" not in values:
            raise SpecError(f"{path}.box", "missing")
        region = cls(**values)
        if not region.source and not region.target:
            raise SpecError(path, "needs a source or a target prompt (both are empty)")
        return region

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _regions(value: Any, path: str) -> list[Region]:
    if not isinstance(value, (list, tuple)):
        raise SpecError(path, f"expected a list, got {_type_name(value)}")
    if len(value) > MAX_REGIONS:
        raise SpecError(path, f"at most {MAX_REGIONS} regions, got {len(value)}")
    return [v if isinstance(v, Region) else Region.from_dict(v, f"{path}[{i}]")
            for i, v in enumerate(value)]


def _options(value: Any, path: str) -> Options:
    return value if isinstance(value, Options) else Options.from_dict(value, path)


def _version(value: Any, path: str) -> int:
    value = _int()(value, path)
    if value != SPEC_VERSION:
        raise SpecError(path, f"unsupported version {value} (this mrgd reads version {SPEC_VERSION})")
    return value


@dataclass
class EditSpec:
    """A whole edit. ``seed`` -1 means "pick one"; :meth:`resolved` fixes it. ``enabled`` false
    makes the WebUI skip the edit (a spec sent through the API switches the script on).

    ``common`` (``common_negative``) is prepended to every layer's prompt (negative prompt): r_bg,
    each region in both images, r_total, as the authors' code prepends the WebUI's main prompt, so
    quality tags and style reach every region. ``main_prompt_common`` says where the WebUI puts
    its main prompt: into ``common`` (true) or into ``background`` (false); the standalone runner
    ignores it.
    """

    version: int = _opt(SPEC_VERSION, _version)
    enabled: bool = _opt(True, _bool)
    width: int = _opt(512, _int(MIN_SIZE, MAX_SIZE, SIZE_MULTIPLE))
    height: int = _opt(512, _int(MIN_SIZE, MAX_SIZE, SIZE_MULTIPLE))
    seed: int = _opt(-1, _int(-1, MAX_SEED))
    steps: int = _opt(20, _int(MIN_STEPS, MAX_STEPS))
    cfg_scale: float = _opt(7.0, _float(MIN_CFG, MAX_CFG))
    sampler: str = _opt("DDIM", _str(64, nonempty=True))
    background: str = _opt("", _str())
    negative: str = _opt("", _str())
    common: str = _opt("", _str())
    common_negative: str = _opt("", _str())
    main_prompt_common: bool = _opt(True, _bool)
    regions: list[Region] = _opt([], _regions)
    options: Options = field(default_factory=Options, metadata={"check": _options})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "EditSpec":
        spec = cls(**_check_fields(cls, data, ""))
        spec._check_boxes_on_grid()
        return spec

    def _check_boxes_on_grid(self) -> None:
        lw, lh = self.width // LATENT_FACTOR, self.height // LATENT_FACTOR
        for i, region in enumerate(self.regions):
            x, y, w, h = region.box
            for name, start, length, size in (("width", x, w, lw), ("height", y, h, lh)):
                a0, a1 = grid_span(start, length, size)
                if a1 <= a0:
                    raise SpecError(f"regions[{i}].box",
                                    f"{name} is empty after snapping to the {lw}x{lh} latent grid")

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version, "enabled": self.enabled, "width": self.width, "height": self.height,
            "seed": self.seed, "steps": self.steps, "cfg_scale": self.cfg_scale,
            "sampler": self.sampler, "background": self.background, "negative": self.negative,
            "common": self.common, "common_negative": self.common_negative,
            "main_prompt_common": self.main_prompt_common,
            "regions": [r.to_dict() for r in self.regions], "options": self.options.to_dict(),
        }

    def to_json(self, indent: int | None = None) -> str:
        if indent is None:
            return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False)
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(self.to_json(indent=2) + "\n", encoding="utf-8")

    def replace(self, **changes: Any) -> "EditSpec":
        """A validated copy with some top-level fields changed (CLI overrides, host fields)."""
        data = self.to_dict()
        data.update(changes)
        return EditSpec.from_dict(data)

    def resolved(self) -> "EditSpec":
        """This spec with a concrete seed, so the result can be reproduced from its record."""
        if self.seed != -1:
            return self
        return dataclasses.replace(self, seed=secrets.randbelow(MAX_SEED + 1))

    @property
    def kinds(self) -> list[RegionKind]:
        return [r.kind for r in self.regions]


def load_spec(src: "EditSpec | Mapping[str, Any] | str | os.PathLike") -> EditSpec:
    """An EditSpec from a spec, a dict, a JSON string or a path to a JSON file."""
    if isinstance(src, EditSpec):
        return EditSpec.from_dict(src.to_dict())
    if isinstance(src, Mapping):
        return EditSpec.from_dict(src)
    if isinstance(src, (str, os.PathLike)):
        text = str(src) if isinstance(src, str) else None
        if text is None or not text.lstrip().startswith(("{", "[")):
            path = Path(src)
            try:
                text = path.read_text(encoding="utf-8")
            except FileNotFoundError as exc:
                raise SpecError("spec", f"file not found: {path}") from exc
            except (OSError, UnicodeDecodeError) as exc:
                raise SpecError("spec", f"cannot read {path}: {exc}") from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError("spec", f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from exc
        return EditSpec.from_dict(data)
    raise SpecError("spec", f"expected a path, a JSON string or an object, got {_type_name(src)}")
