"""The edit spec: the contract every entry point shares."""

from __future__ import annotations

import copy
import json

import pytest

from lib_mrgd import EditSpec, RegionKind, SpecError, load_spec
from lib_mrgd.spec import MAX_REGIONS, Options

GOOD = {
    "width": 512, "height": 512, "seed": 1, "steps": 20,
    "regions": [{"box": [0.1, 0.2, 0.3, 0.4], "source": "a cat", "target": "a dog"}],
}


def _with(path: str, value):
    """GOOD with one field replaced; ``path`` like ``regions.0.box`` or ``options.kssa``."""
    data = copy.deepcopy(GOOD)
    node = data
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[int(key)] if key.isdigit() else node.setdefault(key, {})
    node[int(keys[-1]) if keys[-1].isdigit() else keys[-1]] = value
    return data


BAD = [
    (_with("width", 500), "width: must be a multiple of 8"),
    (_with("width", 32), "width: must be >= 64"),
    (_with("height", 8192), "height: must be <= 4096"),
    (_with("height", "512"), "height: expected an integer"),
    (_with("width", True), "width: expected an integer"),
    (_with("steps", 0), "steps: must be >= 1"),
    (_with("steps", 151), "steps: must be <= 150"),
    (_with("steps", 2.5), "steps: expected an integer"),
    (_with("seed", -2), "seed: must be >= -1"),
    (_with("seed", 2**32), "seed: must be <= 4294967295"),
    (_with("cfg_scale", "7"), "cfg_scale: expected a number"),
    (_with("cfg_scale", 0.5), "cfg_scale: must be >= 1"),
    (_with("cfg_scale", float("nan")), "cfg_scale: must be a finite number"),
    (_with("sampler", ""), "sampler: must not be empty"),
    (_with("version", 2), "version: unsupported version 2"),
    (_with("background", 3), "background: expected a string"),
    (_with("colour", "red"), "colour: unknown key"),
    (_with("regions", {"box": [0, 0, 1, 1]}), "regions: expected a list"),
    (_with("regions", [{"box": [0, 0, 1, 1], "source": "x"}] * (MAX_REGIONS + 1)), "regions: at most 16 regions"),
    (_with("regions.0.box", [0.1, 0.2, 0.3]), "regions[0].box: expected 4 items"),
    (_with("regions.0.box", [0.1, 0.2, 0.3, 0.0]), "regions[0].box: height must be > 0"),
    (_with("regions.0.box", [0.1, 0.2, -0.3, 0.4]), "regions[0].box: width must be > 0"),
    (_with("regions.0.box", [1.2, 0.2, 0.3, 0.4]), "regions[0].box: x must be in [0, 1]"),
    (_with("regions.0.box", [0.8, 0.2, 0.3, 0.4]), "regions[0].box: x + width must be <= 1"),
    (_with("regions.0.box", [0.1, 0.9, 0.3, 0.4]), "regions[0].box: y + height must be <= 1"),
    (_with("regions.0.box", [0.1, "a", 0.3, 0.4]), "regions[0].box[1]: expected a number"),
    (_with("regions.0.box", [0.5, 0.5, 0.001, 0.5]), "regions[0].box: width is empty after snapping"),
    (_with("regions.0.source", ""), None),  # an addition: valid
    ({**GOOD, "regions": [{"box": [0, 0, 1, 1], "source": "", "target": " "}]}, "regions[0]: needs a source or a target"),
    ({**GOOD, "regions": [{"source": "a"}]}, "regions[0].box: missing"),
    (_with("regions.0.feather", 1.5), "regions[0].feather: must be <= 1"),
    (_with("regions.0.keywords", "cat"), "regions[0].keywords: expected a list"),
    (_with("regions.0.keywords", ["cat", ""]), "regions[0].keywords[1]: must not be empty"),
    (_with("regions.0.shape", "oval"), "regions[0].shape: unknown key"),
    (_with("options.kssa", "yes"), "options.kssa: expected true or false"),
    (_with("options.lambda_rs", -1), "options.lambda_rs: must be >= 0"),
    (_with("options.inject_edit", [0.6]), "options.inject_edit: expected 2 items"),
    (_with("options.inject_edit", [0.6, 1.5]), "options.inject_edit[1]: must be <= 1"),
    (_with("options.kssa_blocks", ["sideways"]), "options.kssa_blocks[0]: must be one of"),
    (_with("options.guidance_every", 0), "options.guidance_every: must be >= 1"),
    (_with("options.speed", "fast"), "options.speed: unknown key"),
    (_with("options", []), "options: expected an object"),
    ("[1, 2]", "spec: expected an object"),
]


@pytest.mark.parametrize("data,message", BAD, ids=[m or "valid" for _, m in BAD])
def test_bad_specs_name_the_field(data, message):
    if message is None:
        load_spec(data)
        return
    with pytest.raises(SpecError) as err:
        load_spec(data)
    assert str(err.value).startswith(message), str(err.value)
    assert str(err.value).startswith(err.value.path + ": ")


def test_json_round_trip_is_lossless(tmp_path):
    spec = load_spec({**GOOD, "background": "a room, (best quality:1.2)", "negative": "ugly",
                      "options": {"kssa": False, "inject_edit": [0.5, 0.25]}})
    again = load_spec(spec.to_json())
    assert again == spec
    assert json.loads(again.to_json()) == json.loads(spec.to_json())
    spec.save(tmp_path / "s.json")
    assert load_spec(tmp_path / "s.json") == spec
    assert load_spec(str(tmp_path / "s.json")) == spec


def test_defaults_follow_the_design():
    spec = load_spec({})
    assert (spec.width, spec.height, spec.steps, spec.cfg_scale, spec.sampler, spec.seed) == (512, 512, 20, 7.0, "DDIM", -1)
    o = spec.options
    assert (o.lambda_rs, o.lambda_is, o.lambda_ip) == (1000.0, 2000.0, 300.0)
    assert (o.t_total, o.t_total_add_remove, o.keyword_count, o.kssa_factor) == (0.5, 0.6, 15, 1.5)
    assert (o.is_start, o.ip_start, o.nce_temperature) == (0.3, 0.2, 0.07)
    assert o.inject_background == [1.0, 0.5] and o.inject_inherent == [1.0, 0.7]
    assert o.inject_edit == [0.6, 0.3] and o.inject_total == [0.5, 0.2]
    assert spec.regions == [] and isinstance(o, Options)


def test_a_retired_option_is_accepted_and_dropped():
    spec = load_spec({"options": {"inject_add_remove": [0.3, 0.1], "kssa_factor": 2.0}})
    assert spec.options == Options(kssa_factor=2.0) and "inject_add_remove" not in spec.options.to_dict()


def test_region_kinds():
    spec = load_spec({"regions": [
        {"box": [0, 0, 0.5, 0.5], "source": "a cat", "target": "a cat"},
        {"box": [0, 0, 0.5, 0.5], "target": "a cat"},
        {"box": [0, 0, 0.5, 0.5], "source": "a cat"},
        {"box": [0, 0, 0.5, 0.5], "source": "a cat", "target": "a dog"},
    ]})
    assert spec.kinds == [RegionKind.INHERENT, RegionKind.ADDITION, RegionKind.REMOVAL, RegionKind.ATTRIBUTE]
    assert [k.badge for k in spec.kinds] == ["keep", "add", "remove", "change"]


def test_load_from_string_path_and_errors(tmp_path):
    assert load_spec(json.dumps(GOOD)).regions[0].target == "a dog"
    with pytest.raises(SpecError, match=r"^spec: file not found"):
        load_spec(tmp_path / "missing.json")
    (tmp_path / "broken.json").write_text('{"width": 512,,}')
    with pytest.raises(SpecError, match=r"^spec: invalid JSON at line 1 column 15"):
        load_spec(tmp_path / "broken.json")
    with pytest.raises(SpecError, match=r"^spec: expected a path"):
        load_spec(42)


def test_prompts_are_stripped_and_boxes_clamped():
    spec = load_spec({"regions": [{"box": [0.5, 0.5, 0.5000001, 0.5], "source": "  a cat  "}]})
    assert spec.regions[0].source == "a cat"
    assert spec.regions[0].box[0] + spec.regions[0].box[2] <= 1.0


def test_resolved_fixes_a_random_seed_and_keeps_a_fixed_one():
    assert load_spec({"seed": 5}).resolved().seed == 5
    seeds = {load_spec({}).resolved().seed for _ in range(5)}
    assert all(0 <= s < 2**32 for s in seeds) and len(seeds) > 1


def test_replace_validates():
    spec = load_spec(GOOD)
    assert spec.replace(steps=10).steps == 10
    with pytest.raises(SpecError, match="^steps: must be <= 150"):
        spec.replace(steps=1000)


def test_edit_spec_equality_is_by_value():
    assert load_spec(GOOD) == EditSpec.from_dict(copy.deepcopy(GOOD))
