"""The standalone progress bar (the WebUI shows its own)."""

from __future__ import annotations


def progress_bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc="mrgd", unit="step", leave=False)
