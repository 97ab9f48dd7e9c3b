"""Fusion invariants on the tiny model (Eq. 1): what must hold whatever the weights are."""

from __future__ import annotations

import numpy as np
import torch

from lib_mrgd import load_spec, run_edit
from lib_mrgd.conditioning import encode_layers, layer_prompts
from lib_mrgd.fusion import RegionFusion
from lib_mrgd.layout import Branch, Layout
from lib_mrgd.sampling import DDIMSampler, apply_cfg


def _edit(spec, tiny, **kw):
    return run_edit(spec, tiny, method="multidiffusion", progress=False, **kw)


def _plain_ddim(tiny, spec):
    """Reference: DDIM on the background prompt for a batch of two images, calling the UNet
    directly (rows cond, cond, uncond, uncond as the WebUI batches them), no fusion code."""
    spec = load_spec(spec)
    cond, uncond = tiny.encode_prompts([spec.background, spec.negative])
    sampler = DDIMSampler(tiny.alphas_cumprod, spec.steps)
    x = tiny.initial_noise(spec.seed, spec.height, spec.width).repeat(2, 1, 1, 1)
    with torch.no_grad():
        for i, t in enumerate(sampler.timesteps):
            out = tiny.denoise(x.repeat(2, 1, 1, 1), torch.full((4,), float(t)),
                               torch.stack([cond, cond, uncond, uncond]))
            x = sampler.step(x, apply_cfg(out[:2], out[2:], spec.cfg_scale), i)
    return x[0]


def test_no_regions_equals_plain_ddim_on_the_background(tiny, spec_dict):
    spec_dict["regions"] = []
    result = _edit(spec_dict, tiny)
    reference = _plain_ddim(tiny, spec_dict)
    assert (result.latents[0] - reference).abs().max().item() <= 1e-6
    assert (result.latents[1] - reference).abs().max().item() <= 1e-6


def test_our_ddim_matches_diffusers_ddim(tiny, spec_dict):
    from diffusers import DDIMScheduler

    spec_dict["regions"] = []
    spec = load_spec(spec_dict)
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                          clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                          timestep_spacing="leading")
    sched.set_timesteps(spec.steps)
    ours = DDIMSampler(tiny.alphas_cumprod, spec.steps)
    assert ours.timesteps == [int(t) for t in sched.timesteps]
    cond, uncond = tiny.encode_prompts([spec.background, spec.negative])
    x = tiny.initial_noise(spec.seed, spec.height, spec.width).repeat(2, 1, 1, 1)
    with torch.no_grad():
        for t in sched.timesteps:
            out = tiny.denoise(x.repeat(2, 1, 1, 1), torch.full((4,), float(t)),
                               torch.stack([cond, cond, uncond, uncond]))
            x = sched.step(apply_cfg(out[:2], out[2:], spec.cfg_scale), t, x).prev_sample
    reference = _plain_ddim(tiny, spec_dict)
    # diffusers keeps the schedule in float32, we keep it in float64 (as ldm does)
    assert torch.allclose(x[0], reference, rtol=1e-4, atol=1e-4)


def test_a_full_image_region_with_the_background_prompt_changes_nothing(tiny, spec_dict):
    spec_dict["regions"] = []
    plain = _edit(spec_dict, tiny).latents
    spec_dict["regions"] = [{"box": [0, 0, 1, 1], "source": spec_dict["background"],
                             "target": spec_dict["background"], "negative": spec_dict["negative"]}]
    same = _edit(spec_dict, tiny).latents
    assert torch.allclose(same, plain, rtol=1e-5, atol=1e-5)


def test_batched_crops_equal_one_call_per_crop(tiny, spec_dict):
    spec_dict["regions"].append({"box": [0.55, 0.0, 0.4, 0.25], "source": "a lamp", "target": "a lamp"})
    spec = load_spec(spec_dict)
    layout = Layout.from_spec(spec, tiny.latent_multiple)
    contexts = encode_layers(layer_prompts(spec, layout), tiny).contexts
    x = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        batched = RegionFusion(layout, contexts, tiny.denoise)(x, 501, 0.5)
        single = RegionFusion(layout, contexts, tiny.denoise, max_batch=1)(x, 501, 0.5)
    for branch in (Branch.COND, Branch.UNCOND):
        assert (batched[branch] - single[branch]).abs().max().item() <= 1e-5
    # end to end the tiny model amplifies latents about 15x, so compare relative to their size
    a, b = _edit(spec_dict, tiny), _edit(spec_dict, tiny, max_batch=1)
    assert a.info["unet_calls_per_step"] < b.info["unet_calls_per_step"]
    assert (a.latents - b.latents).abs().max().item() <= 1e-5 * a.latents.abs().max().item()


def test_equal_crops_share_one_unet_call(tiny, spec_dict):
    spec_dict["regions"] = [
        {"box": [0.0, 0.0, 0.5, 0.5], "source": "a cat", "target": "a dog"},
        {"box": [0.5, 0.5, 0.5, 0.5], "source": "a red car", "target": "a red car"},
    ]
    spec = load_spec(spec_dict)
    layout = Layout.from_spec(spec, tiny.latent_multiple)
    fusion = RegionFusion(layout, encode_layers(layer_prompts(spec, layout), tiny).contexts, tiny.denoise)
    calls = fusion.plan(0.0, branches=(Branch.COND,))
    sizes = sorted(len(c) for c in calls)
    assert sizes == [2, 4]  # background S/T; both regions' S/T crops together
    region_call = next(c for c in calls if len(c) == 4)
    assert [(r.layer, r.image) for r in region_call.rows] == [(1, 0), (1, 1), (2, 0), (2, 1)]
    assert region_call.indices(image=1) == [1, 3]


def test_source_equals_target_exactly_when_no_region_differs(tiny, spec_dict):
    spec_dict["regions"] = [{"box": [0.1, 0.1, 0.5, 0.5], "source": "a cat", "target": "a cat"}]
    result = _edit(spec_dict, tiny)
    assert torch.equal(result.latents[0], result.latents[1])
    assert np.array_equal(np.asarray(result.source), np.asarray(result.target))


def test_same_seed_same_images_and_another_seed_differs(tiny, spec_dict):
    a, b = _edit(spec_dict, tiny), _edit(spec_dict, tiny)
    assert np.array_equal(np.asarray(a.target), np.asarray(b.target))
    spec_dict["seed"] = 8
    c = _edit(spec_dict, tiny)
    assert not np.array_equal(np.asarray(a.target), np.asarray(c.target))


def test_the_tiny_model_is_prompt_sensitive(tiny, spec_dict):
    spec_dict["regions"] = []
    a = _edit(spec_dict, tiny)
    spec_dict["background"] = "a snowy mountain at night"
    b = _edit(spec_dict, tiny)
    diff = np.abs(np.asarray(a.source, dtype=float) - np.asarray(b.source, dtype=float)).mean()
    assert diff > 1.0  # mean absolute difference in 0..255 pixel values


def test_an_edit_changes_the_target_inside_its_box_more_than_outside(tiny, spec_dict):
    spec_dict["regions"] = [{"box": [0.5, 0.5, 0.5, 0.5], "source": "a cat", "target": "a red sports car"}]
    result = _edit(spec_dict, tiny)
    diff = np.abs(np.asarray(result.source, dtype=float) - np.asarray(result.target, dtype=float)).mean(-1)
    inside, outside = diff[64:, 64:].mean(), diff[:48, :48].mean()
    assert inside > 2 * outside


def test_an_addition_leaves_the_source_as_if_the_region_did_not_exist(tiny, spec_dict):
    spec_dict["regions"] = [spec_dict["regions"][1]]  # the dog, target only
    with_addition = _edit(spec_dict, tiny).latents[0]
    spec_dict["regions"] = []
    without = _edit(spec_dict, tiny).latents[0]
    assert torch.allclose(with_addition, without, atol=1e-6)


def test_cfg_scale_one_skips_the_unconditional_rows(tiny, spec_dict):
    spec_dict["cfg_scale"] = 1.0
    result = _edit(spec_dict, tiny)
    spec_dict["cfg_scale"] = 7.0
    rows = result.info["unet_rows_per_step"]
    assert rows * 2 == _edit(spec_dict, tiny).info["unet_rows_per_step"]
