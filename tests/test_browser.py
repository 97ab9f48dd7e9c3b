"""The region canvas in a real headless Chromium (Playwright), on Gradio 3.41.2."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.skipif(not shutil.which(CHROMIUM), reason="Debian's chromium is not installed")


@pytest.fixture(scope="module")
def page():
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from playwright.sync_api import sync_playwright

    from browser_app import launch

    demo, url = launch()
    try:
        with sync_playwright() as pw:  # Playwright gives the browser a fresh, empty profile
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1600})
            page.goto(url)
            page.wait_for_selector("#txt2img_mrgd_root .mrgd-canvas", state="attached", timeout=60_000)
            page.get_by_text("Multi-Region Guided Diffusion").first.click()
            page.wait_for_selector("#txt2img_mrgd_root .mrgd-canvas", state="visible")
            yield page
            browser.close()
    finally:
        demo.close()


def _spec(page) -> dict:
    return json.loads(page.locator("#txt2img_mrgd_spec textarea").input_value())


def _drag(page, box, start, end, steps=8):
    page.mouse.move(box["x"] + start[0] * box["width"], box["y"] + start[1] * box["height"])
    page.mouse.down()
    page.mouse.move(box["x"] + end[0] * box["width"], box["y"] + end[1] * box["height"], steps=steps)
    page.mouse.up()


def test_draw_move_resize_delete_and_type(page, tmp_path):
    # a fresh panel: the main prompt applies to every region (the authors' way)
    assert page.locator("#txt2img_mrgd_root .mrgd-common").is_checked()
    canvas = page.locator("#txt2img_mrgd_root .mrgd-canvas")
    box = canvas.bounding_box()
    assert abs(box["width"] / box["height"] - 512 / 384) < 0.01  # the canvas takes the width/height fields' shape
    page.locator("#txt2img_mrgd_root .mrgd-enable").check()

    _drag(page, box, (0.10, 0.20), (0.40, 0.70))  # region 1
    _drag(page, box, (0.60, 0.10), (0.90, 0.40))  # region 2
    _drag(page, box, (0.05, 0.80), (0.25, 0.95))  # region 3, deleted below
    assert len(_spec(page)["regions"]) == 3
    page.locator('#txt2img_mrgd_root .mrgd-region[data-index="2"] .mrgd-delete').click()
    _drag(page, box, (0.25, 0.45), (0.35, 0.50))  # move region 1 by (+0.10, +0.05)
    se = page.locator('#txt2img_mrgd_root .mrgd-box[data-index="1"] .mrgd-handle-se').bounding_box()
    page.mouse.move(se["x"] + se["width"] / 2, se["y"] + se["height"] / 2)
    page.mouse.down()
    page.mouse.move(se["x"] + se["width"] / 2 - 0.10 * box["width"], se["y"] + se["height"] / 2 + 0.20 * box["height"], steps=8)
    page.mouse.up()

    rows = page.locator("#txt2img_mrgd_root .mrgd-region")
    rows.nth(0).locator(".mrgd-source").fill("a girl in a red sweater")
    rows.nth(0).locator(".mrgd-target").fill("a girl in a blue sweater")
    rows.nth(0).locator(".mrgd-keywords").fill("girl, sweater")
    rows.nth(1).locator(".mrgd-target").fill("a dog")
    assert rows.nth(0).locator(".mrgd-badge").inner_text() == "change"
    assert rows.nth(1).locator(".mrgd-badge").inner_text() == "add"

    spec = _spec(page)
    assert spec["enabled"] is True and len(spec["regions"]) == 2
    px, py = 1 / box["width"], 1 / box["height"]  # one pixel, as fractions
    expected = [[0.20, 0.25, 0.30, 0.50], [0.60, 0.10, 0.20, 0.50]]
    for region, want in zip(spec["regions"], expected):
        for got, w, tol in zip(region["box"], want, (px, py, px, py)):
            assert abs(got - w) <= tol + 1e-4, (region["box"], want)
    r1, r2 = spec["regions"]
    assert (r1["source"], r1["target"], r1["keywords"]) == ("a girl in a red sweater", "a girl in a blue sweater", ["girl", "sweater"])
    assert (r2["source"], r2["target"]) == ("", "a dog")
    assert spec["options"]["lambda_rs"] == 1000.0  # the defaults come from the Python spec module

    from lib_mrgd import load_spec

    load_spec(spec)  # what the canvas writes is a valid spec

    page.locator("#generate").click()
    page.wait_for_function("() => document.querySelector('#received textarea').value.length > 0")
    assert json.loads(page.locator("#received textarea").input_value()) == spec  # Python received it



def test_advanced_options_and_keyboard_delete(page):
    page.get_by_text("Advanced").first.click()
    kssa = page.locator('#txt2img_mrgd_root input[data-option="kssa_factor"]')
    kssa.fill("1.25")
    assert _spec(page)["options"]["kssa_factor"] == 1.25
    page.locator('#txt2img_mrgd_root input[data-option="guidance"]').uncheck()
    assert _spec(page)["options"]["guidance"] is False
    n = len(_spec(page)["regions"])
    page.locator('#txt2img_mrgd_root .mrgd-box[data-index="0"]').click()
    page.keyboard.press("Delete")
    assert len(_spec(page)["regions"]) == n - 1


def test_a_pasted_spec_redraws_the_canvas(page):
    page.locator("#paste").click()
    page.wait_for_function("() => document.querySelectorAll('#txt2img_mrgd_root .mrgd-box').length === 1 && "
                           "document.querySelector('#txt2img_mrgd_root .mrgd-source').value === 'a cat'")
    row = page.locator("#txt2img_mrgd_root .mrgd-region").nth(0)
    assert row.locator(".mrgd-badge").inner_text() == "keep"
    assert row.locator(".mrgd-feather").input_value() == "0.3"
    assert page.locator("#txt2img_mrgd_root .mrgd-enable").is_checked()
    assert not page.locator('#txt2img_mrgd_root input[data-option="kssa"]').is_checked()


def test_main_prompt_checkbox_and_background_field(page):
    common = page.locator("#txt2img_mrgd_root .mrgd-common")
    background = page.locator("#txt2img_mrgd_root .mrgd-background")
    # the infotext pasted before was written by mrgd 0.1, whose main prompt was the background
    assert not common.is_checked() and not background.is_visible()
    assert _spec(page)["main_prompt_common"] is False
    common.check()
    assert background.is_visible()
    background.fill("a wooden floor")
    spec = _spec(page)
    assert spec["main_prompt_common"] is True and spec["background"] == "a wooden floor"
    common.uncheck()
    assert _spec(page)["main_prompt_common"] is False and not background.is_visible()
    common.check()
    assert _spec(page)["main_prompt_common"] is True


def test_import_box_reads_another_tools_region_file(page):
    text = (Path(__file__).parent / "data" / "regions" / "authors-infotext.txt").read_text()
    page.locator("#txt2img_mrgd_root .mrgd-spec-io summary").click()
    page.locator("#txt2img_mrgd_root .mrgd-io").fill(text)
    page.locator("#txt2img_mrgd_root .mrgd-import").click()
    page.wait_for_function("() => document.querySelectorAll('#txt2img_mrgd_root .mrgd-box').length === 1 && "
                           "document.querySelector('#txt2img_mrgd_root .mrgd-target').value === 'a snowman with a carrot nose'")
    spec = _spec(page)
    assert spec["background"] == "a snowy village street" and spec["main_prompt_common"] is True
    assert spec["regions"][0]["keywords"] == ["snowman"]
    # the infotext's main prompt and size go into the WebUI's own fields
    assert page.locator("#txt2img_prompt textarea").input_value() == "winter evening, soft light, best quality"
    assert page.locator("#txt2img_height input[type=number]").input_value() == "384"
    bad = '{"bbox_controls": [{"x": 0, "y": 0, "w": 1, "h": 1, "prompt": "a", "blend_mode": "Overlay"}]}'
    page.locator("#txt2img_mrgd_root .mrgd-io").fill(bad)
    page.locator("#txt2img_mrgd_root .mrgd-import").click()
    page.wait_for_function("() => document.querySelector('#txt2img_mrgd_root .mrgd-error').textContent.includes('Overlay')")
    assert "bbox_controls[0].blend_mode" in page.locator("#txt2img_mrgd_root .mrgd-error").inner_text()


def _draw_one(page):
    box = page.locator("#txt2img_mrgd_root .mrgd-canvas").bounding_box()
    _drag(page, box, (0.1, 0.1), (0.5, 0.5))


def test_pasting_an_infotext_without_mrgd_switches_the_panel_off_and_keeps_the_boxes(page):
    page.locator("#paste").click()  # an MRGD infotext: on, one box
    page.wait_for_function("() => document.querySelectorAll('#txt2img_mrgd_root .mrgd-box').length === 1 && "
                           "document.querySelector('#txt2img_mrgd_root .mrgd-source').value === 'a cat'")
    assert page.locator("#txt2img_mrgd_root .mrgd-enable").is_checked()
    page.locator("#paste_plain").click()
    page.wait_for_function("() => !document.querySelector('#txt2img_mrgd_root .mrgd-enable').checked")
    assert page.locator("#txt2img_mrgd_root .mrgd-box").count() == 1
    page.wait_for_function("() => JSON.parse(document.querySelector('#txt2img_mrgd_spec textarea').value).regions.length === 1")
    spec = _spec(page)
    assert spec["enabled"] is False and spec["regions"][0]["source"] == "a cat"


def test_the_collapsed_panel_says_whether_mrgd_is_on(page):
    state = page.locator("#txt2img_mrgd .mrgd-state")
    page.locator("#txt2img_mrgd_root .mrgd-enable").check()
    assert state.inner_text().startswith("✓ on")
    page.locator("#txt2img_mrgd_root .mrgd-enable").uncheck()
    assert state.inner_text() == ""


FITS = """(input) => {
    const ctx = document.createElement('canvas').getContext('2d');
    const style = getComputedStyle(input);
    ctx.font = `${style.fontSize} ${style.fontFamily}`;
    const pad = parseFloat(style.paddingLeft) + parseFloat(style.paddingRight);
    return ctx.measureText(input.placeholder).width <= input.clientWidth - pad + 1;
}"""


@pytest.mark.parametrize("width", [1400, 800])
def test_region_rows_have_labels_and_room_at_wide_and_narrow_widths(page, width):
    page.set_viewport_size({"width": width, "height": 1600})
    if not page.locator("#txt2img_mrgd_root .mrgd-region").count():
        _draw_one(page)
    row = page.locator("#txt2img_mrgd_root .mrgd-region").nth(0)
    for name in ("source", "target", "keywords", "negative"):
        field = row.locator(f".mrgd-{name}")
        assert field.evaluate(FITS), (width, name, field.get_attribute("placeholder"))  # placeholders are not cut
        assert field.bounding_box()["width"] >= 100, (width, name)
        assert field.get_attribute("title")
    head = page.locator("#txt2img_mrgd_root .mrgd-region-head")
    if width >= 1400:
        labels = head.locator("span").all_inner_texts()
        assert labels[2:7] == ["source prompt", "target prompt", "keywords", "feather", "negative"]
    else:
        assert not head.is_visible()  # the narrow layout puts each field on its own line, with placeholders
    page.set_viewport_size({"width": 1280, "height": 1600})


def test_advanced_options_have_labels_help_and_stay_inside_the_panel(page):
    from lib_mrgd.spec import Options
    from lib_mrgd.webui.ui import OPTION_TEXT

    assert set(OPTION_TEXT) == set(Options().to_dict())  # every option has a label and help
    details = page.locator("#txt2img_mrgd_root .mrgd-advanced")
    if not details.evaluate("(d) => d.open"):
        details.locator("summary").click()
    options = page.locator("#txt2img_mrgd_root .mrgd-option")
    assert options.count() == len(OPTION_TEXT)
    panel = page.locator("#txt2img_mrgd_root .mrgd-options").bounding_box()
    for k in range(options.count()):
        option = options.nth(k)
        name, field = option.locator(".mrgd-option-name"), option.locator("input")
        assert name.inner_text() and name.inner_text() != field.get_attribute("data-option")  # not the raw key
        assert option.get_attribute("title")
        n, f = name.bounding_box(), field.bounding_box()
        assert f["x"] + f["width"] <= panel["x"] + panel["width"] + 1  # inside the panel
        assert n["x"] + n["width"] <= f["x"] + 1  # the label ends before its input


def test_the_spec_model_matches_the_python_spec(page):
    """The panel's pure spec model (no DOM): blank spec, region defaults, kinds and badges, the
    region limit, parsing and rounding, against the spec module."""
    from lib_mrgd.spec import EditSpec, Region, load_spec
    from lib_mrgd.webui.ui import panel_config

    config = panel_config(max_regions=2)
    cases = [("a cat", "a cat"), ("", "a dog"), ("a lamp", ""), ("a red car", "a blue car"), ("  a cat ", "a cat")]
    got = page.evaluate("""([config, cases]) => {
        const m = window.mrgdSpecModel(config);
        const one = {...m.blank(), regions: [m.region([0.1, 0.2, 0.3, 0.4])]};
        return {
            blank: m.blank(),
            region: m.region([0.123456, 0, 0.5, 0.5]),
            kinds: cases.map(([source, target]) => m.kind({source, target})),
            empty: m.label(m.kind({source: " ", target: ""})),
            canAdd: [m.canAdd(m.blank()), m.canAdd(one), m.canAdd({...one, regions: [...one.regions, ...one.regions]})],
            pasted: m.parse('{"regions":[{"box":[0,0,0.5,0.5],"target":"a dog"}]}', m.blank(), true).spec,
            off: m.parse('{"enabled":false,"keep_regions":true}', m.blank(), true),
            error: m.parse('{"regions": [', m.blank()).error || "",
            rounded: m.normalized({...one, regions: [m.region([1 / 3, 0, 0.5, 0.5])]}).regions[0].box,
        };
    }""", [config, cases])
    assert load_spec(got["blank"]).to_dict() == {**EditSpec().to_dict(), "enabled": False}  # off until a box is drawn
    fresh = Region(box=[0.123456, 0, 0.5, 0.5])  # a new box has no prompts yet: every other field as Python's
    assert got["region"] == {**dataclasses.asdict(fresh), "box": got["region"]["box"]}
    python_kinds = [Region(box=[0, 0, 1, 1], source=s.strip(), target=t.strip()).kind.badge for s, t in cases]
    assert got["kinds"] == python_kinds and got["empty"] == "no prompt"
    assert got["canAdd"] == [True, True, False]  # the setting's limit, not the spec's 16
    assert got["pasted"]["main_prompt_common"] is False  # a 0.1 infotext: the main prompt was the background
    assert got["pasted"]["regions"][0]["feather"] == Region(box=[0, 0, 1, 1]).feather
    assert got["off"] == {"off": True} and got["error"].startswith("not JSON")
    assert got["rounded"] == [0.3333, 0, 0.5, 0.5]


def test_a_value_set_from_script_redraws_at_once(page):
    """Gradio writes the spec field as a property (paste, Send to): the panel redraws in the same
    task, with no polling."""
    spec = {"version": 1, "enabled": True, "regions": [
        {"box": [0.1, 0.1, 0.2, 0.2], "source": "a", "target": "b"},
        {"box": [0.5, 0.5, 0.2, 0.2], "source": "", "target": "c"}]}
    boxes = page.evaluate("""(text) => {
        const field = document.querySelector('#txt2img_mrgd_spec textarea');
        field.value = text;  // no event, as Gradio does it
        return document.querySelectorAll('#txt2img_mrgd_root .mrgd-box').length;
    }""", json.dumps(spec))
    assert boxes == 2
    assert "setInterval" not in (Path(__file__).resolve().parent.parent / "javascript" / "mrgd.js").read_text()
