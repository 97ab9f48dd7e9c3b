"""Importing Tiled Diffusion region JSON, the MRGD authors' configs and infotexts (our own sample
files in their formats, tests/data/regions)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from lib_mrgd import RegionImportWarning, SpecError, import_spec
from lib_mrgd.cli import main
from lib_mrgd.importer import import_text, parse_parameters
from lib_mrgd.metrics import band_mask, pair_metrics

DATA = Path(__file__).parent / "data" / "regions"


def test_tiled_diffusion_json():
    notes: list[str] = []
    spec = import_spec(DATA / "tiled-diffusion.json", warnings=notes)
    assert (spec.background, spec.negative, spec.seed) == ("a quiet harbour at dawn", "lowres", 42)
    assert [(r.source, r.target, r.kind.value) for r in spec.regions] == [
        ("a red fishing boat", "a red fishing boat", "inherent"), ("a seagull", "a seagull", "inherent")]
    assert spec.regions[0].feather == 0.3  # the disabled region is skipped
    assert spec.regions[1].box == pytest.approx([0.7, 0.1, 0.3, 0.3])
    assert len(notes) == 1 and "bbox_controls[3]" in notes[0] and "clipped" in notes[0]


def test_without_a_list_the_notes_are_python_warnings():
    with pytest.warns(RegionImportWarning, match="reaches past the image"):
        import_spec(DATA / "tiled-diffusion.json")


def test_authors_config_with_every_edit_kind():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to clip or merge here
        spec = import_spec(DATA / "authors-edit.json")
    kinds = [r.kind.value for r in spec.regions]
    assert kinds == ["attribute", "inherent", "addition", "removal"]
    pair = spec.regions[0]
    assert (pair.source, pair.target) == ("a green lamp", "a brass lamp")  # the two halves, apart in the file
    assert pair.keywords == ["lamp", "green", "brass"] and pair.feather == 0.3  # the second half's settings
    assert spec.regions[2].target == "a coffee mug" and spec.regions[3].source == "a framed photo"
    assert spec.regions[3].keywords == ["photo", "frame"]
    assert spec.background == "a study with a wooden desk" and spec.common == ""


def _infotext_png(tmp_path) -> Path:
    path = tmp_path / "pair.png"
    info = PngInfo()
    info.add_text("parameters", (DATA / "authors-infotext.txt").read_text())
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    return path


@pytest.mark.parametrize("form", ["txt", "png", "text"])
def test_infotext_with_a_tiled_diffusion_field(tmp_path, form):
    src = {"txt": DATA / "authors-infotext.txt", "png": _infotext_png(tmp_path),
           "text": (DATA / "authors-infotext.txt").read_text()}[form]
    spec = import_spec(src)
    assert (spec.width, spec.height, spec.seed, spec.steps, spec.cfg_scale, spec.sampler) == (512, 384, 901, 20, 7.5, "DDIM")
    assert spec.common == "winter evening, soft light, best quality" and spec.common_negative == "lowres, blurry"
    assert spec.background == "a snowy village street" and spec.main_prompt_common is True
    assert [(r.source, r.target, r.keywords) for r in spec.regions] == [("", "a snowman with a carrot nose", ["snowman"])]


def test_bad_files_name_what_is_wrong(tmp_path):
    data = json.loads((DATA / "authors-edit.json").read_text())
    data["bbox_controls"][2]["blend_mode"] = "Overlay"
    with pytest.raises(SpecError, match=r"^bbox_controls\[2\]\.blend_mode: unknown blend mode 'Overlay'"):
        import_text(json.dumps(data))
    del data["bbox_controls"][3]  # the EditedTarget half
    data["bbox_controls"][2]["blend_mode"] = "Foreground"
    with pytest.raises(SpecError, match=r"^bbox_controls\[1\]: EditedSource has no partner"):
        import_text(json.dumps(data))
    data["bbox_controls"] = [{"x": 1.2, "y": 0, "w": 0.5, "h": 0.5, "prompt": "a", "blend_mode": "Foreground"}]
    with pytest.raises(SpecError, match=r"^bbox_controls\[0\]: box .* no area inside the image"):
        import_text(json.dumps(data))
    with pytest.raises(SpecError, match="^import: not a region file"):
        import_text("a photo of a cat\nSteps: 20, Seed: 1")
    with pytest.raises(SpecError, match="^import: file not found"):
        import_spec(tmp_path / "missing.json")


def test_import_text_never_reads_a_path(tmp_path):
    path = DATA / "tiled-diffusion.json"
    with pytest.raises(SpecError, match="^import: not a region file"):
        import_text(str(path))


def test_mrgd_specs_pass_through():
    spec = import_text(json.dumps({"regions": [{"box": [0, 0, 0.5, 0.5], "target": "a dog"}]}))
    assert spec.regions[0].target == "a dog"


def test_parameters_keep_quoted_values_with_commas():
    params = parse_parameters('Steps: 4, Sampler: Euler a, Note: "a, b: c", Size: 64x64')
    assert params == {"Steps": "4", "Sampler": "Euler a", "Note": "a, b: c", "Size": "64x64"}


def test_cli_import_writes_a_valid_spec(tmp_path, capsys):
    out = tmp_path / "spec.json"
    assert main(["import", str(DATA / "tiled-diffusion.json"), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "warning: bbox_controls[3]" in captured.err and "2 regions" in captured.out
    assert import_spec(out).background == "a quiet harbour at dawn"
    assert main(["import", str(tmp_path / "none.json"), "--out", str(out)]) == 2


def test_an_eval_set_can_be_a_folder_of_region_files(tmp_path):
    from lib_mrgd.evaluation import load_set

    for name in ("authors-edit.json", "authors-infotext.txt"):
        (tmp_path / name).write_text((DATA / name).read_text())
    edits = load_set(tmp_path)
    assert [e.id for e in edits] == ["authors-edit", "authors-infotext"]


def test_ssim_e_margin_and_box_options():
    box = [[0.25, 0.25, 0.5, 0.5]]
    band = band_mask(box, 64, 64, 0.1)
    whole = band_mask(box, 64, 64, 0.1, include_box=True)
    assert not band[32, 32] and whole[32, 32] and int(whole.sum()) > int(band.sum())
    assert int(band_mask(box, 64, 64, 0.2).sum()) > int(band.sum())
    spec = import_text(json.dumps({"width": 64, "height": 64,
                                   "regions": [{"box": box[0], "source": "a", "target": "b"}]}))
    a = Image.new("RGB", (64, 64), (120, 120, 120))
    b = a.copy()
    b.paste((250, 10, 10), (16, 16, 48, 48))  # only the box changes
    assert pair_metrics(spec, a, b)["ssim_e"] > pair_metrics(spec, a, b, include_box=True)["ssim_e"]
