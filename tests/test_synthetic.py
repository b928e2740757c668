"""Properties of the embedded synthetic task that the studies rely on."""
from __future__ import annotations

import numpy as np
import torch

from ablate.data.synthetic import IGNORE_INDEX, SceneConfig, make_split, num_classes
from ablate.models.backbone import SmallCNN

CFG = SceneConfig(train_images=48, val_images=24)


def test_same_seed_same_data_and_splits_differ():
    a, b = make_split(CFG, "val"), make_split(CFG, "val")
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    t = make_split(CFG, "train")
    assert not torch.equal(t[0][:24], a[0]), "train and val must be different draws"
    other = make_split(SceneConfig(train_images=48, val_images=24, seed=1), "val")
    assert not torch.equal(other[0], a[0])


def test_labels_are_the_documented_classes():
    _, y = make_split(CFG, "train")
    values = set(y.unique().tolist())
    assert values <= set(range(num_classes("global_cue"))) | {IGNORE_INDEX}
    assert {0, IGNORE_INDEX} < values and len(values - {0, IGNORE_INDEX}) == 4


def test_each_image_has_one_cue_and_its_colour_decides_the_object_classes():
    x, y = make_split(CFG, "train")
    for img, lab in zip(x.numpy(), y.numpy()):
        cue = lab == IGNORE_INDEX
        assert cue.sum() == CFG.cue_side ** 2
        red_minus_green = (img[0][cue] - img[1][cue]).mean()
        cue_bit = 0 if red_minus_green > 0 else 1
        obj = (lab > 0) & ~cue
        assert obj.any()
        assert set(((lab[obj] - 1) % 2).tolist()) == {cue_bit}, "every object carries the cue's bit"


def test_cue_is_outside_the_backbone_receptive_field_of_every_object_pixel():
    x, y = make_split(CFG, "train")
    radius = SmallCNN().receptive_field // 2
    assert CFG.cue_gap > radius
    for lab in y.numpy():
        cue = np.argwhere(lab == IGNORE_INDEX)
        obj = np.argwhere((lab > 0) & (lab != IGNORE_INDEX))
        cheb = np.abs(obj[:, None, :] - cue[None, :, :]).max(-1)
        assert cheb.min() >= CFG.cue_gap


def test_receptive_field_claim_of_the_backbone():
    """Perturbing an input pixel changes backbone features only within the stated radius."""
    torch.manual_seed(0)
    net = SmallCNN(width=4).eval()
    x = torch.randn(1, 3, 32, 32)
    base = net(x)
    x2 = x.clone()
    x2[0, :, 16, 16] += 5.0
    changed = (net(x2) - base).abs().sum(1)[0] > 0
    ys, xs = torch.nonzero(changed, as_tuple=True)
    # feature (i, j) at stride 2 covers input pixels 2i-r .. 2i+r (approximately centred)
    extent = max((ys * 2 - 16).abs().max().item(), (xs * 2 - 16).abs().max().item())
    assert extent <= net.receptive_field // 2 + 1
