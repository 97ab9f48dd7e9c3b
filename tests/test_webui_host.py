"""What a real WebUI v1.10.1 does around an MRGD run, in the stand-in host: the refiner switch, the
X/Y/Z plot, interrupts and progress during img2img inversion, prompt comments and extra-network
tags, DDIM eta, pasted infotexts, the pair without a grid, notes in the infotext, second-order
samplers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from standin.harness import FIELDS, SPEC, StandInSDModel, img2img, install_model, txt2img


def _arrays(processed):
    return [np.asarray(im) for im in processed.images]


def _leftovers(tiny):
    return [n for n, m in tiny.unet.named_modules() if "forward" in vars(m)]


def _photo() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray((rng.random((128, 128, 3)) * 255).astype(np.uint8))


def test_the_refiner_pass_runs_plain_with_a_note(tiny, script):
    from modules import shared

    refiner = StandInSDModel(tiny)
    try:
        p, processed = txt2img(script, SPEC, refiner_checkpoint_info=refiner, refiner_switch_at=0.5, **FIELDS)
    finally:
        install_model(tiny)  # the switch sent the base model's schedule to meta
    assert p.scripts.errors == [] and len(processed.images) == 2
    assert p.extra_generation_params["Refiner"] == "refiner" and shared.sd_model is not refiner
    assert "MRGD notes: " in processed.infotexts[1] and "refiner pass is plain" in processed.infotexts[1]
    assert _leftovers(tiny) == []
    source, target = (np.asarray(im, dtype=float) for im in processed.images)
    assert np.abs(source - target).mean() > 0  # the base steps made the edit


def test_xyz_plot_cells_show_the_pair_and_the_grid_says_so(tiny, script):
    from standin.xyz import XYZPlot

    p, processed = txt2img(script, SPEC, selected=XYZPlot(), selected_args=("steps", [4, 6]), **FIELDS)
    grid, *cells = processed.images
    assert [c.size for c in cells] == [(2 * FIELDS["width"], FIELDS["height"])] * 2  # source | target
    assert "MRGD image: pair" in processed.infotexts[0]  # the plot's grid
    assert all("MRGD image: pair" in t for t in processed.infotexts[1:])
    _, direct = txt2img(script, SPEC, **{**FIELDS, "steps": 4})
    right = np.asarray(cells[0])[:, FIELDS["width"]:]
    assert np.array_equal(right, np.asarray(direct.images[1]))  # the cell's right half is the target


def test_a_single_pair_has_no_grid(tiny, script):
    _, processed = txt2img(script, SPEC, **FIELDS)
    assert len(processed.images) == 2 and processed.index_of_first_image == 0
    assert "MRGD image: source" in processed.infotexts[0] and "MRGD image: target" in processed.infotexts[1]
    _, plain = txt2img(None, None, **{**FIELDS, "batch_size": 2})
    assert len(plain.images) == 3  # the host's own grid for a plain batch is untouched


def test_interrupt_during_img2img_inversion_is_answered_within_a_step_and_progress_moves(tiny, script, monkeypatch):
    from modules import shared

    model = shared.sd_model
    original = model.apply_model
    seen: list[tuple] = []
    stop_at = 25

    def counting(x, t, cond):
        seen.append((shared.state.sampling_step, shared.state.sampling_steps, shared.state.textinfo))
        if len(seen) == stop_at:
            shared.state.interrupted = True
        return original(x, t, cond)

    monkeypatch.setattr(model, "apply_model", counting)
    monkeypatch.setattr(shared.state, "textinfo", None)
    fields = {**FIELDS, "steps": 10, "sampler_name": "DDIM"}
    try:
        p, processed = img2img(script, {**SPEC, "options": {"guidance": False}}, _photo(), denoising_strength=0.9, **fields)
    finally:
        shared.state.interrupted = False
    phases = [s for s in seen if s[2] and s[2].startswith("MRGD")]
    # strength 0.9 of 10 steps: 8 inversion steps, then 8 null-text steps
    assert len({s[0] for s in phases}) >= 3 and {s[1] for s in phases} == {16}
    per_step = max(sum(1 for s in phases if s[0] == k) for k in {s[0] for s in phases})
    print("calls per inversion step", per_step, "calls after the interrupt", len(seen) - stop_at)
    # checked before every UNet evaluation: the fused evaluation running at the interrupt finishes
    assert len(seen) - stop_at < per_step // 2
    assert len(processed.images) == 2 and _leftovers(tiny) == []
    assert shared.state.textinfo is None  # nothing stale left for the next phase


def test_comments_and_extra_network_tags_do_not_change_what_mrgd_encodes(tiny, script):
    _, plain = txt2img(script, SPEC, **FIELDS)
    noisy_fields = {**FIELDS, "prompt": "a living room, best quality <lora:detail:0.8>\n# my note"}
    region = {**SPEC["regions"][0], "target": "a girl in a blue sweater # not navy"}
    p, noisy = txt2img(script, {"regions": [region, SPEC["regions"][1]]}, **noisy_fields)
    assert all(np.array_equal(a, b) for a, b in zip(_arrays(plain), _arrays(noisy)))
    tagged = {**SPEC["regions"][1], "target": "a dog <lora:dogs:1>"}
    _, processed = txt2img(script, {"regions": [SPEC["regions"][0], tagged]}, **FIELDS)
    assert "extra networks in a region prompt are not applied" in processed.infotexts[0]


@pytest.mark.parametrize("value", ["false", 0, "no", None, 1])
def test_enabled_must_be_a_boolean(tiny, script, value):
    with pytest.raises(ValueError, match="^enabled: expected true or false"):
        txt2img(script, {**SPEC, "enabled": value}, **FIELDS)
    with pytest.raises(ValueError, match="^enabled: expected true or false"):
        txt2img(script, json.dumps({**SPEC, "enabled": value}), **FIELDS)


def test_ddim_eta_is_set_to_zero_for_the_inversion_and_said(tiny, script):
    fields = {**FIELDS, "steps": 6, "sampler_name": "DDIM"}
    spec = {**SPEC, "options": {"guidance": False}}
    _, zero = img2img(script, spec, _photo(), denoising_strength=0.8, **fields)
    p, one = img2img(script, spec, _photo(), denoising_strength=0.8, eta=1.0, **fields)
    assert p.eta == 0.0 and "eta 1 set to 0 for img2img inversion" in one.infotexts[0]
    assert all(np.array_equal(a, b) for a, b in zip(_arrays(zero), _arrays(one)))


def test_a_pasted_infotext_without_mrgd_switches_it_off(tiny, script):
    from lib_mrgd.webui import session

    assert session.pasted_value({"MRGD": '{"regions":[]}'}) == '{"regions":[]}'
    off = session.pasted_value({"Steps": "20"})
    assert json.loads(off)["enabled"] is False
    _, processed = txt2img(script, off, **FIELDS)
    assert len(processed.images) == 1 and "MRGD" not in processed.infotexts[0]
    import gradio as gr

    with gr.Blocks():
        script.ui(False)
    field, key = script.infotext_fields[0]
    assert key({}) == off and key({"MRGD": "{}"}) == "{}"  # what the host's paste calls


def test_batch_count_makes_one_pair_per_seed(tiny, script):
    p, processed = txt2img(script, SPEC, n_iter=3, **FIELDS)
    assert p.scripts.errors == [] and len(processed.images) == 6 and p.n_iter == 3
    assert processed.all_seeds == [7, 7, 8, 8, 9, 9]
    names = [t.split("MRGD image: ")[1].split(",")[0].split("\n")[0] for t in processed.infotexts]
    assert names == ["source", "target"] * 3
    _, single = txt2img(script, SPEC, **{**FIELDS, "seed": 8})
    for got, want in zip(processed.images[2:4], single.images):  # pair 2 is the edit with seed 8
        assert np.array_equal(np.asarray(got), np.asarray(want))
    assert "MRGD notes" not in processed.infotexts[0]


def test_batch_size_above_one_is_refused_naming_batch_count(tiny, script):
    with pytest.raises(ValueError, match=r"^batch_size: .*batch size must be 1 \(got 2\); use batch count"):
        txt2img(script, SPEC, **{**FIELDS, "batch_size": 2})


def test_guidance_runs_once_per_sampler_step_with_a_second_order_sampler(tiny, script):
    p, processed = txt2img(script, SPEC, sampler_name="Heun", **FIELDS)
    assert p.scripts.errors == [] and len(processed.images) == 2
    records = p.mrgd_runtime.edit.guidance.records
    assert [r["step"] for r in records] == list(range(FIELDS["steps"]))  # 6 steps, 11 model calls


def test_a_corrupt_clipseg_file_names_its_folder(tmp_path, tiny):
    from lib_mrgd import ModelError
    from lib_mrgd.backends.clipseg import load_segmenter

    folder = tmp_path / "clipseg-rd64-refined"
    tiny.segmenter.model.save_pretrained(folder)
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    import torch

    with pytest.raises(ModelError, match=f"cannot load CLIPSeg from {folder}"):
        load_segmenter(folder, "cpu", torch.float32)


def test_the_tiny_guidance_decoder_falls_back_to_the_vae_with_a_note(tiny, script):
    spec = {**SPEC, "options": {"guidance_decoder": "tiny"}}
    p, processed = txt2img(script, spec, **FIELDS)
    assert p.scripts.errors == [] and len(processed.images) == 2
    assert "guidance_decoder tiny is not available here" in processed.infotexts[0]
    assert p.mrgd_runtime.edit.guidance.records  # guided all the same, through the VAE
