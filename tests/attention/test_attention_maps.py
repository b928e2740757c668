"""The attention-map hook (ablate/attention/maps.py): every preset records what DRAWN says, of the
documented kind and shape; recording changes no output, no gradient and no state; the dense maps
built for mechanisms whose kernels never hold one are the maps those kernels apply."""
from __future__ import annotations

import re

import pytest
import torch

from ablate.attention import MECHANISMS, maps
from ablate.attention.patterns import PATTERNS

C, H, W = 16, 6, 8  # H != W: a transposed map would show


def _x(seed: int = 0, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, C, H, W, generator=torch.Generator().manual_seed(seed))


def _block(name: str, **overrides):
    torch.manual_seed(0)
    return MECHANISMS[name].build(C, **overrides)


def _documented(block) -> set[str]:
    """The map names DRAWN gives for the block (the back-quoted words of its entry)."""
    return set(re.findall(r"`([a-z_]+)`", maps.DRAWN[type(block).__name__]))


@pytest.mark.parametrize("name", sorted(MECHANISMS))
def test_every_preset_records_its_documented_maps(name):
    block = _block(name).eval()
    assert type(block).__name__ in maps.DRAWN
    with torch.no_grad(), maps.recording() as got:
        block(_x())
    if name == "none":
        assert got == []
        return
    assert got, f"{name} recorded nothing"
    names = {re.sub(r"_\d+x\d+$", "_sxs", m.name) for m in got}  # affinity_2x2 is DRAWN's affinity_sxs
    assert names <= _documented(block), (names, _documented(block))
    for m in got:
        assert m.kind in maps.KINDS and m.tensor.shape[0] == 2 and m.tensor.dtype == torch.float32
        assert torch.isfinite(m.tensor).all()
        if m.kind in maps.SPATIAL:
            picture, words = maps.at_query(m, 1, 0.4, 0.7)
            assert picture.shape == m.grid and words
        if m.kind == "pairwise" and name not in ("nonlocal_dot", "nonlocal_concat", "isa"):  # softmax rows sum to 1
            # (the mean forms divide by N; ISA's rows leave out the weight on padding pixels)
            assert torch.allclose(m.tensor.sum(-1), torch.ones(()), atol=1e-5), m.name


@pytest.mark.parametrize("name", sorted(set(MECHANISMS) - {"none"}))
@pytest.mark.parametrize("train", [True, False])
def test_recording_changes_no_output_gradient_or_state(name, train):
    x = _x(1).requires_grad_(True)
    outs = []
    for recorded in (False, True):
        block = _block(name).train(train)
        xi = x.detach().clone().requires_grad_(True)
        if recorded:
            with maps.recording():
                y = block(xi)
        else:
            y = block(xi)
        (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        outs.append((y.detach(), xi.grad, {k: v.clone() for k, v in block.state_dict().items()}))
    (y0, g0, s0), (y1, g1, s1) = outs
    assert torch.equal(y0, y1) and torch.equal(g0, g1)
    assert s0.keys() == s1.keys() and all(torch.equal(s0[k], s1[k]) for k in s0)


def test_nothing_is_recorded_outside_a_recording_and_the_innermost_recording_records():
    block = _block("nonlocal").eval()
    maps.record("stray", torch.zeros(1, 4, 4), grid=(2, 2))  # no recording: a no-op
    with maps.recording() as outer:
        with maps.recording() as inner:
            block(_x())
        block(_x())
    assert len(inner) == 1 and len(outer) == 1 and not maps.active()


def test_a_map_of_the_wrong_shape_is_refused():
    with maps.recording(), pytest.raises(ValueError, match="shape"):
        maps.record("affinity", torch.zeros(1, 4, 5), grid=(2, 2))


def _recorded(block, x) -> list:
    with torch.no_grad(), maps.recording() as got:
        block(x)
    return got


def _apply(dense: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The aggregation a pairwise map stands for: y_n = Σ_m a_nm v_m."""
    return torch.einsum("bnm,bcm->bcn", dense, v.flatten(2)).view_as(v)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_the_nonlocal_map_is_the_one_its_pattern_applies(pattern):
    block = _block("nonlocal", pattern=pattern, window=3, down_factor=3, samples=9, radius=2).eval().double()
    x = _x().double()
    (m,) = _recorded(block, x)
    with torch.no_grad():
        v = block.sigma(block.pre(x))
        want = block._sparse(x) if pattern != "full" else None
        if want is None:
            q, k, vv = block._qkv(x)
            want = (block.attention_map(x) @ vv).transpose(1, 2).reshape_as(v)
    torch.testing.assert_close(_apply(m.tensor.double(), v), want, rtol=1e-4, atol=1e-5)


def test_the_criss_cross_map_is_the_band_the_kernel_applies():
    block = _block("ccnet", R=1).eval().double()
    x = _x().double()
    (m,) = _recorded(block, x)
    cca = block.cca
    with torch.no_grad():
        from ablate_kernels.reference import criss_cross_reference

        want = criss_cross_reference(cca.query(x), cca.key(x), cca.value(x))
        row = m.tensor[0].view(H * W, H, W)[2 * W + 3]  # query (2, 3): non-zero on row 2 and column 3 only
    torch.testing.assert_close(_apply(m.tensor.double(), cca.value(x)), want, rtol=1e-4, atol=1e-5)
    off = torch.ones(H, W, dtype=torch.bool)
    off[2, :] = False
    off[:, 3] = False
    assert row[off].abs().max() == 0 and row[~off].min() > 0


@pytest.mark.parametrize("composability", ["dot", "squared_diff"])
def test_the_local_relation_map_is_the_window_the_kernel_applies(composability):
    block = _block("local_relation", window=5, channels_per_group=16, composability=composability).eval().double()
    x = _x().double()
    (m,) = _recorded(block, x)  # one group: the mean over groups is the group's map
    with torch.no_grad():
        from ablate_kernels.reference import local_window_reference

        want = local_window_reference(block.query(x), block.key(x), x, block.geometry_bias(), 5, composability)
    torch.testing.assert_close(_apply(m.tensor.double(), x), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("offsets", ["learned", "fixed"])
def test_the_dgmn_map_places_each_sample_where_it_is_read(offsets):
    block = _block("dgmn", samples=7, radius=2, offsets=offsets).eval().double()
    if offsets == "learned":  # move the samples off the integer grid
        torch.nn.init.normal_(block.offset_conv.weight, std=0.3)
    x = _x().double()
    (m,) = _recorded(block, x)
    with torch.no_grad():
        xd = block.reduce(x)
        nbr, inside = block.neighbours(xd)
        want = (nbr * block.attention(xd, inside)).sum(2)
    torch.testing.assert_close(_apply(m.tensor.double(), xd), want, rtol=1e-4, atol=1e-5)


def test_the_ocnet_pyramid_maps_stay_inside_their_regions():
    block = _block("ocnet_pyramid").eval()
    got = {m.name: m.tensor for m in _recorded(block, _x())}
    assert set(got) == {"affinity_1x1", "affinity_2x2", "affinity_3x3", "affinity_6x6"}
    region = (torch.arange(H)[:, None] // (H // 2) * 2 + torch.arange(W)[None, :] // (W // 2)).flatten()
    across = region[:, None] != region[None, :]
    assert got["affinity_2x2"][:, across].abs().max() == 0
    assert torch.allclose(got["affinity_2x2"].sum(-1), torch.ones(()), atol=1e-5)


def test_the_isa_maps_are_its_long_and_short_range_groups():
    block = _block("isa", down_factor=3).eval()
    got = {m.name: m.tensor for m in _recorded(block, _x())}
    assert set(got) == {"long_range", "short_range"}
    ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()  # H = 6, W = 8 -> padded to 6 x 9, one column on the right
    pad_left = 0
    same_offset = (ys[:, None] % 3 == ys[None, :] % 3) & ((xs[:, None] + pad_left) % 3 == (xs[None, :] + pad_left) % 3)
    same_block = (ys[:, None] // 3 == ys[None, :] // 3) & ((xs[:, None] + pad_left) // 3 == (xs[None, :] + pad_left) // 3)
    assert got["long_range"][:, ~same_offset].abs().max() == 0 and got["long_range"][:, same_offset].min() > 0
    assert got["short_range"][:, ~same_block].abs().max() == 0 and got["short_range"][:, same_block].min() > 0


def test_the_stn_picture_is_where_the_query_samples_from():
    block = _block("stn").eval()
    with torch.no_grad():
        block.localisation[-1].bias.copy_(torch.tensor([1.0, 0.0, 0.25, 0.0, 1.0, 0.0]))  # shift right by 1/8
    (m,) = _recorded(block, _x())
    picture, _ = maps.at_query(m, 0, 2.5 / H, 3.5 / W)  # pixel (2, 3) reads pixel (2, 4)
    want = torch.zeros(H, W)
    want[2, 4] = 1.0
    torch.testing.assert_close(picture, want)
    x = _x()
    with torch.no_grad():
        assert torch.allclose(block(x)[:, :, 2, 3], x[:, :, 2, 4], atol=1e-5)


def test_channel_kinds_are_drawn_as_they_are():
    se = _block("senet").eval()
    (m,) = _recorded(se, _x())
    picture, words = maps.at_query(m, 0, 0.5, 0.5)
    assert m.kind == "channel" and picture.shape == (1, C) and "channel" in words
    (pos, chan) = _recorded(_block("danet").eval(), _x())
    assert (pos.kind, chan.kind) == ("pairwise", "channel_matrix") and chan.tensor.shape == (2, C, C)
    assert maps.at_query(chan, 0, 0.5, 0.5)[0].shape == (C, C)
    assert torch.allclose(chan.tensor.sum(-1), torch.ones(()), atol=1e-5)
