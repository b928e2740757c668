"""DGMN's dynamic sampling: learned offsets (grid_sample, bilinear) against the fixed base set."""
from __future__ import annotations

import pytest
import torch

from ablate.attention import MECHANISMS
from ablate.attention.dgmn import DGMNBlock, draw_offsets, sample_at, sample_neighbours

C = 16
DGMN = MECHANISMS["dgmn"]


def _pair(dtype=torch.float64, **kw):
    """A learned-offsets block and a fixed one with the same weights (the offset conv aside)."""
    torch.manual_seed(0)
    fixed = DGMNBlock(C, offsets="fixed", **kw).to(dtype)
    torch.manual_seed(1)
    learned = DGMNBlock(C, offsets="learned", **kw).to(dtype)
    missing, unexpected = learned.load_state_dict(fixed.state_dict(), strict=False)
    assert sorted(missing) == ["offset_conv.bias", "offset_conv.weight"] and not unexpected
    return learned, fixed


def _x(h=9, w=7, dtype=torch.float64, seed=2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, C, h, w, generator=g, dtype=dtype)


def _grid(b, k, h, w, dtype=torch.float64):
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([ys, xs], -1).to(dtype).expand(b, k, h, w, 2)


def test_preset_defaults_to_learned_offsets_and_keeps_fixed():
    assert DGMN.defaults["offsets"] == "learned"
    assert DGMN.factor("offsets").choices == ("learned", "fixed")
    assert hasattr(DGMN.build(C), "offset_conv")
    assert not hasattr(DGMN.build(C, offsets="fixed"), "offset_conv")
    with pytest.raises(ValueError):
        DGMN.resolve({"offsets": "random"})


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_learned_offsets_at_init_equal_the_fixed_base_set(train):
    learned, fixed = _pair(samples=12, radius=3)
    assert learned.offset_conv.weight.abs().sum() == 0 and learned.offset_conv.bias.abs().sum() == 0
    learned.train(train), fixed.train(train)
    x = _x()
    torch.testing.assert_close(learned(x), fixed(x), rtol=1e-12, atol=1e-12)


def test_gradients_reach_the_offset_conv():
    learned, _ = _pair(samples=12, radius=3)
    learned(_x()).square().mean().backward()
    conv = learned.offset_conv
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    assert conv.bias.grad is not None and conv.bias.grad.abs().sum() > 0


@pytest.mark.parametrize("dy, dx", [(0, 0), (1, 0), (0, -2), (-3, 2), (4, 5)])
def test_sampling_at_an_integer_offset_indexes_the_pixel(dy, dx):
    x = _x(h=6, w=5)
    out = sample_at(x, _grid(2, 1, 6, 5) + torch.tensor([dy, dx], dtype=x.dtype))[:, :, 0]
    want = torch.zeros_like(x)
    for i in range(6):
        for j in range(5):
            if 0 <= i + dy < 6 and 0 <= j + dx < 5:
                want[:, :, i, j] = x[:, :, i + dy, j + dx]
    torch.testing.assert_close(out, want, rtol=0, atol=1e-12)
    # ... and so does the fixed path's slicing, at the same offsets
    nbr, inside = sample_neighbours(x, torch.tensor([[dy, dx]]))
    torch.testing.assert_close(nbr[:, :, 0], want, rtol=0, atol=0)


def test_sampling_between_pixels_is_bilinear():
    x = _x(h=5, w=6)
    pos = _grid(2, 1, 5, 6) + torch.tensor([0.25, 0.5], dtype=x.dtype)
    out = sample_at(x, pos)[:, :, 0, 1:3, 1:3]
    patch = [[x[:, :, i:i + 2, j:j + 2] for j in (1, 2)] for i in (1, 2)]
    w = torch.tensor([[0.75 * 0.5, 0.75 * 0.5], [0.25 * 0.5, 0.25 * 0.5]], dtype=x.dtype)
    want = torch.stack([torch.stack([(p * w).sum((-2, -1)) for p in row], -1) for row in patch], -2)
    torch.testing.assert_close(out, want, rtol=0, atol=1e-12)


def test_predicted_offsets_move_the_samples():
    # A bias of (dy, dx) = (1, -1) on every sample moves every sampling position by it: the
    # neighbours are the fixed base set's neighbours of the shifted offsets (zeros outside).
    learned, _ = _pair(samples=6, radius=2)
    with torch.no_grad():
        learned.offset_conv.bias.copy_(torch.tensor([1.0, -1.0]).repeat(6))
    xd = learned.reduce(_x(h=7, w=8))
    nbr, inside = learned.neighbours(xd)
    moved, _ = sample_neighbours(xd, learned.offsets + torch.tensor([1, -1]))
    torch.testing.assert_close(nbr, moved, rtol=0, atol=1e-12)
    # the softmax still runs over the base set's positions inside the image
    assert torch.equal(inside, sample_neighbours(xd, learned.offsets)[1])


@pytest.mark.parametrize("offsets", ["learned", "fixed"])
def test_softmax_over_each_pixels_sampled_set_sums_to_one(offsets):
    torch.manual_seed(0)
    block = DGMNBlock(C, samples=10, radius=4, groups=2, offsets=offsets).double()
    if offsets == "learned":  # away from the zero init: offsets that really move the samples
        with torch.no_grad():
            block.offset_conv.weight.normal_(0, 0.5)
    xd = block.reduce(_x())
    nbr, inside = block.neighbours(xd)
    attn = block.attention(xd, inside)
    assert attn.shape == (2, 2, 10, 9, 7) and nbr.shape == (2, block.inner, 10, 9, 7)
    torch.testing.assert_close(attn.sum(dim=2), torch.ones(2, 2, 9, 7, dtype=torch.float64))
    assert (attn >= 0).all() and (attn.masked_select(~inside.expand_as(attn)) == 0).all()
    assert (~inside).any()  # the corner pixels do lose samples at radius 4 on a 9 x 7 map


def test_base_offsets_are_the_fixed_forms():
    learned, fixed = _pair(samples=12, radius=3)
    assert torch.equal(learned.offsets, fixed.offsets) and torch.equal(fixed.offsets, draw_offsets(12, 3, 0))
