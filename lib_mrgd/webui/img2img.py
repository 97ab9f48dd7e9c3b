"""img2img from a real photo: the init image is inverted (multi-region null-text inversion) on
the host's own DDIM timestep grid, and the host's sampler then starts from that noise, with the
tuned negatives replacing each layer's negative conditioning step by step.

Only DDIM-type samplers walk a grid that can be inverted; with any other sampler, an inpainting
model or img2img extra noise, the init image is noised as usual and the infotext says why.
"""

from __future__ import annotations

from ..inversion import invert_latent
from ..sampling import DDIMSampler
from . import host


class Stopped(Exception):
    """The user interrupted or skipped while the init image was being inverted."""


def wanted(runtime) -> bool:
    """Whether this pass starts from the init image's inversion (else a note says why not)."""
    from modules import processing, shared

    p = runtime.p
    if not isinstance(p, processing.StableDiffusionProcessingImg2Img) or runtime.hires:
        return False
    if not runtime.spec.options.img2img_inversion:
        return False
    reason = None
    if not runtime.timestep_sampler:
        reason = "it needs a DDIM-type sampler"
    elif getattr(runtime.sd_model.model, "conditioning_key", "crossattn") != "crossattn":
        reason = "inpainting models are not supported"
    elif getattr(shared.opts, "img2img_extra_noise", 0) > 0:
        reason = "img2img extra noise is on"
    if reason:
        runtime.session.note(p, f"img2img inversion skipped ({reason}); the init image was noised as usual")
        return False
    sampler = p.sampler
    eta = p.eta if getattr(p, "eta", None) is not None else getattr(
        shared.opts, getattr(sampler, "eta_option_field", "eta_ddim"), 0.0)
    if eta:
        p.eta = 0.0  # the inverted trajectory is the deterministic (eta 0) one
        runtime.session.note(p, f"eta {eta:g} set to 0 for img2img inversion (it inverts the eta-0 trajectory)")
    return True


def inverting(runtime, sample):
    """``sample_img2img`` that first inverts the init image and stores the result on the runtime."""
    def run(p, x, noise, conditioning, unconditional_conditioning, steps=None, image_conditioning=None):
        from modules import sd_samplers_common

        total, t_enc = sd_samplers_common.setup_img2img_steps(p, steps)
        timesteps = [int(t) for t in p.sampler.get_timesteps(p, total)]
        if t_enc >= 2:
            edit = runtime.edit
            ac = runtime.model.alphas_cumprod
            # the host's DDIM evaluates timesteps[t_enc-1] .. timesteps[1], ending at timesteps[0]'s level
            used = timesteps[:t_enc][::-1]
            grid = DDIMSampler.on_grid(ac, used[:-1], [float(ac[t]) for t in used[1:]])
            try:
                runtime.tuned = invert_latent(x[:1].float(), edit.uncontrolled, grid, edit.spec.cfg_scale, edit.layout,
                                              progress_of=lambda i: i / (t_enc + 1),
                                              tick=_tick(2 * len(grid.timesteps)))
            except Stopped:
                print("MRGD: interrupted during img2img inversion; the init image is returned")
                return x  # as the host answers an interrupt: the latest latent, the init image's
            finally:
                host.report_progress(0, 0, None)  # sampling sets its own steps next
            a = float(ac[timesteps[t_enc]])
            noise.copy_((runtime.tuned.latent.to(x) - x * a**0.5) / (1 - a) ** 0.5)  # the host's xi is then our start
        return sample(p, x, noise, conditioning, unconditional_conditioning, steps=steps,
                      image_conditioning=image_conditioning)

    return run


def _tick(total: int):
    """Progress for each inversion step and an interrupt check at every UNet evaluation; the
    console names each phase as it starts."""
    done, seen = [0], set()

    def tick(phase: str, finished: bool) -> None:
        if phase not in seen:
            seen.add(phase)
            print(f"MRGD: {'DDIM inversion' if phase == 'inversion' else phase + ' tuning'} of the init "
                  f"image ({total // 2} steps)")
            host.report_progress(done[0], total, f"MRGD {phase} {done[0]}/{total}")
        if finished:
            done[0] += 1
            host.report_progress(done[0], total, f"MRGD {phase} {done[0]}/{total}")
        if host.interrupted():
            raise Stopped

    return tick
