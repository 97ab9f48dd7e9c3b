"""The benchmark command writes every ratio the project publishes (a smoke test: no timing is
asserted, only that each figure exists and is a positive number)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KEYS = ["edit.mrgd_no_guidance_vs_multidiffusion", "edit.mrgd_vs_mrgd_no_guidance", "edit.multidiffusion_vs_plain",
        "attention.idle", "attention.p2p", "fusion.regions_1", "fusion.regions_2", "fusion.regions_4",
        "fusion.regions_8", "fusion.batched_vs_separate_8", "inversion.null_text_vs_ddim"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """As a user runs it: a fresh process (a long test process's RSS says little about one run)."""
    out = tmp_path_factory.mktemp("bench")
    done = subprocess.run([sys.executable, "-m", "bench.run", "--model", "tiny", "--size", "64", "--steps", "2",
                           "--rounds", "1", "--json", str(out / "r.json"), "--out", str(out / "r.md")],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads((out / "r.json").read_text()), (out / "r.md").read_text()


def test_every_published_ratio_is_written(report):
    data, markdown = report
    for key in KEYS:
        assert key in data["ratios"], key
        assert math.isfinite(data["ratios"][key]) and data["ratios"][key] > 0, key
    assert (data["model"], data["size"], data["steps"]) == ("tiny", 64, 2)
    assert "### Whole edits" in markdown and "### Peak memory" in markdown


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak RSS needs Linux")
def test_peak_memory_per_variant(report):
    data, _ = report
    variants = ["plain", "multidiffusion", "mrgd_no_guidance", "mrgd"]
    for name in [f"edit.{v}" for v in variants] + ["inversion.null_text"]:
        m = data["memory"][name]
        assert m["kind"] == "peak_rss" and m["peak_bytes"] >= m["before_bytes"] > 0, name
    # guidance keeps the VAE's and CLIPSeg's activations for the gradient: it needs more
    assert data["memory"]["edit.mrgd"]["peak_bytes"] > data["memory"]["edit.mrgd_no_guidance"]["peak_bytes"]


def test_an_unknown_section_is_refused(capsys):
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from bench.run import main

    with pytest.raises(SystemExit):
        main(["--only", "edit,speed"])
    assert "--only: unknown speed" in capsys.readouterr().err
