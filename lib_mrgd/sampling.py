"""DDIM (eta 0) on the Stable Diffusion noise schedule, with the WebUI's timestep grid.

The grid matters beyond sampling: null-text inversion must walk exactly the timesteps that
sampling will use, so both use :func:`ddim_timesteps`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

TRAIN_STEPS = 1000


def scaled_linear_alphas_cumprod(beta_start: float = 0.00085, beta_end: float = 0.012,
                                 steps: int = TRAIN_STEPS) -> torch.Tensor:
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, steps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def ddim_timesteps(steps: int, train_steps: int = TRAIN_STEPS) -> list[int]:
    """Timesteps from noisiest to cleanest: ``range(0, 1000, 1000 // steps) + 1`` reversed."""
    stride = train_steps // steps
    return [min(i * stride + 1, train_steps - 1) for i in range(steps)][::-1]


@dataclass
class DDIMSampler:
    alphas_cumprod: torch.Tensor  # (train_steps,), float64
    steps: int

    def __post_init__(self) -> None:
        self.timesteps = ddim_timesteps(self.steps, len(self.alphas_cumprod))
        ac = self.alphas_cumprod
        self.alphas = [float(ac[t]) for t in self.timesteps]
        self.alphas_prev = [float(ac[t]) for t in self.timesteps[1:]] + [float(ac[0])]

    @classmethod
    def on_grid(cls, alphas_cumprod: torch.Tensor, timesteps: list[int], alphas_prev: list[float]) -> "DDIMSampler":
        """DDIM on a host's own grid: step ``i`` evaluates the model at ``timesteps[i]`` and goes
        from that timestep's level to ``alphas_prev[i]``."""
        sampler = cls.__new__(cls)
        sampler.alphas_cumprod, sampler.steps = alphas_cumprod, len(timesteps)
        sampler.timesteps = list(timesteps)
        sampler.alphas = [float(alphas_cumprod[t]) for t in timesteps]
        sampler.alphas_prev = [float(a) for a in alphas_prev]
        return sampler

    def predict_x0(self, x: torch.Tensor, eps: torch.Tensor, i: int) -> torch.Tensor:
        a = self.alphas[i]
        return (x - (1 - a) ** 0.5 * eps) / a**0.5

    def step(self, x: torch.Tensor, eps: torch.Tensor, i: int) -> torch.Tensor:
        """x_t -> x_{t-1} for step ``i`` (0 = the noisiest)."""
        a_prev = self.alphas_prev[i]
        return a_prev**0.5 * self.predict_x0(x, eps, i) + (1 - a_prev) ** 0.5 * eps

    def invert_step(self, x: torch.Tensor, eps: torch.Tensor, i: int) -> torch.Tensor:
        """The reverse of :meth:`step` (DDIM inversion): from step ``i``'s output back to its
        input, with ``eps`` predicted at the output (the usual linear approximation)."""
        a_prev, a = self.alphas_prev[i], self.alphas[i]
        x0 = (x - (1 - a_prev) ** 0.5 * eps) / a_prev**0.5
        return a**0.5 * x0 + (1 - a) ** 0.5 * eps


def apply_cfg(cond: torch.Tensor, uncond: torch.Tensor | None, scale: float) -> torch.Tensor:
    if uncond is None:
        return cond
    return uncond + scale * (cond - uncond)


def sample(denoiser: Callable[[torch.Tensor, int], torch.Tensor], x: torch.Tensor, grid: DDIMSampler,
           callback: Callable[[int, torch.Tensor], bool | None] | None = None) -> torch.Tensor:
    """DDIM over ``grid``: ``denoiser(x, i)`` gives eps at step ``i`` (0 = the noisiest);
    ``callback(i, x)`` sees each new latent and stops sampling by returning True."""
    for i in range(grid.steps):
        x = grid.step(x, denoiser(x, i), i)
        if callback is not None and callback(i, x):
            break
    return x
