"""Model loading: the tiny kit, diffusers folders, single-file checkpoints, hub ids offline."""

from __future__ import annotations

import pytest
import torch

from lib_mrgd import ModelError, load_pipeline
from lib_mrgd.backends.tiny import build_tiny_models

from ldm_export import assert_same_weights, export_ldm


def _probe(pipe):
    """Outputs that depend on every component: a UNet call, a decode and an encode."""
    ctx = pipe.encode_prompts(["a red car, (best quality:1.2)"])[0]
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        eps = pipe.denoise(x, torch.tensor([500.0, 20.0]), torch.stack([ctx, ctx]))
        image = pipe.decode_tensor(x[:1])
    return ctx, eps, image


def test_tiny_models_are_seeded_and_have_no_dead_weights():
    a, b = build_tiny_models(0), build_tiny_models(0)
    for ma, mb in zip(a, b):
        assert_same_weights(ma, mb)
    other = build_tiny_models(1)[0]
    assert not torch.equal(a[0].conv_out.weight, other.conv_out.weight)
    for module in a:
        for name, p in module.named_parameters():
            assert p.dim() < 2 or p.detach().abs().sum() > 0, name


def test_diffusers_folder_round_trip(tiny, tmp_path):
    tiny.unet.save_pretrained(tmp_path / "unet")
    tiny.vae.save_pretrained(tmp_path / "vae")
    tiny.text_encoder.save_pretrained(tmp_path / "text_encoder")
    tiny.tokenizer.save_pretrained(tmp_path / "tokenizer")
    loaded = load_pipeline(str(tmp_path), device="cpu")
    for got, want in zip(_probe(loaded), _probe(tiny)):
        assert torch.equal(got, want)


def test_single_file_ldm_checkpoint_converts_exactly(tiny, tmp_path):
    path = export_ldm(tiny.unet, tiny.vae, tiny.text_encoder, tmp_path)
    loaded = load_pipeline(str(path), device="cpu")
    assert loaded.latent_multiple == tiny.latent_multiple
    for got, want in zip(_probe(loaded), _probe(tiny)):
        assert torch.allclose(got, want, atol=1e-5)


def test_single_file_without_its_yaml_is_refused_clearly(tiny, tmp_path):
    path = export_ldm(tiny.unet, tiny.vae, tiny.text_encoder, tmp_path)
    path.with_suffix(".yaml").unlink()
    # the tiny UNet is not SD1's shape, so without its .yaml the SD1 config cannot hold it
    with pytest.raises(ModelError, match=r"tiny-ldm.safetensors: cannot convert the checkpoint \(RuntimeError"):
        load_pipeline(str(path), device="cpu")


@pytest.mark.parametrize("name,message", [
    ("missing/model.safetensors", "no such model file or folder: missing/model.safetensors"),
    ("./nowhere", "no such model file or folder"),
])
def test_missing_local_models(name, message):
    with pytest.raises(ModelError, match=message):
        load_pipeline(name)


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelError, match="not a checkpoint file"):
        load_pipeline(str(tmp_path / "notes.txt"))
    (tmp_path / "broken.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(ModelError, match="broken.safetensors: cannot read the checkpoint"):
        load_pipeline(str(tmp_path / "broken.safetensors"))
    with pytest.raises(ModelError, match="not a Stable Diffusion diffusers folder"):
        load_pipeline(str(tmp_path))


def test_hub_id_offline_is_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelError) as err:
        load_pipeline("someone/some-sd-model")
    text = str(err.value)
    assert "\n" not in text and "'someone/some-sd-model' is not in the local Hugging Face cache" in text


def test_bad_device_and_dtype():
    with pytest.raises(ModelError, match="unknown dtype 'fp8'"):
        load_pipeline("tiny", dtype="fp8")
    with pytest.raises(ModelError, match="unknown device"):
        load_pipeline("tiny", device="toaster")


def test_random_sd15_has_the_real_parameter_counts():
    from lib_mrgd.backends.random_models import build

    counts = {name: sum(p.numel() for p in m.parameters()) for name, m in build(device="meta").items()}
    # the released SD1.5 UNet, VAE and CLIP ViT-L/14 text encoder; CLIPSeg rd64 (ViT-B/16 at 352 px)
    assert counts == {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480, "clipseg": 150_968_930}


def test_random_sd15_builds_offline_and_runs_an_edit(monkeypatch):
    import lib_mrgd

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pipe = lib_mrgd.load_pipeline("random-sd15")
    assert pipe.name == "random-sd15" and pipe.get_segmenter().name == "random-clipseg"
    spec = {"width": 128, "height": 128, "steps": 1, "seed": 1,
            "regions": [{"box": [0.0, 0.0, 0.5, 1.0], "source": "a cat", "target": "a dog"}]}
    result = lib_mrgd.run_edit(spec, pipe, method="p2p", progress=False)
    assert result.latents.shape == (2, 4, 16, 16) and bool(result.latents.isfinite().all())
    with pytest.raises(lib_mrgd.ModelError, match="unknown random model 'random-sd99'"):
        lib_mrgd.load_pipeline("random-sd99")
