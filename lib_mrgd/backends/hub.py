"""Hugging Face hub snapshots: the local cache first, a download only when the network allows.

One helper for every model mrgd fetches (the standalone SD loader, CLIPSeg in both hosts), so
offline behaviour and its message are the same everywhere.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ModelError

CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def looks_like_path(name: str) -> bool:
    """Hub ids are ``owner/name``; anything else is meant as a local file or folder."""
    return (name.lower().endswith(CHECKPOINT_SUFFIXES) or name.startswith((".", "/", "~"))
            or name.count("/") != 1)


def fetch_snapshot(repo_id: str, allow_patterns: list[str], subject: str, hint: str,
                   local_dir: str | os.PathLike | None = None) -> Path:
    """The files of a hub repository: from the local cache (or ``local_dir``, a folder the
    files are fetched into), else downloaded when the network allows; one ModelError line
    otherwise. ``subject`` starts the message (``"model 'x' is"``)."""
    from huggingface_hub import snapshot_download

    target = {"local_dir": str(local_dir)} if local_dir is not None else {}
    if local_dir is None:
        try:
            return Path(snapshot_download(repo_id, allow_patterns=allow_patterns, local_files_only=True))
        except Exception as exc:
            if hub_offline():
                raise ModelError(f"{subject} not in the local Hugging Face cache and HF_HUB_OFFLINE is set; "
                                 f"{hint}") from exc
    elif hub_offline():
        raise ModelError(f"{subject} missing and HF_HUB_OFFLINE is set; {hint}")
    try:
        return Path(snapshot_download(repo_id, allow_patterns=allow_patterns, **target))
    except Exception as exc:
        where = "missing" if local_dir is not None else "not in the local cache"
        raise ModelError(f"{subject} {where} and could not be downloaded ({type(exc).__name__}); {hint}") from exc
