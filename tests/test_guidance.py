"""CLIPSeg multi-region guidance (Eqs. 2-4) on the tiny models."""

from __future__ import annotations

import copy

import pytest
import torch

from lib_mrgd import ModelError, run_edit
from lib_mrgd.guidance.guide import correct, output_per_x0, step_size, to_x0
from lib_mrgd.guidance.losses import inherent_preservation, inter_image_similarity, region_specific
from lib_mrgd.backends.clipseg import load_segmenter, tiny_segmenter


@pytest.fixture(scope="module")
def seg():
    return tiny_segmenter(0)


def test_the_gradient_reaches_the_pixels_through_clipseg(seg):
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    masks = seg.masks(images, [0, 1, 1], ["a cat", "a dog", "a red car"], (8, 8))
    assert masks.shape == (3, 8, 8) and bool(((masks > 0) & (masks < 1)).all())
    masks.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert images.grad[0].abs().sum() > 0 and images.grad[1].abs().sum() > 0


def test_different_queries_give_different_masks(seg):
    images = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        masks = seg.masks(images, [0, 0], ["a cat", "a lamp on a table"], (8, 8))
    assert not torch.allclose(masks[0], masks[1])


def test_region_specific_loss():
    box = torch.zeros(1, 8, 8)
    box[:, 2:6, 2:6] = 1
    inside = box.clone() * 0.9
    assert region_specific(inside, box).item() == 0.0
    leak = inside.clone()
    leak[:, 0, :] = 0.5
    more = leak.clone()
    more[:, 7, :] = 0.5
    assert 0 < region_specific(leak, box).item() < region_specific(more, box).item()


def test_inter_image_similarity_prefers_matched_regions():
    gen = torch.Generator().manual_seed(0)
    source = torch.rand(3, 8, 8, generator=gen)
    target = source + 0.05 * torch.rand(3, 8, 8, generator=gen)
    matched = inter_image_similarity(source, target, 0.07)
    permuted = inter_image_similarity(source, target[[1, 2, 0]], 0.07)
    assert matched < permuted
    assert inter_image_similarity(source[:1], target[:1], 0.07).item() == 0.0  # one region: nothing to contrast


def test_inherent_preservation_is_zero_for_identical_images():
    img, lat = torch.rand(3, 16, 16), torch.rand(4, 2, 2)
    ones = torch.ones(1, 16, 16)
    assert inherent_preservation(img, img, ones, lat, lat, torch.ones(2, 2)).item() == 0.0
    other = img.clone()
    other[:, :8] += 0.5
    mask = torch.ones(1, 16, 16)
    assert inherent_preservation(img, other, mask, lat, lat, torch.ones(2, 2)).item() > 0
    mask[:, :8] = 0  # the difference lies outside the inherent area
    assert inherent_preservation(img, other, mask, lat, lat, torch.ones(2, 2)).item() == 0.0


@pytest.mark.parametrize("alpha_bar", [0.05, 0.5, 0.97])
def test_one_correction_formula_in_eps_and_x0_space(alpha_bar):
    gen = torch.Generator().manual_seed(0)
    x, eps, grad = (torch.randn(2, 4, 4, 4, generator=gen, dtype=torch.float64) for _ in range(3))
    x0 = to_x0(eps, x, alpha_bar, "eps")
    guided_x0 = correct(x0, alpha_bar, grad, "x0")
    guided_eps = correct(eps, alpha_bar, grad, "eps")
    expected = x0 - step_size(alpha_bar) * grad
    assert torch.allclose(guided_x0, expected)
    assert torch.allclose(to_x0(guided_eps, x, alpha_bar, "eps"), expected)
    assert output_per_x0(alpha_bar, "x0") == 1.0


def _spec(spec_dict, **options):
    spec_dict["regions"].append({"box": [0.55, 0.0, 0.4, 0.25], "source": "a lamp", "target": "a lamp"})
    spec_dict["steps"] = 8
    spec_dict["options"] = options
    return spec_dict


def test_guidance_off_equals_the_unguided_path_exactly(tiny, spec_dict):
    spec = _spec(spec_dict)
    off = run_edit({**spec, "options": {"guidance": False}}, tiny, method="mrgd", progress=False)
    zero = run_edit({**spec, "options": {"lambda_rs": 0, "lambda_is": 0, "lambda_ip": 0}}, tiny,
                    method="mrgd", progress=False)
    on = run_edit(spec, tiny, method="mrgd", progress=False)
    assert off.info["guidance"] == {"enabled": False}
    assert torch.equal(off.latents, zero.latents)  # zero loss weights: the correction is a no-op
    assert not torch.allclose(off.latents, on.latents, atol=1e-3)


def test_guidance_off_never_touches_clipseg(spec_dict):
    from lib_mrgd.backends.tiny import tiny_pipeline

    pipe = tiny_pipeline()

    class Broken:
        def __getattr__(self, name):
            raise AssertionError("CLIPSeg used with guidance off")

    pipe.segmenter = Broken()
    run_edit(_spec(spec_dict, guidance=False), pipe, method="mrgd", progress=False)


def test_an_addition_leaves_the_source_untouched_by_guidance(tiny, spec_dict):
    spec_dict["regions"] = [{"box": [0.5, 0.5, 0.5, 0.5], "target": "a dog"},
                            {"box": [0.0, 0.0, 0.5, 0.5], "target": "a lamp"}]
    off = run_edit({**spec_dict, "options": {"guidance": False}}, tiny, method="mrgd", progress=False)
    on = run_edit(spec_dict, tiny, method="mrgd", progress=False)
    assert torch.equal(on.latents[0], off.latents[0])
    assert not torch.allclose(on.latents[1], off.latents[1], atol=1e-3)


def test_the_loss_falls_at_every_correction_at_a_tenth_of_the_paper_step(tiny, spec_dict):
    spec = _spec(spec_dict, lambda_rs=100.0, lambda_is=200.0, lambda_ip=30.0, guidance_check=True)
    records = run_edit(spec, tiny, method="mrgd", progress=False).info["guidance"]["steps"]
    assert len(records) == 8
    for r in records:
        assert r["after"]["total"] <= r["before"]["total"], r
        assert set(r["before"]) == {"rs", "is", "ip", "total"}


def test_loss_windows_and_guidance_every(tiny, spec_dict):
    spec = _spec(spec_dict, guidance_every=2, guidance_decode_scale=0.5, guidance_check=True)
    info = run_edit(spec, tiny, method="mrgd", progress=False).info["guidance"]
    steps = info["steps"]
    assert [r["step"] for r in steps] == [0, 2, 4, 6]
    for r in steps:  # IS from 0.3 of the steps on, IP from 0.2
        assert (r["before"]["is"] > 0) == (r["progress"] >= 0.3)
        assert (r["before"]["ip"] > 0) == (r["progress"] >= 0.2)
    assert 0.0 <= info["decreased_fraction"] <= 1.0


def test_clipseg_loads_from_a_folder(seg, tmp_path):
    seg.model.save_pretrained(tmp_path / "clipseg")
    seg.tokenizer.save_pretrained(tmp_path / "clipseg")
    loaded = load_segmenter(tmp_path / "clipseg", "cpu", torch.float32)
    images = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.allclose(loaded.masks(images, [0], ["a cat"], (4, 4)), seg.masks(images, [0], ["a cat"], (4, 4)))


def test_missing_clipseg_weights_offline_is_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelError) as err:
        load_segmenter(None, "cpu", torch.float32, fill_hint="fill models/clipseg/clipseg-rd64-refined/")
    assert "'CIDAS/clipseg-rd64-refined'" in str(err.value) and "fill models/clipseg/clipseg-rd64-refined/" in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="cannot load CLIPSeg from"):
        load_segmenter(tmp_path / "empty", "cpu", torch.float32)
    with pytest.raises(ModelError, match="CLIPSeg weights folder not found"):
        load_segmenter(tmp_path / "nowhere", "cpu", torch.float32)


def test_the_check_after_each_correction_is_opt_in_and_changes_nothing(tiny, spec_dict):
    checked = run_edit(_spec(copy.deepcopy(spec_dict), guidance_check=True), tiny, method="mrgd", progress=False)
    plain = run_edit(_spec(spec_dict), tiny, method="mrgd", progress=False)
    assert torch.equal(checked.latents, plain.latents)  # a record, not a change
    assert all("after" in r for r in checked.info["guidance"]["steps"])
    assert not any("after" in r for r in plain.info["guidance"]["steps"])
    assert plain.info["guidance"]["decreased_fraction"] is None


def test_the_tiny_decoder_is_an_option_that_guides_differently(tiny, spec_dict):
    vae = run_edit(_spec(copy.deepcopy(spec_dict)), tiny, method="mrgd", progress=False)
    small = run_edit(_spec(copy.deepcopy(spec_dict), guidance_decoder="tiny"), tiny, method="mrgd", progress=False)
    off = run_edit(_spec(spec_dict, guidance=False), tiny, method="mrgd", progress=False)
    assert small.info["guidance"]["steps"] and not small.info["warnings"]
    # it guides (the target moves) and it is another decoder (a different correction)
    assert (small.latents[1] - off.latents[1]).abs().mean() > 1e-3
    assert not torch.allclose(small.latents, vae.latents, atol=1e-4)
