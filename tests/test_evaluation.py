"""Metrics (CLIP score, SSIM-e, SSIM-i) and the eval command."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from lib_mrgd import load_spec
from lib_mrgd.cli import main
from lib_mrgd.metrics import band_mask, edited_mask, pair_metrics, tiny_clip_scorer

SPEC = load_spec({"width": 128, "height": 128, "regions": [
    {"box": [0.25, 0.25, 0.5, 0.5], "source": "a cat", "target": "a dog"},
    {"box": [0.0, 0.0, 0.2, 0.2], "source": "a lamp", "target": "a lamp"}]})


def noise_image(seed, size=128):
    return Image.fromarray((np.random.default_rng(seed).random((size, size, 3)) * 255).astype(np.uint8))


def test_identical_images_score_ssim_one():
    a = noise_image(0)
    m = pair_metrics(SPEC, a, a.copy())
    assert m["ssim_e"] == pytest.approx(1.0) and m["ssim_i"] == pytest.approx(1.0) and m["clip"] is None


def test_a_change_only_inside_the_edited_box_keeps_ssim_i_at_one():
    a = noise_image(0)
    b = np.asarray(a).copy()
    b[40:88, 40:88] = 255 - b[40:88, 40:88]  # strictly inside the box [32, 96)
    m = pair_metrics(SPEC, a, Image.fromarray(b))
    assert m["ssim_i"] == pytest.approx(1.0, abs=1e-9)


def test_ssim_e_ignores_the_box_interior_and_sees_the_band():
    a = noise_image(0)
    inside = np.asarray(a).copy()
    inside[32:96, 32:96] = 0  # the whole box changes: SSIM-e looks only around it...
    m = pair_metrics(SPEC, a, Image.fromarray(inside))
    around = np.asarray(a).copy()
    around[20:30, 32:96] = 0  # ...so a change in the band lowers it
    m2 = pair_metrics(SPEC, a, Image.fromarray(around))
    assert m2["ssim_e"] < m["ssim_e"] - 0.05
    band = band_mask([[0.25, 0.25, 0.5, 0.5]], 128, 128)
    assert not band[32:96, 32:96].any() and band[20:32, 32:96].all() and not band[:15].any()
    assert edited_mask([[0.25, 0.25, 0.5, 0.5]], 128, 128).sum() == 64 * 64


def test_clip_score_is_deterministic_and_uses_the_right_text():
    clip = tiny_clip_scorer(0)
    img = noise_image(1)
    assert clip.score(img, "a dog") == clip.score(img, "a dog") == tiny_clip_scorer(0).score(img, "a dog")
    assert clip.score(img, "a dog") != clip.score(img, "a red sports car")
    removal = load_spec({"width": 128, "height": 128, "background": "an empty room",
                         "regions": [{"box": [0.25, 0.25, 0.5, 0.5], "source": "a cat"}]})
    crop = img.crop((32, 32, 96, 96))
    assert clip.clip_score(removal, img) == pytest.approx(clip.score(crop, "an empty room"))
    assert clip.clip_score(SPEC, img) == pytest.approx(clip.score(crop, "a dog"))


def _set(tmp_path):
    folder = tmp_path / "set"
    folder.mkdir()
    base = {"width": 64, "height": 64, "steps": 3, "cfg_scale": 7.0, "background": "a room, best quality"}
    specs = {
        "add-1": [{"box": [0.5, 0.5, 0.5, 0.5], "target": "a dog"}, {"box": [0, 0, 0.5, 0.5], "source": "a lamp", "target": "a lamp"}],
        "rem-1": [{"box": [0.0, 0.5, 0.5, 0.5], "source": "a cat"}],
        "att-1": [{"box": [0.25, 0.25, 0.5, 0.5], "source": "a red car", "target": "a blue car"}],
    }
    for i, (name, regions) in enumerate(specs.items()):
        (folder / f"{name}.json").write_text(json.dumps({**base, "seed": 10 + i, "regions": regions}))
    return folder


def _rows(path):
    with open(path, newline="") as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def test_eval_writes_every_output_resumes_and_merges_shards(capsys, tmp_path):
    folder = _set(tmp_path)
    args = ["--model", "tiny", "--methods", "multidiffusion,p2p", "--quiet"]
    full = tmp_path / "full"
    assert main(["eval", str(folder), "--out", str(full), *args]) == 0
    rows = _rows(full / "metrics.csv")
    assert len(rows) == 6 and list(rows[0]) == ["edit", "task", "method", "seed", "clip", "ssim_e", "ssim_i"]
    assert {(r["edit"], r["task"]) for r in rows} == {("add-1", "addition"), ("rem-1", "removal"), ("att-1", "attribute")}
    assert all(r["clip"] and r["ssim_e"] and r["ssim_i"] for r in rows)
    for r in rows:
        assert (full / "images" / r["edit"] / f"{r['method']}-target.png").is_file()
    table = (full / "table.md").read_text()
    assert table.startswith("| Method | Addition (1) CLIP ↑ | SSIM-e ↑ | SSIM-i ↑ | Removal (1) CLIP ↑")
    assert table.count("**") >= 2 and "mean nothing" in table
    report = (full / "report.html").read_text()
    assert report.count("class='edit'") == 3 and "images/att-1/p2p-target.png" in report

    # resume: a finished run has nothing left to do; a partial one only fills the gaps
    capsys.readouterr()
    with open(full / "metrics.csv") as f:
        lines = f.readlines()
    (full / "metrics.csv").write_text("".join(lines[:3]))  # header + 2 rows kept
    assert main(["eval", str(folder), "--out", str(full), "--resume", *args]) == 0
    assert _rows(full / "metrics.csv") == rows

    # shards 1/2 and 2/2, merged, equal the unsharded run
    for i in (1, 2):
        assert main(["eval", str(folder), "--out", str(tmp_path / f"shard{i}"), "--shard", f"{i}/2", *args]) == 0
    assert len(_rows(tmp_path / "shard1" / "metrics.csv")) == 4 and len(_rows(tmp_path / "shard2" / "metrics.csv")) == 2
    assert main(["eval-merge", str(tmp_path / "shard1"), str(tmp_path / "shard2"), "--set", str(folder),
                 "--out", str(tmp_path / "merged")]) == 0
    assert _rows(tmp_path / "merged" / "metrics.csv") == rows
    assert (tmp_path / "merged" / "table.md").read_text() == table
    assert (tmp_path / "merged" / "images" / "rem-1" / "p2p-source.png").is_file()


@pytest.mark.parametrize("args,start", [
    (["--methods", "magic"], "error: --methods: unknown magic"),
    (["--shard", "3/2"], "error: --shard: i must be between 1 and n"),
    (["--shard", "x"], "error: --shard: expected i/n"),
    (["--limit", "0"], "error: --limit: must be >= 1"),
])
def test_eval_argument_errors(capsys, tmp_path, args, start):
    folder = _set(tmp_path)
    assert main(["eval", str(folder), "--model", "tiny", "--out", str(tmp_path / "o"), *args]) == 2
    assert capsys.readouterr().err.startswith(start)


def test_the_benchmark_set_is_complete_and_valid():
    from pathlib import Path

    from lib_mrgd.evaluation import load_set

    edits = load_set(Path(__file__).resolve().parent.parent / "benchmarks" / "edits")
    tasks = [e.task for e in edits]
    assert (tasks.count("addition"), tasks.count("removal"), tasks.count("attribute")) == (25, 24, 12)
    for e in edits:
        s = e.spec
        assert (s.width, s.height, s.steps, s.cfg_scale, s.sampler) == (512, 512, 20, 7.0, "DDIM") and s.seed >= 0
        assert len(s.background) > 100  # community-style prompts with quality words


def test_without_clip_weights_the_ssim_metrics_still_run(capsys, tmp_path):
    folder = _set(tmp_path)
    out = tmp_path / "o"
    code = main(["eval", str(folder), "--model", "tiny", "--methods", "p2p", "--limit", "1", "--quiet",
                 "--clip", str(tmp_path / "missing" / "clip.bin"), "--out", str(out)])
    assert code == 0
    assert "warning: CLIP score skipped: CLIP weights file not found" in capsys.readouterr().err
    rows = _rows(out / "metrics.csv")
    assert rows[0]["clip"] == "" and rows[0]["ssim_e"] and rows[0]["ssim_i"]
    assert "CLIP scorer: none" in (out / "table.md").read_text()
