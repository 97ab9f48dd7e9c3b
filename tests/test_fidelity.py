"""The defaults are the paper's method: r_total's injection, region weights inside the drawn box,
the absolute self-attention threshold, r_bg in IS, the authors' guidance calibration and the
common prompt."""

from __future__ import annotations

import copy

import pytest
import torch

from lib_mrgd import load_spec, run_edit
from lib_mrgd.attention.controller import EditController, PairPlan, build_controller
from lib_mrgd.attention.mappers import swap_mapper
from lib_mrgd.attention.patcher import Site
from lib_mrgd.conditioning import encode_layers, layer_prompts
from lib_mrgd.guidance.guide import Guidance, step_size
from lib_mrgd.inversion import source_fingerprint
from lib_mrgd.layout import BatchLayout, Branch, Layout, Row

NO_GUIDANCE = {"guidance": False}


def _edit(spec, tiny, method="mrgd"):
    return run_edit(spec, tiny, method=method, progress=False)


# -- 1. r_total's injection counts from the step it joins --------------------------------------


def test_total_injection_window_counts_from_when_r_total_joins(tiny, spec_dict):
    spec = load_spec(spec_dict)  # an addition: r_total joins for the last 60% of the steps
    layout = Layout.from_spec(spec, tiny.latent_multiple, total_region=True)
    cond = encode_layers(layer_prompts(spec, layout), tiny)
    ctl, _ = build_controller(spec, layout, cond, tiny, "mrgd")
    total = layout.total.index
    plan = ctl.plans[total]
    assert plan.start == pytest.approx(0.4) and (plan.cross, plan.self_) == (0.5, 0.2)
    win = layout.total.window
    rows = BatchLayout(tuple(Row(i, total, Branch.COND, win) for i in (0, 1)))
    # at the step r_total joins its cross weight is 1, half way through its cross window 0.5
    for progress, weight, self_on in ((0.4, 1.0, True), (0.55, 0.5, False), (0.7, None, False)):
        ctl.set_progress(progress)
        call = ctl._call_plan(rows)
        assert [w for *_, w, _ in call.cross] == ([pytest.approx(weight)] if weight else [])
        assert bool(call.self_) == self_on


def test_inject_total_changes_the_target(tiny, spec_dict):
    spec_dict["options"] = dict(NO_GUIDANCE)
    default = _edit(spec_dict, tiny)
    spec_dict["options"] = {**NO_GUIDANCE, "inject_total": [0.0, 0.0]}
    off = _edit(spec_dict, tiny)
    scale = default.latents.abs().max().item()
    source_change = (default.latents[0] - off.latents[0]).abs().max().item()
    target_change = (default.latents[1] - off.latents[1]).abs().max().item()
    # the source inherits nothing (it only sees rounding from the explicit attention path)
    assert source_change <= 1e-4 * scale
    assert target_change > 100 * max(source_change, 1e-7 * scale)


# -- 2. region weight inside the drawn box ---------------------------------------------------


def test_region_weight_stays_inside_the_drawn_box(tiny):
    # 512 px: [0.1, 0.2, 0.35, 0.6] is latent x 6..29, y 13..51; the crop snaps to x 0..32, y 8..56
    spec = load_spec({"regions": [{"box": [0.1, 0.2, 0.35, 0.6], "source": "a", "target": "b"}]})
    layout = Layout.from_spec(spec, 8)
    region = layout.layers[1]
    assert (region.window.left, region.window.width, region.window.top, region.window.height) == (0, 32, 8, 48)
    full = torch.zeros(64, 64)
    full[region.window.slices] = region.weight
    assert float(full.sum()) > 0
    assert float(full[:, :6].sum()) == 0 and float(full[:, 29:].sum()) == 0
    assert float(full[:13].sum()) == 0 and float(full[51:].sum()) == 0
    assert bool((full[13:51, 6:29] > 0).all())  # positive everywhere inside the box
    report = layout.describe()
    assert [r["name"] for r in report] == ["background", "region 1"]
    assert report[1]["box_px"] == [48, 104, 184, 304] and report[1]["window_px"] == [0, 64, 256, 384]
    assert all(r["weight_outside_box"] == 0.0 for r in report)


def test_the_result_reports_the_layout(tiny, spec_dict):
    spec_dict["options"] = {**NO_GUIDANCE, "kssa": False}
    info = _edit(spec_dict, tiny, "multidiffusion").info
    assert [l["name"] for l in info["layout"]] == ["background", "region 1", "region 2"]
    assert all(set(l) == {"name", "box_px", "window_px", "weight_outside_box"} for l in info["layout"])
    assert all(l["weight_outside_box"] == 0.0 for l in info["layout"])


# -- 3. self-attention injection on the maps of the full image's 16x16 size or smaller ---------


def _self_site() -> Site:
    return Site("down.attn1", torch.nn.Identity(), "self", "down", "diffusers")


def test_self_injection_threshold_is_absolute_not_relative_to_the_crop():
    spec = load_spec({"regions": [{"box": [0.0, 0.0, 0.25, 0.25], "source": "a", "target": "b"},
                                  {"box": [0.5, 0.0, 0.5, 0.5], "source": "c", "target": "d"}]})
    layout = Layout.from_spec(spec, 8)  # 64x64 latent: the small crop is 16x16, the large 32x32
    assert layout.layers[1].window.size == (16, 16) and layout.layers[2].window.size == (32, 32)
    plans = {i: PairPlan(i, cross=0.0, self_=1.0, mapper=swap_mapper(77)) for i in (1, 2)}
    ctl = EditController(layout, plans, self_tokens=64 * 64 // 4**2)
    ctl.set_progress(0.0)
    site = _self_site()
    for layer, tokens, wanted in ((1, 256, True), (1, 64, True), (2, 1024, False), (2, 256, True)):
        win = layout.layers[layer].window
        rows = BatchLayout(tuple(Row(i, layer, Branch.COND, win) for i in (0, 1)))
        with ctl.call(rows):
            # a 16x16 crop at full resolution is a 16x16 map: as small as the paper's 16x16 maps
            assert ctl.wants(site, torch.zeros(2, tokens, 8), None) is wanted, (layer, tokens)


def test_self_replace_factor_keeps_its_meaning_relative_to_the_full_latent(tiny):
    spec = load_spec({"width": 512, "height": 256, "options": {"self_replace_factor": 2}})
    layout = Layout.from_spec(spec, 8)
    ctl, _ = build_controller(spec, layout, encode_layers(layer_prompts(spec, layout), tiny), tiny, "p2p")
    assert ctl.self_tokens == (64 // 2) * (32 // 2)


# -- 4. IS counts r_bg -------------------------------------------------------------------------


@pytest.mark.parametrize("background", ["a living room with a sofa", ""])
def test_is_is_active_with_a_single_edited_region(tiny, spec_dict, background):
    spec_dict["background"] = background
    spec_dict["regions"] = spec_dict["regions"][:1]  # one attribute edit: IS was identically 0
    result = _edit(spec_dict, tiny)
    late = [s for s in result.info["guidance"]["steps"] if s["progress"] >= 0.3]
    assert late and all(s["before"]["is"] > 0 for s in late)


# -- 5. guidance calibration -----------------------------------------------------------------


def _guidance(tiny, spec, **options):
    spec = load_spec({**spec, "options": options})
    layout = Layout.from_spec(spec, tiny.latent_multiple)
    g = Guidance(spec, layout, lambda z: tiny.decode_tensor(z, clamp=False), tiny.get_segmenter(),
                 lambda region, image: [], tiny.vae_scale)
    return spec, layout, g


def test_the_step_uses_the_gradient_by_the_vae_scaled_latent(tiny, spec_dict):
    spec, layout, g = _guidance(tiny, spec_dict)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 16, 16, generator=gen)
    x0 = 0.5 * torch.randn(2, 4, 16, 16, generator=gen)
    ab = 0.5
    with torch.enable_grad():
        leaf = x0.clone().requires_grad_(True)
        (by_x0,) = torch.autograd.grad(g.losses(leaf, 0.6)["total"], leaf)
    guided = g.correct(x, x0, step=0, progress=0.6, alpha_bar=ab, space="x0")
    shift = guided - x0
    # d/du = s * d/dx0 for u = x0 / s: the authors' variable
    assert g.move_source  # an attribute change moves both images
    expected = -step_size(ab) * tiny.vae_scale * by_x0
    assert torch.allclose(shift, expected, rtol=1e-4, atol=1e-7)


def test_ip_compares_rgb_in_minus_one_to_one_and_the_unscaled_latent(tiny, spec_dict):
    spec, layout, g = _guidance(tiny, spec_dict, lambda_rs=0.0, lambda_is=0.0, lambda_ip=1.0)
    gen = torch.Generator().manual_seed(1)
    x0 = 0.5 * torch.randn(2, 4, 16, 16, generator=gen)
    with torch.no_grad():
        ip = g.losses(x0, 0.3)["ip"]
        images = tiny.decode_tensor(x0, clamp=False).float()
    mask = g.inherent
    img_mask = torch.nn.functional.interpolate(mask[None, None], size=images.shape[-2:], mode="nearest")[0]
    s = tiny.vae_scale
    rgb = ((img_mask * 2 * (images[0] - images[1])) ** 2).mean()
    latent = ((mask * (x0[0] - x0[1]) / s) ** 2).mean()
    assert float(ip) == pytest.approx(float(rgb + latent), rel=1e-4)


# -- 6. the common prompt ----------------------------------------------------------------------


def test_common_prompt_is_prepended_to_every_layer(tiny, spec_dict):
    spec_dict.update(common="masterpiece, film grain", common_negative="watermark")
    spec = load_spec(spec_dict)
    layout = Layout.from_spec(spec, 8, total_region=True)
    prompts = layer_prompts(spec, layout)
    for (layer, image, branch), text in prompts.items():
        if branch == Branch.COND:
            assert text.startswith("masterpiece, film grain, "), text
            assert text.count("masterpiece") == 1
        else:
            assert text.startswith("watermark"), text
    assert prompts[(0, 0, Branch.COND)] == "masterpiece, film grain, a living room with a sofa, best quality"
    assert prompts[(1, 1, Branch.COND)] == "masterpiece, film grain, a girl in a blue sweater"
    assert prompts[(1, 1, Branch.UNCOND)] == "watermark, blurry"
    total = layout.total.index
    assert prompts[(total, 1, Branch.COND)].endswith("a girl in a blue sweater, a dog")
    # the common words belong to no region, so keyword selection never picks them
    ctl, _ = build_controller(spec, layout, encode_layers(prompts, tiny), tiny, "mrgd")
    tokens, tags = ctl.kw.tokens[1], ctl.kw.tags[1]
    assert all(tag is None for tok, tag in zip(tokens, tags) if tok in ("masterpiece</w>", "grain</w>"))


def test_common_prompt_changes_the_edit_and_its_inversion_fingerprint(tiny, spec_dict):
    spec_dict["options"] = {**NO_GUIDANCE}
    plain = _edit(spec_dict, tiny, "multidiffusion")
    spec_dict["common"] = "oil painting"
    with_common = _edit(spec_dict, tiny, "multidiffusion")
    assert not torch.allclose(plain.latents, with_common.latents, atol=1e-5)
    a, b = copy.deepcopy(spec_dict), copy.deepcopy(spec_dict)
    a.pop("common")
    layout = Layout.from_spec(load_spec(a), 8)
    assert source_fingerprint(load_spec(a), layout) != source_fingerprint(load_spec(b), layout)
    # an empty common prompt keeps the fingerprint inversions saved before it existed
    assert source_fingerprint(load_spec({**a, "common": ""}), layout) == source_fingerprint(load_spec(a), layout)


def test_main_prompt_common_must_be_a_boolean():
    from lib_mrgd import SpecError

    with pytest.raises(SpecError, match="^main_prompt_common: expected true or false"):
        load_spec({"main_prompt_common": "yes"})
    assert load_spec({}).main_prompt_common is True
