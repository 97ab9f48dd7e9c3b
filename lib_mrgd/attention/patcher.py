"""Attach one attention hook to the attention modules of any family mrgd meets.

The hook is an instance attribute ``module.forward`` that shadows the class's forward (and so
whatever optimisation a host assigned to the class). It asks the hook whether this call needs
edits; if not, the class forward runs untouched, so idle layers keep the host's fast path.
Restoring is ``del module.forward``: assigning the saved bound method back would leave an instance
attribute behind. Another extension's instance forward found on a module is kept as the idle path
and put back on detach.

Families and their call signatures:
- diffusers ``Attention``: ``forward(hidden_states, encoder_hidden_states=None, attention_mask=None, **kw)``
- ldm / sgm ``CrossAttention`` (WebUI): ``forward(x, context=None, mask=None, **kw)``; a module
  without ``scale`` gets the standard ``head_dim ** -0.5``, and a call with ``value=`` is left to
  the module.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Iterator, Protocol

import torch

_BLOCKS = (("down", ("down_blocks", "input_blocks")), ("mid", ("mid_block", "middle_block")),
           ("up", ("up_blocks", "output_blocks")))


@dataclass(frozen=True)
class Site:
    """One attention module: where it is and how to call its parts."""

    name: str
    module: torch.nn.Module
    kind: str  # "self" (attn1) or "cross" (attn2)
    block: str  # "down", "mid" or "up"
    family: str  # "diffusers" or "ldm"

    @property
    def heads(self) -> int:
        return self.module.heads

    @property
    def scale(self) -> float:
        scale = getattr(self.module, "scale", None)
        if scale is None:  # some attention classes keep no scale
            scale = (self.module.to_q.out_features // self.heads) ** -0.5
        return float(scale)


class Hook(Protocol):
    def wants(self, site: Site, x: torch.Tensor, context: torch.Tensor | None) -> bool:
        """Whether this call needs the hook's own attention (else the module's forward runs)."""

    def attend(self, site: Site, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """The attention output for ``x`` (rows, tokens, channels), ``to_out`` applied."""


def _is_plain_diffusers(module: torch.nn.Module) -> bool:
    """The UNet's transformer attention: no norms, residuals or rescaling around q/k/v."""
    return (getattr(module, "group_norm", None) is None and getattr(module, "spatial_norm", None) is None
            and getattr(module, "norm_cross", None) is None and getattr(module, "norm_q", None) is None
            and not getattr(module, "residual_connection", False)
            and getattr(module, "rescale_output_factor", 1.0) == 1.0)


def find_sites(unet: torch.nn.Module) -> list[Site]:
    sites = []
    for name, module in unet.named_modules():
        match = re.search(r"(^|\.)attn([12])$", name)
        if not match or not all(hasattr(module, a) for a in ("to_q", "to_k", "to_v", "to_out", "heads")):
            continue
        block = next((b for b, keys in _BLOCKS if any(k in name for k in keys)), None)
        if block is None:
            continue
        family = "diffusers" if hasattr(module, "processor") else "ldm"
        if family == "diffusers" and not _is_plain_diffusers(module):
            continue
        sites.append(Site(name, module, "self" if match[2] == "1" else "cross", block, family))
    return sites


def _make_forward(site: Site, hook: Hook, previous=None):
    """The instance forward; ``previous`` is another extension's instance forward, kept as the
    idle path and put back on detach."""
    module = site.module
    if site.family == "diffusers":
        def idle(*args, **kwargs):
            return previous(*args, **kwargs) if previous else type(module).forward(module, *args, **kwargs)

        def forward(hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
            if attention_mask is None and hidden_states.dim() == 3 and hook.wants(site, hidden_states, encoder_hidden_states):
                return hook.attend(site, hidden_states, encoder_hidden_states)
            return idle(hidden_states, encoder_hidden_states, attention_mask, **kwargs)
    else:
        def forward(x, context=None, mask=None, **kwargs):
            if mask is None and kwargs.get("value") is None and hook.wants(site, x, context):
                return hook.attend(site, x, context)
            if previous:
                return previous(x, context=context, mask=mask, **kwargs)
            return type(module).forward(module, x, context=context, mask=mask, **kwargs)
    forward.mrgd_previous = previous  # type: ignore[attr-defined]
    return forward


def attach(sites: list[Site], hook: Hook) -> None:
    for site in sites:
        site.module.forward = _make_forward(site, hook, vars(site.module).get("forward"))


def detach(sites: list[Site]) -> None:
    for site in sites:
        ours = vars(site.module).get("forward")
        if ours is None or not hasattr(ours, "mrgd_previous"):
            continue
        if ours.mrgd_previous is not None:
            site.module.forward = ours.mrgd_previous
        else:
            del site.module.forward


def sweep(unet: torch.nn.Module) -> int:
    """Remove hooks of ours that a crashed run left behind; returns how many."""
    stale = [s for s in find_sites(unet) if hasattr(vars(s.module).get("forward"), "mrgd_previous")]
    detach(stale)
    return len(stale)


@contextlib.contextmanager
def patched(unet: torch.nn.Module, hook: Hook) -> Iterator[list[Site]]:
    """Attach ``hook`` for the duration of the block; always detach, even on error."""
    sites = find_sites(unet)
    try:
        attach(sites, hook)
        yield sites
    finally:
        detach(sites)


# -- the parts of one attention call -------------------------------------------------------------


def project(site: Site, x: torch.Tensor, context: torch.Tensor | None):
    """q, k, v as (rows, heads, tokens, dim)."""
    m = site.module
    ctx = x if context is None else context
    q, k, v = m.to_q(x), m.to_k(ctx), m.to_v(ctx)
    h = site.heads

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(t.shape[0], t.shape[1], h, -1).transpose(1, 2)

    return split(q), split(k), split(v)


def merge(site: Site, out: torch.Tensor) -> torch.Tensor:
    """(rows, heads, tokens, dim) -> to_out applied."""
    out = out.transpose(1, 2).reshape(out.shape[0], out.shape[2], -1)
    return site.module.to_out(out) if not isinstance(site.module.to_out, torch.nn.ModuleList) else \
        site.module.to_out[1](site.module.to_out[0](out))


def sdpa(site: Site, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=site.scale)


def probabilities(site: Site, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Softmax maps in float32: (rows, heads, queries, keys)."""
    return (q.float() @ k.float().transpose(-1, -2) * site.scale).softmax(dim=-1)
