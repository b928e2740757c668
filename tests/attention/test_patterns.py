"""The pattern slot: each sparse pattern equals softmax attention under its explicit mask."""
from __future__ import annotations

import pytest
import torch
import yaml

from ablate.attention import MECHANISMS, get_preset
from ablate.attention import patterns as P
from support import run_cli, tiny_study

SHAPES = [(2, 3, 4, 8, 8), (1, 5, 2, 7, 9), (2, 4, 3, 6, 5)]  # B, d, c, H, W


def _inputs(b, d, c, h, w, dtype=torch.float64):
    g = torch.Generator().manual_seed(b * 1000 + d * 100 + h * 10 + w)
    return [torch.randn(b, ch, h, w, generator=g, dtype=dtype, requires_grad=True) for ch in (d, d, c)]


def _run(pattern, q, k, v, **kw):
    if pattern == "interlaced":
        return P.interlaced(q, k, v, kw["down_factor"])
    if pattern == "sampled":
        return P.sampled(q, k, v, kw["offsets"])
    if pattern == "criss_cross":
        return P.criss_cross(q, k, v)
    if pattern == "local_window":
        return P.local_window(q, k, v, kw["window"])
    return P.full(q, k, v)


CASES = [("full", {}), ("interlaced", {"down_factor": 2}), ("interlaced", {"down_factor": 3}),
         ("sampled", {"offsets": P.offsets(9, 3, seed=1)}), ("criss_cross", {}),
         ("local_window", {"window": 3}), ("local_window", {"window": 5})]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("pattern,kw", CASES, ids=[f"{p}-{'-'.join(map(str, k.values())) if p != 'sampled' else 's'}"
                                                   for p, k in CASES])
def test_pattern_equals_masked_dense_attention(pattern, kw, shape):
    b, d, c, h, w = shape
    q, k, v = _inputs(*shape)
    allowed = P.mask(pattern, h, w, window=kw.get("window", 7), down_factor=kw.get("down_factor", 4),
                     offsets=kw.get("offsets"))
    got = _run(pattern, q, k, v, **kw)
    want = P.reference_dense(q, k, v, allowed)
    assert torch.allclose(got, want, rtol=1e-9, atol=1e-10)
    upstream = torch.randn_like(got)
    g_got = torch.autograd.grad(got, (q, k, v), upstream)
    g_want = torch.autograd.grad(want, (q, k, v), upstream)
    for a, e in zip(g_got, g_want):
        assert torch.allclose(a, e, rtol=1e-8, atol=1e-10)


def test_masks_have_the_sizes_the_patterns_promise():
    h, w = 8, 8
    assert P.mask("criss_cross", h, w).sum(1).eq(h + w - 1).all()
    assert P.mask("interlaced", h, w, down_factor=4).sum(1).eq(4 + 16 - 1).all()  # lattice 2x2 + block 4x4 - self
    assert P.mask("local_window", h, w, window=3).sum(1).max() == 9
    assert P.mask("sampled", h, w, offsets=P.offsets(5, 2)).diagonal().all()  # the centre is always met


def _reach(block, h=8, w=8):
    """Which input pixels influence the output at pixel (0, 0) beyond the residual path."""
    torch.manual_seed(0)
    x = torch.randn(1, block.channels, h, w, requires_grad=True)
    y = block(x)
    (g,) = torch.autograd.grad(y[0, :, 0, 0].sum(), x)
    return g.abs().sum((0, 1)) > 0


@pytest.mark.parametrize("pattern,kw", [("criss_cross", {}), ("interlaced", {"down_factor": 4})])
def test_two_passes_of_a_sparse_pattern_reach_every_pixel(pattern, kw):
    preset = get_preset("nonlocal")
    one = preset.build(8, pattern=pattern, zero_init=False, **kw).eval()
    two = preset.build(8, pattern=pattern, R=2, zero_init=False, **kw).eval()
    missing, unexpected = two.load_state_dict(one.state_dict(), strict=False)
    assert not unexpected and {k.split(".")[0] for k in missing} == {"later_norms"}  # pass 2's own BN
    reach1, reach2 = _reach(one), _reach(two)
    assert not reach1.all() and reach2.all()
    assert reach1.sum() == P.mask(pattern, 8, 8, down_factor=kw.get("down_factor", 4))[0].sum()  # row of pixel (0, 0)


def test_full_pattern_is_unchanged_by_the_added_factors():
    preset = MECHANISMS["nonlocal"]
    args = preset.resolve({})
    ident = preset.identity(args)
    assert set(args) - set(ident) == {"R", "window", "down_factor", "samples", "radius", "dropped_qk"}
    assert preset.identity(preset.resolve({"R": 2}))["R"] == 2
    # a sparse pattern with a form it cannot take is refused before anything runs
    with pytest.raises(ValueError, match="affinity 'dot' and normalization 'softmax'"):
        preset.resolve({"pattern": "criss_cross", "normalization": "mean"})


def test_study_with_an_impossible_pattern_combination_exits_2(tmp_path):
    path = tiny_study(tmp_path, model={"backbone": {"name": "small_cnn", "width": 8}, "mechanism": "nonlocal_dot",
                                      "args": {}})
    study = yaml.safe_load(path.read_text())
    study["factors"], study["baseline"] = {"pattern": ["full", "criss_cross"]}, {"pattern": "full"}
    path.write_text(yaml.safe_dump(study))
    r = run_cli(["ablate.run", str(path), "--dry-run"], cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    said = " ".join(r.stderr.split())
    assert "affinity 'dot' and normalization 'softmax'" in said and "Traceback" not in said
    assert "key 'factors.pattern'" in said
