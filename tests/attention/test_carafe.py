"""CARAFE (ablate/attention/carafe.py): the op against mmcv's CUDA kernels, transcribed line by line
(values and gradients, float64), gradcheck, mmcv's own CARAFEPack Python code run on that
transcription, and the upsampler inside the segmenter."""
from __future__ import annotations

import types
from pathlib import Path

import pytest
import torch

from ablate.attention.carafe import (CARAFEPack, CarafeUpsampler, UpsampleSpec, build_upsampler, carafe,
                                  carafe_flops, stages_for)


# --- mmcv's kernels, transcribed from csrc/common/cuda/carafe_naive_cuda_kernel.cuh ------------
def _kernel_loops(features, masks, k, g, s, top_diff=None):
    """The naive forward (top_diff None: returns the output) or backward (returns bottom_diff,
    mask_diff) kernel, one CUDA thread per output element (n, c, ph, pw), as plain loops."""
    n_, channels, down_height, down_width = features.shape
    height, width = down_height * s, down_width * s
    out = features.new_zeros(n_, channels, height, width)
    bottom_diff, mask_diff = torch.zeros_like(features), torch.zeros_like(masks)
    r = (k - 1) // 2
    f, m = features.tolist(), masks.tolist()
    td = top_diff.tolist() if top_diff is not None else None
    for n in range(n_):
        for c in range(channels):
            mask_group = c // (channels // g)
            for ph in range(height):
                for pw in range(width):
                    down_ph, down_pw = ph // s, pw // s
                    val = 0.0
                    for iy in range(down_ph - r, down_ph + r + 1):
                        for ix in range(down_pw - r, down_pw + r + 1):
                            if iy < 0 or iy > down_height - 1 or ix < 0 or ix > down_width - 1:
                                continue
                            mask_iy, mask_ix = iy - down_ph + r, ix - down_pw + r
                            mask_c = (mask_group * k + mask_iy) * k + mask_ix
                            if td is None:
                                val += f[n][c][iy][ix] * m[n][mask_c][ph][pw]
                            else:
                                bottom_diff[n, c, iy, ix] += m[n][mask_c][ph][pw] * td[n][c][ph][pw]
                                mask_diff[n, mask_c, ph, pw] += f[n][c][iy][ix] * td[n][c][ph][pw]
                    out[n, c, ph, pw] = val
    return out if top_diff is None else (bottom_diff, mask_diff)


def _inputs(seed, n=2, c=4, h=3, w=5, k=3, g=1, s=2, normalised=True):
    gen = torch.Generator().manual_seed(seed)
    feats = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)
    masks = torch.randn(n, g * k * k, h * s, w * s, generator=gen, dtype=torch.float64)
    if normalised:
        masks = masks.view(n, g, k * k, h * s, w * s).softmax(2).view_as(masks)
    return feats, masks


CASES = [  # (c, h, w, k, g, s): the segmenter's (k 5, s 2, g 1), groups, scale 3, a window past the map
    (4, 3, 5, 5, 1, 2), (4, 4, 3, 3, 2, 2), (6, 2, 3, 3, 3, 3), (2, 2, 2, 7, 1, 2), (3, 3, 3, 1, 1, 2),
]


@pytest.mark.parametrize("c,h,w,k,g,s", CASES)
def test_op_values_and_gradients_match_the_cuda_kernels(c, h, w, k, g, s):
    feats, masks = _inputs(1, c=c, h=h, w=w, k=k, g=g, s=s)
    feats.requires_grad_(True)
    masks.requires_grad_(True)
    ours = carafe(feats, masks, k, g, s)
    ref = _kernel_loops(feats.detach(), masks.detach(), k, g, s)
    assert (ours.detach() - ref).abs().max().item() < 1e-12
    top = torch.randn(ours.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    gf, gm = torch.autograd.grad(ours, (feats, masks), top)
    rf, rm = _kernel_loops(feats.detach(), masks.detach(), k, g, s, top_diff=top)
    assert (gf - rf).abs().max().item() < 1e-12
    assert (gm - rm).abs().max().item() < 1e-12


def test_op_gradcheck():
    feats, masks = _inputs(3, n=1, c=2, h=3, w=3, k=3, g=2, s=2, normalised=False)
    assert torch.autograd.gradcheck(lambda f, m: carafe(f, m, 3, 2, 2),
                                    (feats.requires_grad_(), masks.requires_grad_()))
    assert torch.autograd.gradgradcheck(lambda f, m: carafe(f, m, 3, 2, 2),
                                        (feats.requires_grad_(), masks.requires_grad_()))


def test_pack_gradcheck():
    torch.manual_seed(0)
    pack = CARAFEPack(3, 2, up_kernel=3, compressed_channels=4).double()
    torch.nn.init.normal_(pack.content_encoder.weight, std=0.3)  # kernels far from uniform
    x = torch.randn(1, 3, 3, 4, dtype=torch.float64, requires_grad=True)
    params = [p for p in pack.parameters()]
    assert torch.autograd.gradcheck(lambda x, *p: torch.func.functional_call(
        pack, dict(zip([n for n, _ in pack.named_parameters()], p)), (x,)), (x, *params))


def test_op_refuses_bad_shapes():
    feats, masks = _inputs(0)
    with pytest.raises(ValueError, match="masks must be"):
        carafe(feats, masks[:, :, :-1], 3, 1, 2)
    with pytest.raises(ValueError, match="odd"):
        carafe(feats, masks, 2, 1, 2)
    with pytest.raises(ValueError, match="groups"):
        carafe(feats, masks, 3, 3, 2)


# --- mmcv's own CARAFEPack (mmcv/ops/carafe.py from mmcv-lite) on the transcribed kernels ---------
def _fake_ext():
    """The ``mmcv._ext`` functions carafe.py loads, from the kernel transcription above. The fast
    op's forward keeps a re-laid-out copy of the features (``rfeatures``) for its backward; here
    that copy is the features themselves."""
    def naive_forward(features, masks, output, kernel_size, group_size, scale_factor):
        output.copy_(_kernel_loops(features, masks, kernel_size, group_size, scale_factor))

    def forward(features, masks, rfeatures, routput, rmasks, output, kernel_size, group_size, scale_factor):
        rfeatures.copy_(features)
        naive_forward(features, masks, output, kernel_size, group_size, scale_factor)

    def backward(top_grad, rfeatures, masks, rtop_grad, rbottom_grad_hs, rbottom_grad, rmask_grad, bottom_grad,
                 mask_grad, kernel_size, group_size, scale_factor):
        bf, mf = _kernel_loops(rfeatures, masks, kernel_size, group_size, scale_factor, top_diff=top_grad)
        bottom_grad.copy_(bf)
        mask_grad.copy_(mf)

    return types.SimpleNamespace(carafe_naive_forward=naive_forward, carafe_forward=forward,
                                 carafe_backward=backward, carafe_naive_backward=None)


@pytest.fixture(scope="module")
def mmcv_carafe():
    """mmcv-lite's own ``mmcv/ops/carafe.py``, executed with the transcribed kernels as its
    extension and a throwaway registry (mmcv's MODELS may hold a ``carafe`` already)."""
    mmcv = pytest.importorskip("mmcv")
    pytest.importorskip("mmengine")
    from mmengine.registry import Registry

    path = Path(mmcv.__file__).parent / "ops" / "carafe.py"
    if not path.is_file():
        pytest.skip("mmcv ships no ops/carafe.py")
    source = path.read_text()
    for line in ("from ..utils import ext_loader", "from mmengine.registry import MODELS"):
        assert line in source, f"mmcv's carafe.py changed: no {line!r}"
        source = source.replace(line, "")
    module = types.ModuleType("_mmcv_ops_carafe_source")
    module.ext_loader = types.SimpleNamespace(load_ext=lambda name, funcs: _fake_ext())
    module.MODELS = Registry("carafe_parity_test")
    exec(compile(source, str(path), "exec"), module.__dict__)  # noqa: S102 - mmcv's own file
    return module


def test_pack_matches_mmcv_carafepack_values_and_gradients(mmcv_carafe):
    c, k, cm = 3, 5, 4
    torch.manual_seed(7)
    theirs = mmcv_carafe.CARAFEPack(c, 2, up_kernel=k, compressed_channels=cm).double()
    torch.manual_seed(7)
    ours = CARAFEPack(c, 2, up_kernel=k, compressed_channels=cm).double()
    # same init draws (xavier on both convs, then the encoder's normal std 0.001), same names
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for name, t in theirs.state_dict().items():
        assert torch.equal(t, ours.state_dict()[name]), name
    gen = torch.Generator().manual_seed(1)
    for module in (theirs, ours):  # make the kernels far from uniform, identically
        module.load_state_dict({n: torch.randn(t.shape, generator=torch.Generator().manual_seed(i), dtype=t.dtype)
                                for i, (n, t) in enumerate(theirs.state_dict().items())})
    x = torch.randn(2, c, 3, 4, generator=gen, dtype=torch.float64)
    top = torch.randn(2, c, 6, 8, generator=gen, dtype=torch.float64)
    outs, grads = [], []
    for module in (theirs, ours):
        xi = x.clone().requires_grad_(True)
        y = module(xi)
        y.backward(top)
        outs.append(y.detach())
        grads.append([xi.grad] + [p.grad for p in module.parameters()])
    assert (outs[0] - outs[1]).abs().max().item() < 1e-12
    for a, b in zip(*grads):
        assert (a - b).abs().max().item() < 1e-12


# --- the upsampler and the head -------------------------------------------------------------
def test_stages_and_spec():
    assert [stages_for(s) for s in (2, 4, 8)] == [1, 2, 3]
    for bad in (1, 3, 6):
        with pytest.raises(ValueError, match="power of 2"):
            stages_for(bad)
    assert UpsampleSpec.of({}) == UpsampleSpec()
    assert UpsampleSpec.of({"upsample": "carafe", "k_up": 3}).k_up == 3
    assert build_upsampler(UpsampleSpec(), 8, 2) is None
    with pytest.raises(ValueError, match="k_up"):
        build_upsampler(UpsampleSpec("carafe", k_up=4), 8, 2)
    with pytest.raises(ValueError, match="unknown upsampler"):
        build_upsampler(UpsampleSpec("nearest"), 8, 2)


def test_upsampler_shapes_and_flops():
    from torch.utils.flop_counter import FlopCounterMode

    up = CarafeUpsampler(8, 3, compressed=16)
    x = torch.randn(1, 8, 4, 5)
    with FlopCounterMode(display=False) as counter:
        y = up(x)
    assert y.shape == (1, 8, 32, 40)
    assert counter.get_total_flops() == carafe_flops(8, 4, 5, 3, compressed=16)


def _head(**kw):
    """A head record with upsampler fields (``model.head``'s keys; see ``UpsampleSpec``)."""
    from ablate.models.segmenter import as_head

    base = as_head(None)
    if hasattr(base, "upsample"):
        return type(base)(**kw)
    from dataclasses import make_dataclass

    fields = [(name, type(getattr(UpsampleSpec, name)), getattr(UpsampleSpec, name)) for name in
              ("upsample", "k_up", "k_enc", "compressed")]
    return make_dataclass("HeadWithUpsample", fields, bases=(type(base),), frozen=True)(**kw)


SMALL = {"name": "small_cnn", "width": 8, "depth": 3}


def test_bilinear_head_is_unchanged():
    from ablate.models.segmenter import Segmenter

    seg = Segmenter(3, SMALL, "none", {}, seed=0)
    assert seg.upsample is None and not any(k.startswith("upsample") for k in seg.state_dict())
    with pytest.raises(ValueError, match="k_up"):
        Segmenter(3, SMALL, "none", {}, _head(k_up=2), seed=0)


@pytest.mark.parametrize("style,mechanism", [("plain", "none"), ("plain", "nonlocal"), ("mmseg", "nonlocal"),
                                             ("mmseg", "danet")])
def test_carafe_head_runs_at_the_input_resolution(style, mechanism):
    from ablate.models.segmenter import Segmenter

    head = _head(upsample="carafe", k_up=3, compressed=16, style=style, channels=8 if style == "mmseg" else 0)
    seg = Segmenter(3, SMALL, mechanism, {}, head, seed=0)
    ref = Segmenter(3, SMALL, mechanism, {}, _head(style=style, channels=head.channels), seed=0)
    assert len(seg.upsample.stages) == 1  # small_cnn: stride 2
    shared = ref.state_dict()  # every other part from its own seed stream: the same weights
    assert all(torch.equal(t, seg.state_dict()[k]) for k, t in shared.items())
    assert set(seg.state_dict()) - set(shared) == {k for k in seg.state_dict() if k.startswith("upsample.")}
    for side in (16, 17):  # 17: features 9 -> 18, resized to 17
        x = torch.randn(2, 3, side, side)
        logits, extras = seg.forward_train(x)
        assert logits.shape == (2, 3, side, side) and all(e.shape == logits.shape for _, e in extras)
        loss = seg.loss(x, torch.randint(0, 3, (2, side, side)), 255)
        loss.backward()
        assert all(p.grad is not None for p in seg.upsample.parameters())
        seg.zero_grad()


def test_carafe_head_equals_carafe_on_the_features_then_the_classifier():
    from ablate.models.segmenter import Segmenter

    seg = Segmenter(3, SMALL, "none", {}, _head(upsample="carafe"), seed=0).double().eval()
    x = torch.randn(1, 3, 16, 16, dtype=torch.float64)
    f = seg.attention(seg.backbone(x))
    assert torch.equal(seg(x), seg.head(seg.upsample.stages[0](f)))


def test_mmcv_ops_standin_provides_carafe():
    pytest.importorskip("mmcv")
    from ablate.compat.mmcv_ops import install, is_standin

    install()
    import mmcv.ops

    if not is_standin(mmcv.ops):
        pytest.skip("the full mmcv is installed: its own CARAFE (CUDA only)")
    from mmcv.ops import CARAFE, CARAFENaive, CARAFEPack as Pack, carafe as op, carafe_naive
    from mmcv.ops.carafe import CARAFEPack as SubPack

    assert Pack is SubPack is CARAFEPack and op is carafe_naive is carafe
    feats, masks = _inputs(4, k=5)
    assert torch.equal(CARAFE(5, 1, 2)(feats, masks), carafe(feats, masks, 5, 1, 2))
    assert torch.equal(CARAFENaive(5, 1, 2)(feats, masks), carafe(feats, masks, 5, 1, 2))


def test_thin_task_has_one_pixel_lines_and_boxes():
    import numpy as np

    from ablate.data.synthetic import TASKS, SceneConfig, class_names, make_split

    assert TASKS["thin"][1] == 3 and class_names("thin") == ("background", "line", "box")
    cfg = SceneConfig(task="thin", train_images=64, val_images=8)
    x, y = make_split(cfg, "train")
    assert x.shape == (64, 3, 32, 32) and set(y.unique().tolist()) == {0, 1, 2}
    again = make_split(cfg, "train")
    assert torch.equal(x, again[0]) and torch.equal(y, again[1])
    line = (y == 1).numpy()
    # a line pixel has at most two line pixels among its 8 neighbours unless lines cross or touch:
    # most line pixels are thin (no 2x2 block of line pixels)
    blocks = line[:, :-1, :-1] & line[:, 1:, :-1] & line[:, :-1, 1:] & line[:, 1:, 1:]
    assert blocks.sum() < 0.02 * line.sum()
    assert 0.01 < line.mean() < 0.06 and 0.03 < (y == 2).numpy().mean() < 0.15
    assert not np.array_equal(make_split(cfg, "val")[1][0].numpy(), y[0].numpy())


def test_resnet_d8_head_runs_three_stages():
    from ablate.models.segmenter import Segmenter

    backbone = {"name": "resnet_d8", "depth": 50, "pretrained": "none", "norm": "bn"}
    seg = Segmenter(3, backbone, "none", {}, _head(upsample="carafe", channels=16, compressed=8), seed=0).eval()
    assert len(seg.upsample.stages) == 3  # stride 8 = 2^3
    with torch.no_grad():
        assert seg(torch.randn(1, 3, 40, 40)).shape == (1, 3, 40, 40)


# --- the study file: model.head.upsample and head.X factors --------------------------------------
def _study(tmp_path, **top):
    import yaml

    from ablate.study.load import load_study

    raw = {"name": "ups", "model": {"backbone": {"name": "small_cnn", "width": 8}, "mechanism": "none"},
           "data": {"name": "synthetic", "task": "thin"}, "train": {"epochs": 1}, "seeds": [0, 1, 2, 3], **top}
    path = tmp_path / "ups.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_study(path)


def test_study_head_upsample_factor_keys_and_configs(tmp_path):
    from ablate.config.trial import TrialConfig

    plain = _study(tmp_path, factors={"train.lr": [0.003]})
    study = _study(tmp_path, factors={"head.upsample": ["bilinear", "carafe"]},
                   references=[{"head.k_up": 3, "head.upsample": "carafe"}],  # order of head keys is free
                   baseline={"head.upsample": "bilinear"})
    bilinear, carafe_cell, k3 = study.cells()
    assert bilinear.key == plain.cells()[0].key  # the default upsampler leaves the key as it was
    assert bilinear.head is None and study.head_of(bilinear) == study.head
    assert len({bilinear.key, carafe_cell.key, k3.key}) == 3
    assert study.head_of(k3).k_up == 3 and study.head_of(k3).upsample == "carafe"
    stored = [study.trial_config(c, 0)["head"] for c in (bilinear, carafe_cell, k3)]
    assert stored == [{"channels": 0, "aux_weight": 0.0}, {"channels": 0, "aux_weight": 0.0, "upsample": "carafe"},
                      {"channels": 0, "aux_weight": 0.0, "upsample": "carafe", "k_up": 3}]
    config = study.trial(k3, 0)
    assert TrialConfig.from_json(config.to_json()) == config
    assert study.family_of(carafe_cell) == "question" and study.family_of(k3) == "references"


def test_study_model_head_carafe_settings(tmp_path):
    study = _study(tmp_path, model={"backbone": {"name": "small_cnn", "width": 8}, "mechanism": "none",
                                    "head": {"upsample": "carafe", "compressed": 16}})
    assert study.head.upsample == "carafe" and study.head.compressed == 16
    assert study.trial_config(study.cells()[0], 0)["head"]["compressed"] == 16


@pytest.mark.parametrize("head,factors,key,words", [
    ({"upsample": "nearest"}, None, "model.head.upsample", ["bilinear", "carafe"]),
    ({"upsample": "carafe", "k_up": 4}, None, "model.head.k_up", ["odd"]),
    ({"upsample": "carafe", "k_enc": 0}, None, "model.head.k_enc", [">= 1"]),
    ({"k_up": 3}, None, "model.head.k_up", ["upsample: carafe"]),
    (None, {"head.compressed": [16, 32]}, "factors.head.compressed", ["upsample: carafe"]),
    (None, {"head.upsampler": ["carafe"]}, "factors.head.upsampler", ["upsample"]),
])
def test_study_refuses_bad_upsampler_settings(tmp_path, head, factors, key, words):
    from ablate.config.errors import StudyError

    model = {"backbone": {"name": "small_cnn", "width": 8}, "mechanism": "none", **({"head": head} if head else {})}
    with pytest.raises(StudyError) as e:
        _study(tmp_path, model=model, **({"factors": factors} if factors else {}))
    assert e.value.key == key and all(w in str(e.value) for w in words), str(e.value)


def test_list_shows_the_upsamplers_with_the_head_defaults(capsys):
    from ablate.__main__ import main
    from ablate.attention.carafe import SETTINGS
    from ablate.config.trial import HeadSpec

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    block = out[out.index("head upsamplers"):]
    assert "  bilinear " in block and "  carafe " in block and "Wang et al., ICCV 2019" in block
    for key, default, _, _ in SETTINGS:
        assert getattr(HeadSpec, key) == getattr(UpsampleSpec, key) == default
        assert f"{key} = {default}" in block


def test_trial_records_the_upsampler_costs():
    from ablate.costs.measure import forward_flops, param_count
    from ablate.models.segmenter import Segmenter
    from ablate.trainer.fit import upsample_costs

    seg = Segmenter(3, SMALL, "none", {}, _head(upsample="carafe", compressed=16), seed=0)
    got = upsample_costs(seg, 16, 16)
    pack = seg.upsample.stages[0]
    assert got["upsample_params"] == param_count(seg.upsample) == 8 * 16 + 16 + 16 * 100 * 9 + 100
    assert got["upsample_flops"] == forward_flops(seg.upsample, (1, 8, 16, 16)) == carafe_flops(8, 16, 16, 1, compressed=16)
    assert pack.content_encoder.out_channels == 100  # sigma^2 k_up^2 = 4 * 25
    assert upsample_costs(Segmenter(3, SMALL, "none", {}, seed=0), 16, 16) == {}
