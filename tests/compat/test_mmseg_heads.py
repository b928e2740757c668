"""``model.head: {style: mmseg}`` against mmsegmentation 1.2.2's decode heads.

Each head is built by mmseg (CCHead's criss-cross op through ablate.compat's mmcv.ops stand-in),
given random weights and BatchNorm statistics, and its state dict copied into our segmenter's
head + block through an explicit name map that must use every tensor on both sides; both run
in float64, eval mode, on the same feature map (input channels differ from the head's width,
so a swapped in/out channel would not load). The whole head is compared, classifier included.
Each check also shows it can fail: a 1e-3 perturbation of our weights is detected.
"""
from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
from torch import nn

from ablate.config.errors import StudyError
from ablate.models.mmseg_heads import LAYOUTS, DualHead, MMSegHead, build_head, layout_of
from ablate.models.segmenter import Segmenter

pytest.importorskip("mmcv")
pytest.importorskip("mmseg")

from ablate.compat.mmcv_ops import install  # noqa: E402

install()
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*MultiScaleDeformableAttention", category=UserWarning)
    from mmseg.models.decode_heads import (  # noqa: E402
        CCHead, DAHead, DNLHead, EMAHead, FCNHead, GCHead, ISAHead, NLHead,
    )

from ablate.attention import get_preset  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore:``build_loss`` would be deprecated:UserWarning"),
              pytest.mark.filterwarnings("ignore:Default ``avg_non_ignore``:UserWarning")]

IN, C, CLASSES = 40, 32, 5  # the backbone's channels, the head's width (C/8 >= our minimum width 4), classes
F64 = torch.float64


class Ours(nn.Module):
    """Our segmenter's head and block, without the backbone: what mmseg's decode head computes."""

    def __init__(self, mechanism: str, args: dict):
        super().__init__()
        preset = get_preset(mechanism)
        self.attention = preset.build(C, **args)
        self.head = build_head(preset, IN, C, CLASSES)

    def forward(self, x):
        return self.head(x, self.attention)

    def forward_all(self, x):
        logits, more = self.head.forward_all(x, self.attention)
        return (logits, *more)


def randomise(module: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    module = module.double().eval()
    with torch.no_grad():
        for p in module.parameters():
            scale = 1 / math.sqrt(p[0].numel()) if p.dim() > 1 else 0.5
            p.copy_(torch.randn(p.shape, generator=g, dtype=F64) * scale + (0.5 if p.numel() == 1 else 0))
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(1 + 0.3 * torch.randn(m.weight.shape, generator=g, dtype=F64))
                m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=g, dtype=F64))
                m.running_mean.copy_(0.5 * torch.randn(m.running_mean.shape, generator=g, dtype=F64))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g, dtype=F64))
    return module


def load(theirs: nn.Module, ours: nn.Module, names: dict[str, str], skip: tuple[str, ...] = ()) -> nn.Module:
    """Copy theirs into ours by key prefix (the longest matching prefix of ours is renamed);
    every tensor of ours must be found, and every one of theirs used except ``skip`` keys."""
    ours = ours.double().eval()
    src, used = theirs.state_dict(), set()
    order = sorted(names, key=len, reverse=True)
    with torch.no_grad():
        for key, t in ours.state_dict().items():
            p = next((p for p in order if key.startswith(p)), None)
            mapped = key if p is None else names[p] + key[len(p):]
            assert mapped in src, f"{key} -> {mapped} missing from {sorted(src)}"
            assert src[mapped].numel() == t.numel(), (key, mapped)
            t.copy_(src[mapped].reshape(t.shape))
            used.add(mapped)
    left = [k for k in src if k not in used and k not in skip]
    assert not left, f"mmseg tensors not used: {left}"
    return ours


def around(before: str, after: str | None, concat: bool = True) -> dict[str, str]:
    """The names of our MMSegHead's convs in an mmseg head."""
    names = {"head.before.0.": f"{before}.conv.", "head.before.1.": f"{before}.bn.", "head.classify.1.": "conv_seg."}
    if after:
        names.update({"head.after.0.": f"{after}.conv.", "head.after.1.": f"{after}.bn."})
    if concat:
        names.update({"head.fuse.0.": "conv_cat.conv.", "head.fuse.1.": "conv_cat.bn."})
    return names


FCN = around("convs.0", "convs.1")


def build(cls, seed: int, **kw) -> nn.Module:
    torch.manual_seed(seed)  # EMAHead draws its bases at construction
    return randomise(cls(in_channels=IN, channels=C, num_classes=CLASSES, norm_cfg=dict(type="BN"), **kw), seed)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def compare(label: str, theirs: nn.Module, ours: nn.Module, tol: float, size=(9, 11), run=None) -> None:
    """Our output (``run(ours, x)``, default ``ours(x)``) against mmseg's ``theirs([x])``."""
    run = run or (lambda m, v: m(v))
    x = torch.randn(2, IN, *size, generator=torch.Generator().manual_seed(1), dtype=F64)
    with torch.no_grad():
        ref = theirs([x.clone()])
        out = run(ours, x.clone())
        err = rel(out, ref)
        print(f"{label}: relative error {err:.1e}")
        assert out.shape == ref.shape == (2, CLASSES, *size)
        assert err <= tol, f"{label}: {err:.2e} > {tol}"
        bumped = copy.deepcopy(ours)
        g = torch.Generator().manual_seed(7)
        for p in bumped.parameters():
            p.mul_(1 + 1e-3 * torch.randn(p.shape, generator=g, dtype=F64))
        assert rel(run(bumped, x.clone()), ref) > 10 * tol, "a perturbation is not seen"


NL = {"attention.theta.": "nl_block.theta.conv.", "attention.phi.": "nl_block.phi.conv.",
      "attention.sigma.": "nl_block.g.conv.", "attention.out.0.": "nl_block.conv_out.conv.",
      "attention.out.1.": "nl_block.conv_out.bn."}


def test_fcn_head_is_mechanism_none():
    theirs = build(FCNHead, 1, num_convs=2, concat_input=True)
    compare("FCNHead", theirs, load(theirs, Ours("none", {}), FCN), 1e-12)


@pytest.mark.parametrize("mechanism,mode", [("nonlocal", "embedded_gaussian"), ("nonlocal_dot", "dot_product")])
def test_nl_head(mechanism, mode):
    theirs = build(NLHead, 2, reduction=2, use_scale=True, mode=mode)
    compare(f"NLHead {mode}", theirs, load(theirs, Ours(mechanism, {"reduction": 2}), {**FCN, **NL}), 1e-12)


def test_gc_head():
    theirs = build(GCHead, 3, ratio=1 / 4, pooling_type="att", fusion_types=("channel_add",))
    names = {**FCN, "attention.mask.": "gc_block.conv_mask.", "attention.transform.": "gc_block.channel_add_conv."}
    compare("GCHead", theirs, load(theirs, Ours("gcnet", {"reduction": 4}), names), 1e-12)


def test_dnl_head():
    """mmseg divides by the temperature as a float32 tensor (0.05 is 0.05 + 7e-10 there)."""
    theirs = build(DNLHead, 4, reduction=2, use_scale=True, temperature=0.05)
    names = {**FCN, **{k: v.replace("nl_block", "dnl_block") for k, v in NL.items() if "sigma" not in k},
             "attention.g.": "dnl_block.g.conv.", "attention.unary_mask.": "dnl_block.conv_mask."}
    compare("DNLHead", theirs, load(theirs, Ours("dnl", {"reduction": 2}), names), 1e-7)


def test_cc_head():
    theirs = build(CCHead, 5, recurrence=2)
    names = {**FCN, "attention.cca.query.": "cca.query_conv.", "attention.cca.key.": "cca.key_conv.",
             "attention.cca.value.": "cca.value_conv.", "attention.cca.gamma": "cca.gamma.scale"}
    compare("CCHead", theirs, load(theirs, Ours("ccnet", {"R": 2}), names), 1e-12)


@pytest.mark.parametrize("T", [1, 3])
def test_ema_head(T):
    """mmseg's F.normalize divides by max(norm, 1e-12), ours (the official code's) by norm + 1e-6."""
    theirs = build(EMAHead, 6, ema_channels=C, num_bases=8, num_stages=T, concat_input=True, momentum=0.1)
    names = {**around("ema_in_conv", "bottleneck"), "attention.conv_in.": "ema_mid_conv.conv.",
             "attention.em.mu": "ema_module.bases", "attention.conv_out.": "ema_out_conv.conv.",
             "attention.norm.": "ema_out_conv.bn."}
    compare(f"EMAHead T={T}", theirs, load(theirs, Ours("emanet", {"K": 8, "T": T, "T_eval": T}), names), 1e-5)


def _isa_relation(our: str, their: str) -> dict[str, str]:
    names = {f"{our}.value.": f"{their}.value_project.", f"{our}.out.0.": f"{their}.output_project.conv.",
             f"{our}.out.1.": f"{their}.output_project.bn."}
    for branch in ("key", "query"):
        for i, name in {0: "0.conv", 1: "0.bn", 3: "1.conv", 4: "1.bn"}.items():
            names[f"{our}.{branch}.{i}."] = f"{their}.{branch}_project.{name}."
    return names


@pytest.mark.parametrize("size", [(9, 11), (8, 8)])
def test_isa_head(size):
    """ISAHead concatenates [context, input] before its 1x1 fusion, ours [input, context]: the
    fusion weight's halves are swapped when copied; its value convs have a bias that ours lack,
    folded into the output BN's running mean (softmax rows sum to 1, so it is a constant shift)."""
    theirs = build(ISAHead, 8, isa_channels=C // 2, down_factor=(4, 4))
    names = {**around("in_conv", None, concat=False), "attention.fuse.0.": "out_conv.conv.",
             "attention.fuse.1.": "out_conv.bn.", **_isa_relation("attention.long_range", "global_relation"),
             **_isa_relation("attention.short_range", "local_relation")}
    ours = load(theirs, Ours("isa", {"down_factor": 4, "key_reduction": 2}), names,
                skip=("global_relation.value_project.bias", "local_relation.value_project.bias"))
    with torch.no_grad():
        w = theirs.out_conv.conv.weight
        ours.attention.fuse[0].weight.copy_(torch.cat([w[:, C:], w[:, :C]], dim=1))
        for our_sa, their_sa in ((ours.attention.long_range, theirs.global_relation),
                                 (ours.attention.short_range, theirs.local_relation)):
            w_out = their_sa.output_project.conv.weight.flatten(1)
            bias = w_out @ their_sa.value_project.bias
            our_sa.out[1].running_mean.copy_(their_sa.output_project.bn.running_mean - bias)
    compare(f"ISAHead {size}", theirs, ours, 1e-10, size=size)


def _da_branch(branch: str) -> dict[str, str]:
    return {f"head.{branch}_in.0.": f"{branch}_in_conv.conv.", f"head.{branch}_in.1.": f"{branch}_in_conv.bn.",
            f"head.{branch}_out.0.": f"{branch}_out_conv.conv.", f"head.{branch}_out.1.": f"{branch}_out_conv.bn.",
            f"head.{branch}_classify.1.": f"{branch}_conv_seg."}


@pytest.mark.parametrize("which", [0, 1, 2])
def test_da_head(which):
    """DAHead's three outputs (the summed branches, the PAM branch, the CAM branch: the logits of
    its three losses; the first is its prediction) against ours, the PAM at C/8 (pam_channels)."""
    theirs = build(DAHead, 9, pam_channels=C // 8)
    ours = Ours("danet", {})
    assert isinstance(ours.head, DualHead)
    names = {**_da_branch("pam"), **_da_branch("cam"), "head.classify.1.": "conv_seg.",
             "attention.pam.query.": "pam.query_project.", "attention.pam.key.": "pam.key_project.",
             "attention.pam.value.": "pam.value_project.", "attention.pam.gamma": "pam.gamma.scale",
             "attention.cam.gamma": "cam.gamma.scale"}
    ours = load(theirs, ours, names)
    compare(f"DAHead output {which}", lambda v: theirs(v)[which], ours, 1e-12,
            run=lambda m, v: m.forward_all(v)[which])


# ------------------------------------------------------------------------------------------
# in the segmenter and the study
# ------------------------------------------------------------------------------------------

def test_segmenter_runs_the_block_inside_the_head_and_the_probe_sees_the_head_input():
    seg = Segmenter(CLASSES, {"name": "small_cnn", "width": IN, "depth": 3}, "nonlocal", {},
                    head={"style": "mmseg", "channels": C}, seed=0).double().eval()
    assert seg.reduce is None and isinstance(seg.head, MMSegHead) and seg.attention_channels == C
    x = torch.randn(1, 3, 20, 20, dtype=F64)
    with torch.no_grad():
        f = seg.backbone(x)
        logits = torch.nn.functional.interpolate(seg.head(f, seg.attention), size=(20, 20), mode="bilinear")
        assert torch.equal(seg(x), logits)
        assert torch.equal(seg.features(x), seg.head.before(f))
    plain = Segmenter(CLASSES, {"name": "small_cnn", "width": IN, "depth": 3}, "nonlocal", {}, head={"channels": C},
                      seed=0)
    assert plain.reduce is not None and not isinstance(plain.head, MMSegHead)


def test_da_head_trains_on_its_three_losses():
    """DAHead's training loss: cross-entropy of the summed branches plus each branch's, weight 1."""
    seg = Segmenter(CLASSES, {"name": "small_cnn", "width": IN, "depth": 3}, "danet", {},
                    head={"style": "mmseg", "channels": C}, seed=0).double().eval()
    x = torch.randn(2, 3, 16, 16, dtype=F64)
    y = torch.randint(0, CLASSES, (2, 16, 16))
    with torch.no_grad():
        logits, extras = seg.forward_train(x)
        _, (pam, cam) = seg.head.forward_all(seg.backbone(x), seg.attention)
        pam, cam = seg._up(pam, (16, 16)), seg._up(cam, (16, 16))
        assert [w for w, _ in extras] == [1.0, 1.0]
        assert torch.equal(extras[0][1], pam) and torch.equal(extras[1][1], cam) and torch.equal(logits, seg(x))
        ce = torch.nn.functional.cross_entropy
        assert seg.loss(x, y, 255) == ce(logits, y) + ce(pam, y) + ce(cam, y)


def _study(tmp_path, mechanisms, style="mmseg"):
    import yaml

    raw = {"name": "heads", "model": {"backbone": {"name": "small_cnn", "width": 8}, "mechanism": "nonlocal",
                                      "head": {"style": style, "channels": 8}},
           "data": {"task": "global_cue"}, "factors": {"mechanism": mechanisms}, "seeds": 1}
    path = tmp_path / "heads.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_style_mmseg_in_a_study(tmp_path):
    from ablate.study.load import load_study

    names = sorted(n for n in ("none", "nonlocal", "gcnet", "dnl", "ccnet", "emanet", "isa", "danet")
                   if layout_of(get_preset(n)) is not None)
    assert len(names) == len(LAYOUTS)
    mm = load_study(_study(tmp_path, names))
    plain = load_study(_study(tmp_path, names, style="plain"))
    assert not {c.key for c in mm.cells()} & {c.key for c in plain.cells()}  # a head style is a cell of its own
    assert mm.trial_config(mm.cells()[0], 0)["head"]["style"] == "mmseg"
    assert "style" not in plain.trial_config(plain.cells()[0], 0)["head"]
    with pytest.raises(StudyError) as e:
        load_study(_study(tmp_path, ["nonlocal", "glore"]))
    assert e.value.key == "model.head.style" and "'glore'" in str(e.value) and "nonlocal" in str(e.value)
    with pytest.raises(StudyError) as e:  # DAHead has both branches
        load_study(_study(tmp_path, ["danet", "danet_position"]))
    assert e.value.key == "model.head.style" and "'position'" in str(e.value)
    with pytest.raises(StudyError) as e:
        load_study(_study(tmp_path, ["nonlocal"], style="mmcv"))
    assert e.value.key == "model.head.style" and "plain" in str(e.value)


def test_a_trial_with_the_mmseg_head_trains(tmp_path):
    """One tiny trial: the trainer builds the head from the stored config (style included), the
    cue probe reads the block's input through ``features``, the block's costs are measured."""
    from ablate.study.load import load_study
    from ablate.trainer.trial import run_trial

    study = load_study(_study(tmp_path, ["nonlocal"]))
    trial = study.trial(study.cells()[0], 0)
    small = type(trial)(**{**trial.__dict__, "data": {**trial.data, "train_images": 16, "val_images": 8},
                           "train": type(trial.train)(epochs=1, batch_size=8, threads=1)})
    out = run_trial(small)
    assert len(out["curve"]) == 1 and out["attention_params"] > 0 and out["cue_mass"][0] is not None
    plain = load_study(_study(tmp_path, ["nonlocal"], style="plain"))
    ptrial = plain.trial(plain.cells()[0], 0)
    ptrial = type(ptrial)(**{**ptrial.__dict__, "data": small.data, "train": small.train})
    assert run_trial(ptrial)["total_params"] < out["total_params"]  # the head's three 3x3 convs
