"""Attention patching hygiene and attention control on the tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from lib_mrgd import load_spec, run_edit
from lib_mrgd.attention.controller import EditController, PairPlan, _levels
from lib_mrgd.attention.mappers import swap_mapper
from lib_mrgd.attention.patcher import find_sites, merge, patched, project, sdpa
from lib_mrgd.layout import BatchLayout, Branch, Layout, Row, Window


class StandInCrossAttention(torch.nn.Module):
    """ldm's CrossAttention as the WebUI runs it: the class forward is the host's optimisation."""

    def __init__(self, dim=32, context_dim=None, heads=4):
        super().__init__()
        context_dim = context_dim or dim
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.to_q = torch.nn.Linear(dim, dim, bias=False)
        self.to_k = torch.nn.Linear(context_dim, dim, bias=False)
        self.to_v = torch.nn.Linear(context_dim, dim, bias=False)
        self.to_out = torch.nn.Sequential(torch.nn.Linear(dim, dim), torch.nn.Dropout(0.0))

    def forward(self, x, context=None, mask=None, **kwargs):
        h = self.heads
        ctx = x if context is None else context
        q, k, v = (t.reshape(t.shape[0], t.shape[1], h, -1).transpose(1, 2)
                   for t in (self.to_q(x), self.to_k(ctx), self.to_v(ctx)))
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1))


class StandInUNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.input_blocks = torch.nn.ModuleList([torch.nn.Module()])
        block = self.input_blocks[0]
        block.attn1 = StandInCrossAttention()
        block.attn2 = StandInCrossAttention(context_dim=16)

    def forward(self, x, context):
        b = self.input_blocks[0]
        return b.attn2(b.attn1(x), context=context)


class Always:
    """A hook that takes every call and computes plain attention its own way."""

    def __init__(self, fail=False):
        self.fail, self.calls = fail, 0

    def wants(self, site, x, context):
        return True

    def attend(self, site, x, context):
        self.calls += 1
        if self.fail:
            raise RuntimeError("boom")
        q, k, v = project(site, x, context)
        return merge(site, sdpa(site, q, k, v))


class Never(Always):
    def wants(self, site, x, context):
        return False


def leftover_patches(unet: torch.nn.Module) -> list[str]:
    """Names of modules that still carry an instance ``forward`` (should be none)."""
    return [name for name, m in unet.named_modules() if "forward" in vars(m)]


def _unet_out(tiny, x, ctx):
    with torch.no_grad():
        return tiny.unet(x, torch.tensor([500.0] * len(x)), encoder_hidden_states=ctx).sample


@pytest.fixture
def probe(tiny):
    ctx = tiny.encode_prompts(["a red car"])[0][None].repeat(2, 1, 1)
    x = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(3))
    return x, ctx


def test_sites_cover_every_transformer_attention(tiny):
    sites = find_sites(tiny.unet)
    assert len(sites) == 2 * sum(1 for n, _ in tiny.unet.named_modules() if n.endswith("transformer_blocks.0"))
    assert {s.block for s in sites} == {"down", "mid", "up"} and {s.kind for s in sites} == {"self", "cross"}


def test_diffusers_patch_restores_bit_identical(tiny, probe):
    x, ctx = probe
    before = _unet_out(tiny, x, ctx)
    hook = Never()
    with patched(tiny.unet, hook):
        idle = _unet_out(tiny, x, ctx)
    assert torch.equal(idle, before)  # an idle hook leaves the fast path alone
    with patched(tiny.unet, Always()) as sites:
        own = _unet_out(tiny, x, ctx)
        assert all("forward" in vars(s.module) for s in sites)
    assert torch.allclose(own, before, atol=1e-4)  # our attention path computes the same thing
    assert leftover_patches(tiny.unet) == []
    assert torch.equal(_unet_out(tiny, x, ctx), before)


def test_a_failure_inside_a_patched_forward_still_restores(tiny, probe):
    x, ctx = probe
    before = _unet_out(tiny, x, ctx)
    with pytest.raises(RuntimeError, match="boom"):
        with patched(tiny.unet, Always(fail=True)):
            _unet_out(tiny, x, ctx)
    assert leftover_patches(tiny.unet) == []
    assert torch.equal(_unet_out(tiny, x, ctx), before)


def test_ldm_stand_in_patch_hygiene():
    torch.manual_seed(0)
    unet = StandInUNet().eval()
    x, ctx = torch.randn(2, 64, 32), torch.randn(2, 7, 16)
    with torch.no_grad():
        before = unet(x, ctx)
        sites = find_sites(unet)
        assert [(s.kind, s.family, s.block) for s in sites] == [("self", "ldm", "down"), ("cross", "ldm", "down")]
        hook = Always()
        with patched(unet, hook):
            own = unet(x, ctx)
        assert hook.calls == 2 and torch.allclose(own, before, atol=1e-6)
        assert leftover_patches(unet) == []
        assert torch.equal(unet(x, ctx), before)
        with pytest.raises(RuntimeError):
            with patched(unet, Always(fail=True)):
                unet(x, ctx)
        assert leftover_patches(unet) == [] and torch.equal(unet(x, ctx), before)


def test_levels_scale_with_the_crop():
    assert _levels(64, 64, 256) == 2  # 16x16 of a 64x64 latent
    assert _levels(32, 16, 32) == 2
    assert _levels(64, 64, 4096) == 0
    assert _levels(8, 8, 16) == 1


def test_call_plan_edits_only_conditional_rows_with_a_linear_decay():
    layout = Layout.from_spec(load_spec({"width": 128, "height": 128}))
    ctl = EditController(layout, {0: PairPlan(0, cross=0.6, self_=0.3, mapper=swap_mapper(77))})
    w = Window(0, 0, 16, 16)
    rows = BatchLayout(tuple(Row(i, 0, b, w) for b in (Branch.COND, Branch.UNCOND) for i in (0, 1)))
    for progress, weight, self_on in ((0.0, 1.0, True), (0.3, 0.5, False), (0.6, None, False)):
        ctl.set_progress(progress)
        plan = ctl._call_plan(rows)
        assert [(s, t) for s, t, _, _ in plan.cross] == ([(0, 1)] if weight is not None else [])
        if weight is not None:
            assert plan.cross[0][2] == pytest.approx(weight)
        assert plan.self_ == ([(0, 1)] if self_on else [])


def _edit(spec, tiny, method):
    return run_edit(spec, tiny, method=method, progress=False)


ZERO = {f"inject_{k}": [0.0, 0.0] for k in ("background", "inherent", "edit", "total", "add_remove")}


def test_zero_injection_p2p_equals_multidiffusion_exactly(tiny, spec_dict):
    spec_dict["options"] = ZERO
    a, b = _edit(spec_dict, tiny, "multidiffusion"), _edit(spec_dict, tiny, "p2p")
    assert torch.equal(a.latents, b.latents)


@pytest.mark.parametrize("method", ["p2p", "mrgd"])
def test_identical_prompts_give_identical_images(tiny, spec_dict, method):
    spec_dict["regions"] = [{"box": [0.1, 0.1, 0.5, 0.5], "source": "a cat", "target": "a cat"}]
    result = _edit(spec_dict, tiny, method)
    assert torch.equal(result.latents[0], result.latents[1])


def test_p2p_changes_the_target_only(tiny, spec_dict):
    a, b = _edit(spec_dict, tiny, "multidiffusion"), _edit(spec_dict, tiny, "p2p")
    scale = a.latents.abs().max().item()
    source_change = (a.latents[0] - b.latents[0]).abs().max().item()
    target_change = (a.latents[1] - b.latents[1]).abs().max().item()
    # the source only sees rounding from the explicit attention path; the target is edited
    assert source_change <= 1e-4 * scale
    assert target_change > 100 * source_change


def test_kssa_factor_one_equals_kssa_off_exactly_and_other_factors_act(tiny, spec_dict):
    spec_dict["regions"][0]["keywords"] = ["girl"]
    spec_dict["options"] = {"kssa": False}
    off = _edit(spec_dict, tiny, "mrgd")
    spec_dict["options"] = {"kssa": True, "kssa_factor": 1.0}
    one = _edit(spec_dict, tiny, "mrgd")
    spec_dict["options"] = {"kssa": True, "kssa_factor": 1.5}
    on = _edit(spec_dict, tiny, "mrgd")
    assert torch.equal(off.latents, one.latents)
    assert not torch.allclose(on.latents, off.latents, atol=1e-4)


def test_mrgd_selects_keywords_from_each_region(tiny, spec_dict):
    spec_dict["steps"] = 8
    result = _edit(spec_dict, tiny, "mrgd")
    kw = result.info["keywords"]
    region_words = [set(r["source"].replace(",", " ").split()) | set(r["target"].split()) for r in spec_dict["regions"]]
    for found, words in zip(kw, region_words):
        selected = [k["word"] for k in found["source"] + found["target"]]
        assert selected and set(selected) <= words
        assert all(0.0 <= k["entropy"] <= 8.0 for k in found["source"] + found["target"])
    assert kw[1]["source"] == []  # an addition has no source words


def test_word_swap_with_unequal_tokens_falls_back_with_a_warning(tiny, spec_dict):
    spec_dict["regions"] = [{"box": [0, 0, 0.5, 0.5], "source": "a cat", "target": "a big fluffy cat"}]
    result = _edit(spec_dict, tiny, "p2p")
    assert any("fell back to refine" in w for w in result.info["warnings"])


def _outside_ssim(result, box):
    a = np.asarray(result.source, dtype=np.float64) / 255
    b = np.asarray(result.target, dtype=np.float64) / 255
    _, full = structural_similarity(a, b, channel_axis=-1, data_range=1.0, full=True)
    keep = np.ones(a.shape[:2], bool)
    x0, y0, x1, y1 = (int(round(v * 128)) for v in (box[0], box[1], box[0] + box[2], box[1] + box[3]))
    keep[y0:y1, x0:x1] = False
    return float(full[keep].mean())


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_full_injection_preserves_outside_the_edit_better_than_multidiffusion(tiny, seed):
    edit_box = [0.5, 0.25, 0.5, 0.5]
    spec = {"width": 128, "height": 128, "seed": seed, "steps": 10, "background": "a living room with a sofa",
            "regions": [{"box": [0.0, 0.0, 0.5, 1.0], "source": "a girl reading", "target": "a girl reading"},
                        {"box": edit_box, "source": "a cat", "target": "a red sports car"}],
            "options": {"inject_background": [1.0, 1.0], "inject_inherent": [1.0, 1.0], "self_replace_factor": 1}}
    md, p2p = _edit(spec, tiny, "multidiffusion"), _edit(spec, tiny, "p2p")
    assert _outside_ssim(p2p, edit_box) > _outside_ssim(md, edit_box)
