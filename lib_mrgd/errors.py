"""One error base for everything mrgd refuses, so a host or a script catches one type.

Every error names *where* (a spec field path, a file, the model) and *why*; ``str(err)`` is
``"<path>: <reason>"``, or the reason alone when there is no path. The exception that caused a
refusal (an unreadable file, a library's loading error) is chained as ``__cause__``, so nothing
is lost for a traceback while the message stays one line for the user.
"""

from __future__ import annotations


class MrgdError(Exception):
    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}" if path else reason)
        self.path = path
        self.reason = reason


class SpecError(MrgdError, ValueError):
    """A rejected edit spec (from JSON, the UI, the API, an infotext or an imported file)."""


class ImageError(SpecError):
    """An input image that cannot be used; ``image: ...`` (a request's input, like its spec)."""

    def __init__(self, reason: str):
        super().__init__("image", reason)


class InversionError(SpecError):
    """An inversion file that cannot be used for this spec or model; ``inversion: ...``."""

    def __init__(self, reason: str):
        super().__init__("inversion", reason)


class ModelError(MrgdError, RuntimeError):
    """A model that cannot be found or loaded; the message is one line that says what to do."""

    def __init__(self, reason: str, path: str = ""):
        super().__init__(path, reason)


class ArgumentError(MrgdError):
    """A bad command-line argument (CLI or evaluation); the path is the option's name."""
