"""SD2 in the standalone package: the tiny-sd2 model has SD2's differences from SD1 (linear
transformer projections, per-block head counts, an OpenCLIP-style text encoder padding with id
0, v-prediction), and every part of the method runs on it."""

from __future__ import annotations

import pytest
import torch

import lib_mrgd
from lib_mrgd.inversion import latent_psnr, reconstruct

SPEC = {"width": 64, "height": 64, "seed": 3, "steps": 4, "background": "a room",
        "regions": [{"box": [0.0, 0.0, 0.5, 1.0], "source": "a red cat", "target": "a blue cat", "keywords": ["cat"]},
                    {"box": [0.5, 0.5, 0.5, 0.5], "source": "", "target": "a lamp"}]}


@pytest.fixture(scope="module")
def sd2():
    return lib_mrgd.load_pipeline("tiny-sd2", device="cpu")


def test_tiny_sd2_has_the_sd2_differences(sd2, tiny):
    assert sd2.prediction_type == "v_prediction" and tiny.prediction_type == "epsilon"
    assert sd2.unet.config.use_linear_projection and not tiny.unet.config.use_linear_projection
    assert list(sd2.unet.config.attention_head_dim) == [2, 4, 4]
    assert sd2.text_encoder.config.hidden_act == "gelu"
    assert sd2.pad_id == 0 and tiny.pad_id == tiny.eos_id
    ids = sd2.context_ids("a cat")
    # the WebUI's chunk for SD2: BOS, the words, padding (0), EOS at the end
    assert ids[:3] == [sd2.bos_id, *ids[1:3]] and ids[3] == 0 and ids[76] == sd2.eos_id


def test_v_prediction_is_turned_into_eps(sd2, monkeypatch):
    x0, eps = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    t = torch.tensor([900, 100])
    a = sd2.alphas_cumprod[t].float()[:, None, None, None]
    x = a.sqrt() * x0 + (1 - a).sqrt() * eps
    v = a.sqrt() * eps - (1 - a).sqrt() * x0

    class V(torch.nn.Module):
        def forward(self, sample, timestep, encoder_hidden_states):
            return type("Out", (), {"sample": v})()

    monkeypatch.setattr(sd2, "unet", V())
    got = sd2.denoise(x, t, torch.zeros(2, 77, 64))
    assert torch.allclose(got, eps, atol=1e-5)


def test_a_different_prompt_gives_a_different_image(sd2):
    a = lib_mrgd.run_edit({**SPEC, "regions": []}, sd2, method="multidiffusion", progress=False)
    b = lib_mrgd.run_edit({**SPEC, "regions": [], "background": "a beach"}, sd2, method="multidiffusion", progress=False)
    assert (a.latents - b.latents).abs().mean() > 1e-2


@pytest.mark.parametrize("method", ["multidiffusion", "p2p", "mrgd"])
def test_every_method_edits_on_sd2(sd2, method):
    result = lib_mrgd.run_edit(SPEC, sd2, method=method, progress=False)
    assert (result.latents[0] - result.latents[1]).abs().mean() > 1e-2  # the target is edited
    if method == "mrgd":
        assert result.info["guidance"]["steps"] and result.info["keywords"][0]["keywords"][0] == "cat"


def test_no_regions_is_the_plain_pair_on_sd2(sd2):
    plain = lib_mrgd.run_edit({**SPEC, "regions": []}, sd2, method="multidiffusion", progress=False)
    full = lib_mrgd.run_edit({**SPEC, "regions": []}, sd2, method="mrgd", progress=False)
    assert torch.equal(full.latents[0], full.latents[1])  # nothing to edit: the target is the source
    # the patched attention computes the same softmax(qk)v as the module's own kernel
    assert (plain.latents - full.latents).abs().max() <= 1e-4


def test_inversion_round_trip_on_a_v_prediction_model(sd2):
    from test_inversion import photo

    spec = {**SPEC, "cfg_scale": 1.0, "steps": 10}
    inversion = lib_mrgd.invert(photo(64), spec, sd2, method="p2p", progress=False)
    z0 = sd2.encode_image(photo(64))
    plain = latent_psnr(z0, reconstruct(lib_mrgd.invert(photo(64), spec, sd2, method="p2p", progress=False, refine=0),
                                        spec, sd2))
    exact = latent_psnr(z0, reconstruct(inversion, spec, sd2))
    assert exact > plain + 5, (exact, plain)


def test_an_sd2_single_file_checkpoint_converts_exactly(sd2, tmp_path):
    from ldm_export import export_ldm
    from test_backends import _probe

    path = export_ldm(sd2.unet, sd2.vae, sd2.text_encoder, tmp_path, name="tiny-sd2-ldm", sd2=True)
    loaded = lib_mrgd.load_pipeline(str(path), device="cpu")
    assert loaded.prediction_type == "v_prediction" and loaded.pad_id == 0  # from the yaml; OpenCLIP's padding
    assert loaded.unet.config.use_linear_projection
    assert loaded.text_encoder.config.num_hidden_layers == sd2.text_encoder.config.num_hidden_layers  # the last block unread
    for got, want in zip(_probe(loaded), _probe(sd2)):
        assert torch.allclose(got, want, atol=1e-5)


def test_the_v_prediction_probe_for_a_checkpoint_without_yaml():
    from lib_mrgd.backends.loaders import uses_v_prediction

    class Fixed(torch.nn.Module):
        def __init__(self, scale):
            super().__init__()
            self.scale, self.config = scale, type("C", (), {"in_channels": 4})()

        def forward(self, x, t, encoder_hidden_states):
            return type("Out", (), {"sample": self.scale * x})()

    assert uses_v_prediction(Fixed(-3.0), 1024)  # v at t=999 is about -x
    assert not uses_v_prediction(Fixed(0.1), 1024)  # eps is about the noise, not -x
