"""What each method runs: the one place that turns a method name and the options into parts."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import SpecError
from .spec import Options

METHODS = ("multidiffusion", "p2p", "mrgd")


def check_method(method: str) -> None:
    if method not in METHODS:
        raise SpecError("method", f"unknown method {method!r}; choose one of {', '.join(METHODS)}")


@dataclass(frozen=True)
class MethodPlan:
    """The parts of the method an edit runs, derived once from the method and the options."""

    method: str
    total_region: bool  # r_total is a layer (late in sampling)
    attention: bool  # the P2P attention controller is attached
    keywords: bool  # r_total's maps are read: entropy keyword selection and/or KSSA
    guidance: bool  # CLIPSeg guidance corrects x0
    report: bool  # the result reports keywords and guidance

    @classmethod
    def of(cls, method: str, options: Options, has_regions: bool) -> "MethodPlan":
        check_method(method)
        full = method == "mrgd"
        total = full and options.total_region
        return cls(method=method, total_region=total, attention=method in ("p2p", "mrgd"),
                   keywords=total and (options.keyword_selection or options.kssa),
                   guidance=full and options.guidance and has_regions, report=full)
