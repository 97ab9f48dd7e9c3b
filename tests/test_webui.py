"""The WebUI extension through a stand-in of the v1.10.1 modules (tests/standin), tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from standin.harness import FIELDS, SPEC, img2img, txt2img

from lib_mrgd.layout import Branch


def _leftovers(tiny, p=None):
    """Names of instance patches of ours still on the model or this request's sampler."""
    found = [n for n, m in tiny.unet.named_modules() if "forward" in vars(m)]
    if p is not None and getattr(p, "sampler", None) is not None:
        cfg = p.sampler.model_wrap_cfg
        for obj, name in ((cfg, "forward"), (cfg.inner_model, "forward"), (p.sampler, "sample"),
                          (p.sampler, "sample_img2img")):
            if name in vars(obj):
                found.append(f"{type(obj).__name__}.{name}")
    return found


def _plain(tiny, **extra):
    p, processed = txt2img(None, None, **{**FIELDS, "batch_size": 2, **extra})
    return np.asarray(processed.images[0]), np.asarray(processed.images[1])


@pytest.mark.parametrize("sampler", ["DDIM", "Euler a"])
def test_txt2img_makes_source_and_target_and_cleans_up(tiny, script, sampler):
    before = _plain(tiny, sampler_name=sampler)
    p, processed = txt2img(script, json.dumps(SPEC), sampler_name=sampler, **FIELDS)
    assert p.scripts.errors == []
    assert len(processed.images) == 2 and processed.all_seeds == [7, 7]
    assert "MRGD: " in processed.infotexts[0]
    assert "MRGD image: source" in processed.infotexts[0] and "MRGD image: target" in processed.infotexts[1]
    assert processed.infotexts[0].startswith("a living room, best quality\nNegative prompt: blurry\n")
    source, target = (np.asarray(im, dtype=float) for im in processed.images)
    assert np.abs(source - target)[40:, 80:].mean() > np.abs(source - target)[:30, :30].mean()
    assert _leftovers(tiny, p) == []
    after = _plain(tiny, sampler_name=sampler)
    assert all(np.array_equal(a, b) for a, b in zip(before, after))  # a plain run is bit-identical


def test_prompts_stay_strings_and_the_seed_list_makes_the_pair(tiny, script):
    p, _ = txt2img(script, SPEC, enable_hr=True, **FIELDS)
    assert (p.prompt, p.negative_prompt) == (FIELDS["prompt"], FIELDS["negative_prompt"])
    assert p.hr_prompt == "" and p.seed == [7, 7] and p.batch_size == 2  # the host copies prompts into hires


def test_the_infotext_field_restores_the_spec(tiny, script):
    p, processed = txt2img(script, SPEC, **FIELDS)
    line = processed.infotexts[1].splitlines()[-1]
    value = json.loads(line.split("MRGD: ", 1)[1].split(", MRGD image")[0])  # quoted JSON, as the host writes it
    restored = json.loads(value)
    assert [r["target"] for r in restored["regions"]] == ["a girl in a blue sweater", "a dog"]
    assert "common" not in restored and "seed" not in restored  # the host's own fields carry those
    assert restored["main_prompt_common"] is True and restored["background"] == ""
    assert restored["options"]["lambda_rs"] == 1000.0


def _mrgd_json(processed) -> dict:
    line = processed.infotexts[0].splitlines()[-1]
    return json.loads(json.loads(line.split("MRGD: ", 1)[1].split(", MRGD image")[0]))


def test_main_prompt_goes_to_common_or_to_background(tiny, script, monkeypatch):
    from lib_mrgd import conditioning, engine

    seen = []

    def spy(prompts, model):
        seen.append(dict(prompts))
        return conditioning.encode_layers(prompts, model)

    monkeypatch.setattr(engine, "encode_layers", spy)
    on = {**SPEC, "background": "a sofa"}
    p, processed = txt2img(script, on, **FIELDS)
    prompts = seen[-1]
    # every layer starts with the main prompt; the background layer adds the panel's Background
    assert prompts[(0, 0, Branch.COND)] == "a living room, best quality, a sofa"
    assert prompts[(1, 1, Branch.COND)] == "a living room, best quality, a girl in a blue sweater"
    assert prompts[(1, 1, Branch.UNCOND)] == "blurry"
    assert (p.prompt, p.negative_prompt) == (FIELDS["prompt"], FIELDS["negative_prompt"])
    restored = _mrgd_json(processed)
    assert restored["background"] == "a sofa" and "common" not in restored

    off = {**SPEC, "background": "ignored", "main_prompt_common": False}
    p, processed = txt2img(script, off, **FIELDS)
    prompts = seen[-1]
    assert prompts[(0, 0, Branch.COND)] == "a living room, best quality"  # the main prompt is r_bg
    assert prompts[(1, 1, Branch.COND)] == "a girl in a blue sweater"
    restored = _mrgd_json(processed)
    assert restored["main_prompt_common"] is False and "background" not in restored
    assert restored["common"] == ""


def test_api_argument_as_dict_and_as_json_string_give_the_same_pair(tiny, script):
    _, a = txt2img(script, SPEC, **FIELDS)
    _, b = txt2img(script, json.dumps(SPEC), **FIELDS)
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a.images, b.images))


def test_no_spec_or_enabled_false_is_a_plain_run(tiny, script):
    _, processed = txt2img(script, "", **FIELDS)
    assert len(processed.images) == 1 and "MRGD" not in processed.infotexts[0]
    _, processed = txt2img(script, {**SPEC, "enabled": False}, **FIELDS)
    assert len(processed.images) == 1


def test_a_bad_spec_fails_the_request_with_its_field_path_and_changes_nothing(tiny, script):
    bad = {"regions": [{"box": [0.1, 0.2, 0.3, 0.0], "source": "a cat"}]}
    with pytest.raises(ValueError, match=r"^region 1 \(regions\[0\]\.box\): height must be > 0"):
        txt2img(script, bad, **FIELDS)
    assert _leftovers(tiny) == []
    with pytest.raises(ValueError, match=r"^spec: invalid JSON"):
        txt2img(script, "{not json", **FIELDS)
    _, processed = txt2img(script, SPEC, **FIELDS)  # and the next request is served
    assert len(processed.images) == 2


def test_and_in_the_prompt_is_refused(tiny, script):
    with pytest.raises(ValueError, match="AND"):
        txt2img(script, SPEC, **{**FIELDS, "prompt": "a room AND a garden"})
    assert _leftovers(tiny) == []


def test_an_exception_mid_sampling_restores_everything(tiny, script, monkeypatch):
    before = _plain(tiny)
    calls = {"n": 0}
    original = tiny.unet.forward

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("device lost")
        return original(*args, **kwargs)

    monkeypatch.setattr(tiny.unet, "forward", flaky)
    with pytest.raises(RuntimeError, match="device lost"):
        txt2img(script, SPEC, **FIELDS)
    monkeypatch.undo()
    assert _leftovers(tiny) == []
    assert all(np.array_equal(a, b) for a, b in zip(before, _plain(tiny)))


def test_an_interrupt_returns_and_restores(tiny, script):
    from modules import shared, sd_samplers_cfg_denoiser

    seen = {"n": 0}
    original = sd_samplers_cfg_denoiser.CFGDenoiser.forward

    def interrupt_on_third(self, *args, **kwargs):
        seen["n"] += 1
        if seen["n"] == 3:
            shared.state.interrupted = True
        return original(self, *args, **kwargs)

    sd_samplers_cfg_denoiser.CFGDenoiser.forward = interrupt_on_third
    try:
        p, processed = txt2img(script, SPEC, **FIELDS)
    finally:
        sd_samplers_cfg_denoiser.CFGDenoiser.forward = original
        shared.state.interrupted = False
    assert len(processed.images) == 2
    assert _leftovers(tiny, p) == []


def test_long_prompts_split_cond_and_uncond_calls(tiny, script):
    long_prompt = ", ".join(["a cozy living room with plants"] * 20)  # two chunks vs one for the negative
    p, processed = txt2img(script, SPEC, **{**FIELDS, "prompt": long_prompt})
    assert p.scripts.errors == [] and len(processed.images) == 2
    assert _leftovers(tiny, p) == []


def test_batch_cond_uncond_off_gives_the_same_pair(tiny, script):
    from modules import shared

    _, a = txt2img(script, SPEC, **FIELDS)
    shared.opts.data["batch_cond_uncond"] = False
    try:
        _, b = txt2img(script, SPEC, **FIELDS)
    finally:
        shared.opts.data.pop("batch_cond_uncond")
    diff = max(np.abs(np.asarray(x, float) - np.asarray(y, float)).max() for x, y in zip(a.images, b.images))
    assert diff <= 2  # the same edit; only batching rounding may differ


def test_token_merging_is_off_during_the_run_and_restored(tiny, script):
    from modules import shared, sd_samplers_cfg_denoiser

    shared.opts.data["token_merging_ratio"] = 0.5
    seen = []
    original = sd_samplers_cfg_denoiser.CFGDenoiser.forward

    def spy(self, *args, **kwargs):
        seen.append(shared.opts.token_merging_ratio)
        return original(self, *args, **kwargs)

    sd_samplers_cfg_denoiser.CFGDenoiser.forward = spy
    try:
        txt2img(script, SPEC, **FIELDS)
    finally:
        sd_samplers_cfg_denoiser.CFGDenoiser.forward = original
    assert set(seen) == {0.0}
    assert shared.opts.token_merging_ratio == 0.5
    shared.opts.data.pop("token_merging_ratio")


def _init_image():
    yy, xx = np.mgrid[0:128, 0:128] / 128
    rgb = np.stack([np.sin(6 * xx + 1) * 0.5 + 0.5, np.cos(5 * yy) * 0.5 + 0.5, xx * yy], -1)
    return Image.fromarray((rgb * 255).astype(np.uint8))


@pytest.mark.parametrize("sampler", ["DDIM", "Euler a"])
def test_img2img_starts_from_the_inversion_with_ddim(tiny, script, sampler):
    from lib_mrgd.inversion import latent_psnr

    fields = {**FIELDS, "sampler_name": sampler, "steps": 10, "cfg_scale": 5.0}
    runs = {}
    for inversion in (True, False):
        spec = {**SPEC, "options": {"img2img_inversion": inversion, "guidance": False}}
        p, processed = img2img(script, spec, _init_image(), denoising_strength=0.8, **fields)
        assert p.scripts.errors == [] and len(processed.images) == 2
        assert _leftovers(tiny, p) == []
        runs[inversion] = latent_psnr(p.init_latent[0], p.samples[0])
    print(f"img2img {sampler}: source latent PSNR vs init {runs[True]:.2f} dB with inversion, {runs[False]:.2f} without")
    if sampler == "DDIM":  # the source reconstructs the init image far better from its inversion
        assert runs[True] > runs[False] + 5, runs
    else:  # other samplers: plain img2img, with a warning in the console summary
        assert runs[True] == runs[False]


def test_ui_twice_has_no_side_effects(script):
    import gradio as gr

    from modules import script_callbacks

    counts = {k: len(v) for k, v in script_callbacks.callbacks.items()}
    outputs = []
    for _ in range(2):
        with gr.Blocks():
            outputs.append(script.ui(False))
    assert [len(o) for o in outputs] == [1, 1]
    assert len(script.infotext_fields) == 1 and script.paste_field_names == ["MRGD"]
    assert {k: len(v) for k, v in script_callbacks.callbacks.items()} == counts
    assert outputs[1][0].value == ""  # the spec box starts empty: the script is off by default


def test_settings_register_in_their_own_section(script):
    from modules import script_callbacks, shared

    for cb in script_callbacks.callbacks["ui_settings"]:
        cb()
    infos = {k: v for k, v in shared.opts.data_labels.items() if k.startswith("mrgd_")}
    assert set(infos) == {"mrgd_clipseg_path", "mrgd_max_regions", "mrgd_guidance_dtype"}
    assert {v.section for v in infos.values()} == {("mrgd", "Multi-Region Guided Diffusion")}


def test_the_max_regions_setting_is_enforced(tiny, script):
    from modules import shared

    shared.opts.data["mrgd_max_regions"] = 1
    try:
        with pytest.raises(ValueError, match=r"^regions: at most 1 region \(the MRGD maximum-regions setting\), got 2"):
            txt2img(script, SPEC, **FIELDS)
        # an API client's override_settings apply to this request, although the host applies
        # them only after before_process
        _, processed = txt2img(script, SPEC, override_settings={"mrgd_max_regions": 2}, **FIELDS)
        assert len(processed.images) == 2
    finally:
        shared.opts.data.pop("mrgd_max_regions")
    with pytest.raises(ValueError, match=r"^regions: at most 1 region "):
        txt2img(script, SPEC, override_settings={"mrgd_max_regions": 1}, **FIELDS)


def test_script_unloaded_sweeps_stale_hooks(tiny, script):
    from lib_mrgd.attention.patcher import attach, find_sites
    from modules import script_callbacks

    class Idle:
        def wants(self, *a):
            return False

    attach(find_sites(tiny.unet), Idle())  # as a crashed run would leave them
    assert _leftovers(tiny)
    script_callbacks.script_unloaded_callback()
    assert _leftovers(tiny) == []


def test_missing_clipseg_weights_fail_the_request_naming_the_folder(tiny, script, tmp_path, monkeypatch):
    from modules import shared

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    shared.opts.data["mrgd_clipseg_path"] = str(tmp_path / "empty")
    try:
        with pytest.raises(ValueError, match=r"^guidance: CLIPSeg weights are missing.*" + str(tmp_path / "empty")):
            txt2img(script, SPEC, **FIELDS)
        _, processed = txt2img(script, {**SPEC, "options": {"guidance": False}}, **FIELDS)  # guidance off needs none
        assert len(processed.images) == 2
    finally:
        shared.opts.data.pop("mrgd_clipseg_path")
    assert _leftovers(tiny) == []
