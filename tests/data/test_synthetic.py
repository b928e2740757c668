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


def _objects(lab):
    from scipy import ndimage

    comps, n = ndimage.label((lab > 0) & (lab != IGNORE_INDEX))
    return [comps == i for i in range(1, n + 1)]


def test_pairing_class_says_whether_the_colour_repeats():
    cfg = SceneConfig(task="pairing", train_images=40)
    x, y = make_split(cfg, "train")
    assert num_classes("pairing") == 3
    for img, lab in zip(x.numpy(), y.numpy()):
        objs = _objects(lab)
        assert len(objs) >= 2
        # colour of an object = mean over its pixels (stripes and noise average out)
        colours = [img[:, m].mean(1) for m in objs]
        for i, m in enumerate(objs):
            same = [j for j in range(len(objs)) if j != i and np.abs(colours[j] - colours[i]).max() < 0.9]
            assert set(np.unique(lab[m])) == {2 if same else 1}
        # objects are farther apart than the backbone can see
        for i in range(len(objs)):
            for j in range(i + 1, len(objs)):
                a, b = np.argwhere(objs[i]), np.argwhere(objs[j])
                assert np.abs(a[:, None] - b[None]).max(-1).min() > SmallCNN().receptive_field // 2


def test_left_right_class_says_which_side_of_the_marker():
    cfg = SceneConfig(task="left_right", train_images=40)
    x, y = make_split(cfg, "train")
    for lab in y.numpy():
        cue_x = np.argwhere(lab == IGNORE_INDEX)[:, 1].mean()
        for m in _objects(lab):
            centre_x = np.argwhere(m)[:, 1].mean()
            assert set(np.unique(lab[m])) == {1 if centre_x < cue_x else 2}


def test_local_control_class_is_the_stripe_direction():
    cfg = SceneConfig(task="local", train_images=40)
    x, y = make_split(cfg, "train")
    for img, lab in zip(x.numpy(), y.numpy()):
        for m in _objects(lab):
            ys, xs = np.nonzero(m)
            patch = img[:, ys.min():ys.max() + 1, xs.min():xs.max() + 1]
            dy = np.abs(np.diff(patch, axis=1)).mean()
            dx = np.abs(np.diff(patch, axis=2)).mean()
            assert set(np.unique(lab[m])) == {1 if dy > dx else 2}
