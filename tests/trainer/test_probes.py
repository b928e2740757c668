"""The cue probe (issue 11): capturing attention maps over positions without touching the blocks,
and the attention mass on the global_cue task's cue."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ablate.data.synthetic import SceneConfig, make_split
from ablate.models.segmenter import Segmenter
from ablate.trainer.probes import AttentionCapture, cue_fraction, cue_mass, make_cue_probe

SMALL = {"name": "small_cnn", "width": 8, "depth": 3}


@pytest.fixture(scope="module")
def val():
    x, y = make_split(SceneConfig(val_images=8), "val")
    return x, y


class _Fixed(nn.Module):
    """A hand-built block: each position attends by ``logits_fn(b, N)`` (B, N) scores, the same
    for every query row, through ``Tensor.softmax`` over a (B, N, N) map."""

    def __init__(self, logits_fn):
        super().__init__()
        self.logits_fn = logits_fn

    def forward(self, f):
        b, c, h, w = f.shape
        scores = self.logits_fn(b, h * w).to(f)[:, None, :].expand(b, h * w, h * w)
        attn = scores.softmax(dim=-1)
        return (f.flatten(2) @ attn.transpose(1, 2)).reshape(b, c, h, w)


def _model_with(block: nn.Module) -> Segmenter:
    model = Segmenter(5, SMALL, "none", {}, seed=0).eval()
    model.attention = block
    return model


def test_uniform_attention_gives_the_cue_area_fraction(val):
    x, y = val
    mass = make_cue_probe(x, y)(_model_with(_Fixed(lambda b, n: torch.zeros(b, n))))
    cue = (y == 255).float().mean().item()  # the cue's share of the image's pixels
    assert cue == pytest.approx(SceneConfig().cue_side ** 2 / SceneConfig().size ** 2)
    assert mass == pytest.approx(cue, rel=1e-5)


def test_attention_only_on_the_cue_gives_one(val):
    x, y = val
    side = Segmenter(5, SMALL, "none", {}).eval().features(x).shape[-1]
    full = cue_fraction(y, (side, side)) == 1.0  # feature cells entirely inside the cue
    assert full.any(1).all(), "a 4-pixel cue covers at least one stride-2 cell"
    logits = torch.where(full, 0.0, float("-inf"))
    mass = make_cue_probe(x, y)(_model_with(_Fixed(lambda b, n: logits)))
    assert mass == pytest.approx(1.0, abs=1e-6)
    # away from the cue: zero
    far = torch.where(cue_fraction(y, (side, side)) == 0, 0.0, float("-inf"))
    assert make_cue_probe(x, y)(_model_with(_Fixed(lambda b, n: far))) == pytest.approx(0.0, abs=1e-6)


def test_sdpa_weights_are_recomputed_exactly():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 16, 4, generator=g) for _ in range(3))
    mask = torch.rand(16, 16, generator=g) > 0.3
    mask.fill_diagonal_(True)
    for kwargs in ({}, {"scale": 0.7}, {"attn_mask": mask}):
        with AttentionCapture(16, 2) as cap:
            out = F.scaled_dot_product_attention(q, k, v, **kwargs)
        assert len(cap.maps) == 1 and cap.maps[0].shape == (2, 3 * 16, 16)
        torch.testing.assert_close(cap.maps[0].reshape(2, 3, 16, 16) @ v, out, rtol=1e-5, atol=1e-6)


def test_capture_keeps_only_maps_over_positions_once_and_restores_torch():
    before = (torch.softmax, F.softmax, F.scaled_dot_product_attention)
    x = torch.randn(2, 6, 9)
    with AttentionCapture(9, 2) as cap:
        F.softmax(x, dim=-1)  # calls Tensor.softmax inside: kept once
        torch.softmax(x, 1)  # over 6 entries: not positions
        x.softmax(-1)
        torch.softmax(torch.randn(3, 9), dim=-1)  # leading dim is not the batch
        torch.softmax(x.transpose(1, 2), dim=1)  # over positions along dim 1: kept, moved last
    assert len(cap.maps) == 3
    assert all(m.shape == (2, 6, 9) for m in cap.maps)
    torch.testing.assert_close(cap.maps[2], torch.softmax(x, -1))
    assert (torch.softmax, F.softmax, F.scaled_dot_product_attention) == before
    assert "softmax" not in torch.Tensor.__dict__


def test_cue_mass_of_no_map_is_none():
    assert cue_mass([], torch.ones(2, 4)) is None


@pytest.mark.parametrize("mechanism,args,has_map", [
    ("none", {}, False), ("nonlocal", {}, True), ("danet_position", {}, True), ("gcnet", {}, True),
    ("nonlocal_dot", {}, False), ("ccnet", {}, True), ("nonlocal", {"pattern": "local_window"}, True),
    ("isa", {}, False)])
def test_real_blocks(val, mechanism, args, has_map):
    """Attention over positions is found in the presets that have it (the Non-local family
    through PyTorch's SDPA, DANet's position module, GCNet's query-independent map, CCNet's
    band and the local window through their values); a block without one (none; the dot-product
    form divides by N; ISA's attention is split over groups) gives None."""
    x, y = val
    model = Segmenter(5, {"name": "small_cnn", "width": 16, "depth": 3}, mechanism, args, seed=0).eval()
    mass = make_cue_probe(x, y)(model)
    assert (mass is not None) == has_map
    if has_map:
        assert 0.0 <= mass <= 1.0


def test_probe_runs_on_half_precision_weights(val):
    x, y = val
    model = Segmenter(5, SMALL, "nonlocal", {}, seed=0).eval().to(torch.bfloat16)
    mass = make_cue_probe(x, y)(model)
    assert mass is not None and 0.0 <= mass <= 1.0


def test_a_failing_probe_is_a_missing_value_not_a_failed_trial():
    from ablate.models.segmenter import SegmentationModule

    module = SegmentationModule(5, SMALL, "none", {}, seed=0)
    module.probe = lambda model: 1 / 0
    module.train()
    with pytest.warns(UserWarning, match="ZeroDivisionError"):
        assert module._run_probe() is None
    assert module.model.training, "the model's mode is restored"


def test_band_attention_is_probed_through_its_values():
    """Criss-cross attention (a softmax over each pixel's row and column, no N-wide map): with
    q = k = 0 every pixel weighs its H + W - 1 band pixels equally, so its mass on the cue is
    the cue's mean over its row and column."""
    import ablate_kernels.criss_cross as kernel  # looked up at call time, as the blocks do

    g = torch.Generator().manual_seed(0)
    b, h, w = 2, 5, 7
    cue = torch.rand(b, h * w, generator=g) * (torch.rand(b, h * w, generator=g) < 0.3)
    q = torch.zeros(b, 4, h, w)
    v = torch.randn(b, 3, h, w, generator=g)
    before = kernel.criss_cross_attention
    with AttentionCapture(h * w, b, cue) as cap:
        out = kernel.criss_cross_attention(q, q, v)
    torch.testing.assert_close(out, kernel.criss_cross_attention(q, q, v))  # the block's own result is untouched
    assert not cap.maps and len(cap.masses) == 1
    assert kernel.criss_cross_attention is before, "restored on exit"
    m = cue.reshape(b, h, w)
    expected = torch.stack([(m[:, y, :].sum(1) + m[:, :, x].sum(1) - m[:, y, x]) / (h + w - 1)
                            for y in range(h) for x in range(w)], dim=1)  # (B, N)
    got = cap.masses[0].reshape(b, 3, h * w)
    torch.testing.assert_close(got, expected[:, None].expand(b, 3, h * w), rtol=1e-5, atol=1e-6)
    assert cue_mass([], cue, cap.masses) == pytest.approx(float(expected.mean()), rel=1e-5)
