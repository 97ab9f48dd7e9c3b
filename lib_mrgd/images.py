"""Reading a user's photo for inversion: one clear error for anything unreadable, and a
documented conversion for the rest.

- alpha or palette images are flattened onto white and converted to RGB;
- a size that differs from the spec is centre-cropped to the spec's aspect ratio, then resized
  (Lanczos) to the spec's width x height.
"""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError


def read_image(path: str | os.PathLike) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"file not found: {path}")
    try:
        with Image.open(path) as probe:
            probe.verify()  # catches truncated and corrupt files early
        image = Image.open(path)
        image.load()
    except UnidentifiedImageError as exc:
        raise ImageError(f"{path} is not an image in a supported format") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{path} is corrupt or unreadable ({exc})") from exc
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """Flatten alpha (and palette transparency) onto white; RGB out."""
    image = ImageOps.exif_transpose(image)
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA"):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    return image.convert("RGB")


def fit(image: Image.Image, width: int, height: int) -> tuple[Image.Image, str | None]:
    """The image at the spec's size, and a note when it had to be cropped or resized."""
    if image.size == (width, height):
        return image, None
    fitted = ImageOps.fit(image, (width, height), method=Image.LANCZOS, centering=(0.5, 0.5))
    return fitted, f"resized from {image.width}x{image.height} to {width}x{height} (centre crop to the aspect ratio)"


def prepare(src: "str | os.PathLike | Image.Image", width: int, height: int) -> tuple[Image.Image, list[str]]:
    image = src if isinstance(src, Image.Image) else read_image(src)
    notes = []
    if image.mode not in ("RGB", "L"):
        notes.append(f"converted from mode {image.mode} to RGB")
    image, note = fit(to_rgb(image), width, height)
    if note:
        notes.append(note)
    return image, notes
