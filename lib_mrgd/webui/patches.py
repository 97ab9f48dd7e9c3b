"""Instance patches that always come off.

Every patch mrgd puts on a host object is an instance attribute recorded here; ``undo`` puts back
exactly what was there (another extension's instance attribute included) or deletes ours, in
reverse order.
"""

from __future__ import annotations

from typing import Any, Callable

_MISSING = object()


class Patches:
    def __init__(self) -> None:
        self._undo: list[tuple[object, str, Any]] = []

    def set(self, obj: object, name: str, value: Callable) -> None:
        previous = vars(obj).get(name, _MISSING)

        setattr(obj, name, value)
        self._undo.append((obj, name, previous))

    def undo(self) -> None:
        while self._undo:
            obj, name, previous = self._undo.pop()
            if previous is _MISSING:
                vars(obj).pop(name, None)
            else:
                setattr(obj, name, previous)

    def __len__(self) -> int:
        return len(self._undo)

