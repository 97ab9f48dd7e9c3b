"""The command line: outputs, exit codes and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image

from lib_mrgd import load_spec
from lib_mrgd.cli import main

from conftest import BASE_SPEC


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "edit.json"
    path.write_text(json.dumps({**BASE_SPEC, "seed": -1, "steps": 3}))
    return path


def _run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_edit_writes_images_with_the_resolved_spec(capsys, spec_file, tmp_path):
    out_dir = tmp_path / "out"
    code, out, err = _run(capsys, "edit", str(spec_file), "--model", "tiny", "--out", str(out_dir),
                          "--method", "multidiffusion", "--steps", "2", "--quiet")
    assert code == 0, err
    saved = load_spec(out_dir / "spec.json")
    assert saved.seed != -1 and saved.steps == 2
    for name in ("source", "target"):
        image = Image.open(out_dir / f"{name}.png")
        assert image.size == (128, 128)
        assert load_spec(image.text["mrgd"]) == saved
        assert image.text["mrgd-image"] == name
    assert "wrote" in out


@pytest.mark.parametrize("args,code,start", [
    (["--steps", "0"], 2, "error: steps: must be >= 1"),
    (["--steps", "x"], 2, "error: --steps: invalid int value"),
    (["--method", "dreambooth"], 2, "error: --method: invalid choice"),
    (["--model", "no/such/model.safetensors"], 1, "error: no such model file or folder"),
    (["--device", "toaster"], 1, "error: unknown device"),
])
def test_errors_are_one_line_with_the_right_exit_code(capsys, spec_file, tmp_path, args, code, start):
    out_dir = tmp_path / "out"
    base = ["edit", str(spec_file), "--model", "tiny", "--out", str(out_dir), "--method", "multidiffusion", "--quiet"]
    got, out, err = _run(capsys, *base, *args)
    assert got == code
    assert err.startswith(start) and err.count("\n") == 1, err
    assert not out_dir.exists()


def test_bad_spec_file_exits_2_with_the_field_path(capsys, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"regions": [{"box": [0.1, 0.2, 0.3, 0.0], "source": "a"}]}))
    code, _, err = _run(capsys, "edit", str(bad), "--model", "tiny", "--out", str(tmp_path / "o"))
    assert code == 2 and err == "error: regions[0].box: height must be > 0, got 0\n"
    code, _, err = _run(capsys, "edit", str(tmp_path / "nope.json"), "--model", "tiny", "--out", str(tmp_path / "o"))
    assert code == 2 and err.startswith("error: spec: file not found")


def test_module_entry_point_runs_without_a_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "lib_mrgd", "edit", str(tmp_path / "nope.json"),
                           "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: spec: file not found: {tmp_path / 'nope.json'}"]


def test_keywords_prints_each_region_with_entropies(capsys, spec_file):
    code, out, err = _run(capsys, "keywords", str(spec_file), "--model", "tiny", "--json", "--quiet")
    assert code == 0, err
    regions = json.loads(out)["regions"]
    assert [r["kind"] for r in regions] == ["attribute", "addition"]
    assert regions[1]["source"] == [] and regions[1]["target"]
    assert all(0 <= k["entropy"] <= 8 for r in regions for k in r["source"] + r["target"])
    code, out, _ = _run(capsys, "keywords", str(spec_file), "--model", "tiny", "--quiet")
    assert code == 0 and out.startswith("regions[0] (attribute): ") and "  target: " in out


def test_the_tiny_model_says_its_images_are_noise(capsys, spec_file, tmp_path):
    code, _, err = _run(capsys, "edit", str(spec_file), "--model", "tiny", "--out", str(tmp_path / "o"),
                        "--method", "multidiffusion", "--steps", "1", "--quiet")
    assert code == 0 and err.count("its images are noise") == 1


def test_the_try_out_example_is_the_living_room_edit_sized_for_the_tiny_model():
    from pathlib import Path

    examples = Path(__file__).resolve().parent.parent / "examples"
    full, tiny = load_spec(examples / "living_room.json"), load_spec(examples / "living_room_tiny.json")
    assert (tiny.width, tiny.height) == (128, 128)
    assert tiny.replace(width=full.width, height=full.height).to_dict() == full.to_dict()
