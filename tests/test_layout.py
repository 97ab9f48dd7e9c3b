"""Snapping, feathering and blend weights (Eq. 1)."""

from __future__ import annotations

import pytest
import torch

from lib_mrgd import load_spec
from lib_mrgd.layout import Layout, LayerKind, feather_weights, snap_box


def test_boxes_snap_outward_to_the_unet_grid():
    # 512 px -> 64 latent px; [0.1, 0.2, 0.35, 0.6] covers latent x 6..29, y 13..51
    win = snap_box([0.1, 0.2, 0.35, 0.6], 64, 64, 8)
    assert (win.left, win.width, win.top, win.height) == (0, 32, 8, 48)
    assert snap_box([0.1, 0.2, 0.35, 0.6], 64, 64, 1) == type(win)(13, 6, 38, 23)


def test_snapping_stays_inside_the_image_and_keeps_the_multiple_where_it_can():
    win = snap_box([0.9, 0.9, 0.1, 0.1], 64, 64, 8)
    assert (win.left + win.width, win.top + win.height) == (64, 64) and win.width % 8 == 0
    win = snap_box([0.9, 0.0, 0.1, 1.0], 65, 64, 8)  # 520 px: the grid does not divide 65
    assert win.left + win.width == 65 and win.width % 8 == 0


def test_feather_is_one_inside_and_ramps_quadratically_at_open_edges():
    w = feather_weights(20, 40, 0.2)  # ramp over 0.2 * 20 / 2 = 2 px
    assert w[10, 20] == 1.0
    assert w[0, 20] == pytest.approx((0.5 / 2) ** 2)
    assert w[1, 20] == pytest.approx((1.5 / 2) ** 2)
    assert bool((w > 0).all())
    closed = feather_weights(20, 40, 0.2, open_sides=(False, True, True, True))
    assert closed[0, 20] == 1.0 and closed[19, 20] < 1.0
    assert bool((feather_weights(8, 8, 0.0) == 1).all())


SPECS = [
    {"regions": []},
    {"regions": [{"box": [0.1, 0.1, 0.5, 0.5], "source": "a", "target": "b", "feather": 0.5}]},
    {"regions": [{"box": [0.0, 0.0, 0.7, 0.7], "source": "a", "target": "a"},
                 {"box": [0.3, 0.3, 0.7, 0.7], "target": "c", "feather": 1.0},
                 {"box": [0.2, 0.5, 0.3, 0.5], "source": "d", "feather": 0.0}]},
]


@pytest.mark.parametrize("data", SPECS)
@pytest.mark.parametrize("total", [False, True])
def test_blend_weights_sum_to_one_everywhere(data, total):
    layout = Layout.from_spec(load_spec({"width": 256, "height": 192, **data}), 4, total_region=total)
    for image in (0, 1):
        for progress in (0.0, 0.45, 0.99):
            w = layout.blend_weights(image, progress)
            assert w.shape == (len(layout.layers), 24, 32)
            assert torch.allclose(w.sum(0), torch.ones(24, 32), atol=1e-6)
            assert bool((w >= 0).all())
            inactive = {l.index for l in layout.layers} - {l.index for l in layout.active_layers(image, progress)}
            assert all(bool((w[i] == 0).all()) for i in inactive)


def test_absent_regions_do_not_count_in_their_image():
    layout = Layout.from_spec(load_spec({"width": 128, "height": 128, "regions": [
        {"box": [0.5, 0.5, 0.5, 0.5], "target": "a dog", "feather": 0}]}))
    src, tgt = layout.blend_weights(0, 0.0), layout.blend_weights(1, 0.0)
    assert bool((src[0] == 1).all())  # the source is all background
    assert bool((tgt[1, 8:, 8:] == 1).all()) and bool((tgt[0, 8:, 8:] == 0).all())


def test_total_region_joins_for_the_last_half_or_sixty_percent():
    attr = load_spec({"regions": [{"box": [0, 0, 0.5, 0.5], "source": "a", "target": "b"}]})
    add = load_spec({"regions": [{"box": [0, 0, 0.5, 0.5], "target": "b"}]})
    steps = 20
    first = lambda layout: next(i for i in range(steps) if layout.total_active(i / steps))
    assert first(Layout.from_spec(attr, 8, total_region=True)) == 10
    assert first(Layout.from_spec(add, 8, total_region=True)) == 8
    assert Layout.from_spec(attr, 8, total_region=False).total is None
    layout = Layout.from_spec(attr, 8, total_region=True)
    assert layout.total.kind == LayerKind.TOTAL
    # once r_total covers the image the background layer has no weight left and is skipped
    assert 0 not in layout.contributing(1, 0.9) and 0 in layout.contributing(1, 0.1)
