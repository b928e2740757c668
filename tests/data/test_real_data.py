"""Real datasets (VOC, Cityscapes, ADE20K through mmseg) on tiny fake copies of their standard
layouts, and the ResNet-D8 backbone with its pretrained-weights handling."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ablate.data.real import (IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD, build_real_data, resize_logits_to,
                              spec_from_dict, validate_real_data)
from ablate.config.errors import StudyError



# ------------------------------------------------------------------------------------------
# fake datasets in the standard layouts
# ------------------------------------------------------------------------------------------







def make_cityscapes(root: Path, n_train: int = 4, n_val: int = 2, train_ids: bool = True) -> Path:
    rng = np.random.default_rng(1)
    for split, n, cities in (("train", n_train, ("aachen", "bochum")), ("val", n_val, ("frankfurt",))):
        for k in range(n):
            city = cities[k % len(cities)]
            stem = f"{city}_{k:06d}_000019"
            fake_image(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", 64, 128, rng)
            suffix = "labelTrainIds" if train_ids else "labelIds"
            fake_label(root / "gtFine" / split / city / f"{stem}_gtFine_{suffix}.png", 64, 128, rng, 18)
    return root


def make_ade(root: Path, n_train: int = 4, n_val: int = 2) -> Path:
    rng = np.random.default_rng(2)
    ade = root / "ADEChallengeData2016"
    for split, n in (("training", n_train), ("validation", n_val)):
        for k in range(n):
            stem = f"ADE_{split[:5]}_{k:08d}"
            fake_image(ade / "images" / split / f"{stem}.jpg", H, W, rng)
            fake_label(ade / "annotations" / split / f"{stem}.png", H, W, rng, 150)
    return ade


def _voc_spec(root, **kw):
    raw = {"name": "voc", "data_root": str(root), "crop_size": [48, 48], "scale": [W, H], "num_workers": 0, **kw}
    return validate_real_data(raw, "study.yaml")


def _expected_input(path: Path) -> torch.Tensor:
    rgb = cv2.imread(str(path))[:, :, ::-1].astype(np.float32)
    return torch.from_numpy((rgb - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)).permute(2, 0, 1)


# ------------------------------------------------------------------------------------------
# loaders
# ------------------------------------------------------------------------------------------

def test_voc_batches_are_cropped_normalised_and_keep_ignore(tmp_path):
    voc = make_voc(tmp_path)
    spec = _voc_spec(tmp_path)
    data = build_real_data(spec, batch_size=2, seed=0)
    assert data.num_classes == 21 and data.class_names[0] == "background" and len(data.class_names) == 21
    batches = list(data.train)
    assert len(batches) == 2  # 4 training images, batch 2
    for x, y in batches:
        assert x.shape == (2, 3, 48, 48) and x.dtype == torch.float32
        assert y.shape == (2, 48, 48) and y.dtype == torch.long
        values = set(y.unique().tolist())
        assert values <= set(range(21)) | {IGNORE_INDEX} and len(values - {IGNORE_INDEX}) > 5
    # validation: batch 1, no random transform; with scale = image size the input is the image itself
    val = list(data.val)
    assert len(val) == 2
    for (x, y), vid in zip(val, (voc / "ImageSets/Segmentation/val.txt").read_text().split()):
        assert x.shape == (1, 3, H, W) and y.shape == (1, H, W)
        torch.testing.assert_close(x[0], _expected_input(voc / "JPEGImages" / f"{vid}.jpg"), atol=1e-5, rtol=0)
        truth = np.array(Image.open(voc / "SegmentationClass" / f"{vid}.png"))
        assert torch.equal(y[0], torch.from_numpy(truth).long())
        assert (y[0, :4, :6] == IGNORE_INDEX).all()


def test_validation_label_stays_at_original_resolution(tmp_path):
    make_voc(tmp_path, n_train=2, n_val=1)
    data = build_real_data(_voc_spec(tmp_path, scale=[2 * W, 2 * H]), batch_size=2)
    x, y = next(iter(data.val))
    assert x.shape[-2:] == (2 * H, 2 * W) and y.shape[-2:] == (H, W)  # mmseg's protocol
    logits = torch.randn(1, 21, 2 * H // 8, 2 * W // 8)
    assert resize_logits_to(logits, y).shape == (1, 21, H, W)


def test_training_crops_smaller_than_the_crop_are_padded_with_ignore(tmp_path):
    make_voc(tmp_path, n_train=2, n_val=1)
    # ratio 0.5 shrinks 64 x 96 to 32 x 48, inside the 48 x 64 crop: bottom/right padding
    spec = _voc_spec(tmp_path, crop_size=[48, 64], ratio_range=[0.5, 0.5], photometric=False, flip_prob=0.0)
    x, y = next(iter(build_real_data(spec, batch_size=2).train))
    assert x.shape == (2, 3, 48, 64)
    assert (y[:, 32:, :] == IGNORE_INDEX).all() and (y[:, :, 48:] == IGNORE_INDEX).all()
    assert (x[:, :, 32:, :] == 0).all() and (x[:, :, :, 48:] == 0).all()
    assert (y[:, 4:32, 6:48] != IGNORE_INDEX).all()


def test_voc_adds_the_sbd_augmented_set_when_present(tmp_path):
    make_voc(tmp_path, n_train=4, n_val=1, aug=2)
    assert len(build_real_data(_voc_spec(tmp_path), batch_size=2).train.dataset) == 6  # train.txt + aug.txt
    assert len(build_real_data(_voc_spec(tmp_path, aug=False), batch_size=2).train.dataset) == 4
    limited = build_real_data(_voc_spec(tmp_path, train_images=3, val_images=1), batch_size=2)
    assert len(limited.train.dataset) == 3 and len(limited.val.dataset) == 1


def test_same_seed_gives_the_same_training_batches(tmp_path):
    make_voc(tmp_path, n_train=4, n_val=1)
    spec = _voc_spec(tmp_path)

    def first_batch():
        np.random.seed(0)  # mmcv's random transforms use numpy's global generator (Lightning seeds it)
        return next(iter(build_real_data(spec, batch_size=2, seed=3).train))

    (x1, y1), (x2, y2) = first_batch(), first_batch()
    assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_loader_workers(tmp_path):
    make_voc(tmp_path, n_train=4, n_val=1)
    data = build_real_data(_voc_spec(tmp_path), batch_size=2, num_workers=1)
    x, y = next(iter(data.train))
    assert x.shape == (2, 3, 48, 48) and y.dtype == torch.long


def test_cityscapes_reads_train_ids(tmp_path):
    make_cityscapes(tmp_path)
    spec = validate_real_data({"name": "cityscapes", "data_root": str(tmp_path), "crop_size": [32, 64],
                               "scale": [128, 64], "num_workers": 0}, "study.yaml")
    data = build_real_data(spec, batch_size=2)
    assert data.num_classes == 19 and data.class_names[:2] == ("road", "sidewalk")
    x, y = next(iter(data.train))
    assert x.shape == (2, 3, 32, 64) and y.shape == (2, 32, 64)
    assert set(y.unique().tolist()) <= set(range(19)) | {IGNORE_INDEX}
    x, y = next(iter(data.val))
    label = tmp_path / "gtFine/val/frankfurt/frankfurt_000000_000019_gtFine_labelTrainIds.png"
    assert x.shape == (1, 3, 64, 128) and torch.equal(y[0], torch.from_numpy(np.array(Image.open(label))).long())


def test_ade20k_reduces_the_zero_label(tmp_path):
    ade = make_ade(tmp_path)
    spec = validate_real_data({"name": "ade20k", "data_root": str(tmp_path), "crop_size": [48, 48],
                               "scale": [W, H], "num_workers": 0}, "study.yaml")
    data = build_real_data(spec, batch_size=2)
    assert data.num_classes == 150 and data.class_names[0] == "wall"
    x, y = next(iter(data.train))
    assert x.shape == (2, 3, 48, 48) and set(y.unique().tolist()) <= set(range(150)) | {IGNORE_INDEX}
    _, y = next(iter(data.val))
    raw = np.array(Image.open(sorted((ade / "annotations/validation").glob("*.png"))[0])).astype(np.int64)
    expected = np.where(raw == 0, IGNORE_INDEX, raw - 1)
    expected[raw == 255] = IGNORE_INDEX
    assert torch.equal(y[0], torch.from_numpy(expected))
    assert (raw == 0).any() and (y[0] == 149).any()  # 0 -> 255 and 150 -> 149 both occurred


@pytest.mark.parametrize("name", ["voc", "cityscapes", "ade20k"])
def test_one_epoch_trains_and_validates(tmp_path, name):
    """A plain loop over one epoch (whole studies: test_study_on_real_data_runs_end_to_end)."""
    from ablate.models.segmenter import Segmenter

    make = {"voc": make_voc, "cityscapes": make_cityscapes, "ade20k": make_ade}[name]
    make(tmp_path)
    crop = [32, 64] if name == "cityscapes" else [48, 48]
    spec = validate_real_data({"name": name, "data_root": str(tmp_path), "crop_size": crop, "num_workers": 0,
                               "scale": [128, 64] if name == "cityscapes" else [W, H]}, "study.yaml")
    torch.manual_seed(0)
    np.random.seed(0)
    data = build_real_data(spec, batch_size=2, seed=0)
    model = Segmenter(data.num_classes, {"name": "small_cnn", "width": 8, "depth": 3}, "nonlocal", {})
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    steps = 0
    for x, y in data.train:
        loss = F.cross_entropy(model(x), y, ignore_index=IGNORE_INDEX)
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)
        steps += 1
    assert steps == 2
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in data.val:
            pred = resize_logits_to(model(x), y).argmax(1)
            keep = y != IGNORE_INDEX
            correct += int((pred[keep] == y[keep]).sum())
            total += int(keep.sum())
    assert total > 0 and 0 <= correct <= total


# ------------------------------------------------------------------------------------------
# study-file validation of the data section
# ------------------------------------------------------------------------------------------

def _error(raw) -> StudyError:
    with pytest.raises(StudyError) as e:
        validate_real_data(raw, "studies/x.yaml")
    return e.value


def test_missing_data_root_names_the_path_and_the_layout(tmp_path):
    err = _error({"name": "voc", "data_root": str(tmp_path / "nowhere")})
    assert err.where == "studies/x.yaml" and err.key == "data.data_root"
    assert str(tmp_path / "nowhere") in err.message and "does not exist" in err.message
    assert "JPEGImages" in err.message and "SegmentationClass" in err.message
    err = _error({"name": "cityscapes"})
    assert err.key == "data.data_root" and "leftImg8bit" in err.message


@pytest.mark.parametrize("case", ["voc_no_annotations", "voc_empty_val", "voc_missing_file", "voc_half_sbd",
                                  "cityscapes_no_gtfine", "cityscapes_label_ids_only", "ade_no_val_annotations",
                                  "ade_empty_training"])
def test_malformed_layouts_are_refused(tmp_path, case):
    if case.startswith("voc"):
        voc = make_voc(tmp_path, n_train=2, n_val=1)
        if case == "voc_no_annotations":
            for p in (voc / "SegmentationClass").iterdir():
                p.unlink()
            (voc / "SegmentationClass").rmdir()
            needle = str(voc / "SegmentationClass")
        elif case == "voc_empty_val":
            (voc / "ImageSets/Segmentation/val.txt").write_text("\n")
            needle = "empty split 'val'"
        elif case == "voc_missing_file":
            victim = next((voc / "SegmentationClass").iterdir())
            victim.unlink()
            needle = str(victim)
        else:
            (voc / "SegmentationClassAug").mkdir()
            needle = "aug.txt"
        name = "voc"
    elif case.startswith("cityscapes"):
        make_cityscapes(tmp_path, train_ids=case != "cityscapes_label_ids_only")
        if case == "cityscapes_no_gtfine":
            import shutil

            shutil.rmtree(tmp_path / "gtFine" / "val")
            needle = str(tmp_path / "gtFine" / "val")
        else:
            needle = "createTrainIdLabelImgs"
        name = "cityscapes"
    else:
        ade = make_ade(tmp_path, n_train=1, n_val=1)
        if case == "ade_no_val_annotations":
            import shutil

            shutil.rmtree(ade / "annotations" / "validation")
            needle = str(ade / "annotations" / "validation")
        else:
            next((ade / "images" / "training").iterdir()).unlink()
            needle = "empty split 'training'"
        name = "ade20k"
    err = _error({"name": name, "data_root": str(tmp_path)})
    assert err.key == "data.data_root"
    assert needle in err.message, err.message
    assert "expected the standard layout" in err.message
    assert err.paragraph().startswith("error in studies/x.yaml, key 'data.data_root':")


def test_bad_keys_and_values_are_refused(tmp_path):
    make_voc(tmp_path, n_train=2, n_val=1)
    root = str(tmp_path)
    assert _error({"name": "coco", "data_root": root}).key == "data.name"
    assert _error({"name": "voc", "data_root": root, "crop": 5}).key == "data.crop"
    assert _error({"name": "voc", "data_root": root, "crop_size": 512}).key == "data.crop_size"
    assert _error({"name": "voc", "data_root": root, "ratio_range": [2.0, 0.5]}).key == "data.ratio_range"
    assert _error({"name": "voc", "data_root": root, "aug": "maybe"}).key == "data.aug"
    assert _error({"name": "voc", "data_root": root, "aug": True}).key == "data.data_root"  # aug on, no SBD
    assert _error({"name": "cityscapes", "data_root": root, "aug": "on"}).key == "data.aug"  # VOC only
    assert _error({"name": "voc", "data_root": root, "cat_max_ratio": 0}).key == "data.cat_max_ratio"


def test_spec_round_trips_through_a_trial_config(tmp_path):
    make_voc(tmp_path, n_train=2, n_val=1)
    spec = _voc_spec(tmp_path, aug="off", ratio_range=[0.75, 1.5])
    d = json.loads(json.dumps(spec.as_dict()))
    assert spec_from_dict(d) == spec
    assert spec.crop_size == (48, 48) and spec.scale == (W, H) and spec.aug == "off"
    city = validate_real_data({"name": "cityscapes", "data_root": "/anywhere"}, "s.yaml", check_layout=False)
    assert (city.crop_size, city.scale) == ((512, 1024), (2048, 1024))  # the papers' defaults
    ade = validate_real_data({"name": "ade20k", "data_root": "/anywhere"}, "s.yaml", check_layout=False)
    assert (ade.crop_size, ade.scale, ade.train_split) == ((512, 512), (2048, 512), "training")
    # a data.X factor overrides the base spec
    assert validate_real_data({"crop_size": [769, 769]}, "s.yaml", base=city, check_layout=False).crop_size == (769, 769)


# ------------------------------------------------------------------------------------------
# ResNet-D8
# ------------------------------------------------------------------------------------------

from ablate.models.resnet import (PretrainedWeightsError, ResNetD8, backbone_state,  # noqa: E402
                                  validate_resnet)
from support.datasets import H, W, SMALL, cli_study, fake_image, fake_label, make_voc


@pytest.fixture(scope="module")
def r50(tmp_path_factory):
    torch.manual_seed(0)
    model = ResNetD8(50, pretrained="none")
    path = tmp_path_factory.mktemp("weights") / "r50.pth"
    # an mmengine-style checkpoint: prefixed keys under state_dict, numpy values in meta
    torch.save({"meta": {"iter": np.int64(40000), "lr": np.float64(1e-4), "hist": np.arange(3.0)},
                "state_dict": {f"backbone.{k}": v for k, v in model.resnet.state_dict().items()}
                | {"decode_head.conv_seg.weight": torch.zeros(21, 512, 1, 1)}}, path)
    return model, path


def test_resnet50_d8_has_output_stride_8_and_2048_channels(r50):
    model, _ = r50
    assert model.out_channels == 2048 and model.stride == 8
    model.eval()
    with torch.no_grad():
        c3, c4 = model.forward_stages(torch.randn(1, 3, 64, 64))
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 2048, 8, 8)
    assert c3.shape == (1, 1024, 8, 8) and c4.shape == (1, 2048, 8, 8)


def test_pretrained_state_dict_loads_exactly(r50):
    model, path = r50
    loaded = ResNetD8(50, pretrained=str(path))
    own, new = model.state_dict(), loaded.state_dict()
    assert own.keys() == new.keys() and all(torch.equal(own[k], new[k]) for k in own)
    report = loaded.load_report
    assert report.loaded == len(own) and not report.missing
    assert report.unexpected == ()  # decode_head keys were dropped with the backbone. prefix


def test_backbone_state_strips_common_prefixes():
    t = torch.ones(1)
    assert backbone_state({"state_dict": {"module.backbone.stem.0.weight": t, "module.decode_head.x": t}}) == {
        "stem.0.weight": t}
    assert backbone_state({"model.backbone.resnet.layer1.0.conv1.weight": t, "model.head.1.weight": t}) == {
        "layer1.0.conv1.weight": t}
    assert backbone_state({"stem.0.weight": t}) == {"stem.0.weight": t}


def test_random_init_needs_an_explicit_none():
    torch.manual_seed(1)
    a = ResNetD8(18, pretrained="none")
    torch.manual_seed(2)
    b = ResNetD8(18, pretrained="none")
    assert a.load_report is None and not torch.equal(a.resnet.stem[0].weight, b.resnet.stem[0].weight)
    assert a.out_channels == 512
    with pytest.raises(TypeError):
        ResNetD8(18)  # no default: omitting pretrained is an error, not a random init
    with pytest.raises(PretrainedWeightsError, match="pretrained: none"):
        ResNetD8(18, pretrained="")


def test_missing_weights_file_says_where_to_put_them(tmp_path):
    target = tmp_path / "resnet50_v1c.pth"
    with pytest.raises(PretrainedWeightsError) as e:
        ResNetD8(50, pretrained=str(target))
    msg = str(e.value)
    assert str(target) in msg and "open-mmlab://resnet50_v1c" in msg and "pretrained: none" in msg
    assert "download.openmmlab.com" in msg


def test_unreachable_url_fails_clearly_and_a_cached_copy_needs_no_network(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(PretrainedWeightsError) as e:
        ResNetD8(18, pretrained="http://127.0.0.1:9/resnet18_v1c.pth")  # port 9: connection refused
    assert "could not fetch" in str(e.value) and str(tmp_path / "hub" / "checkpoints" / "resnet18_v1c.pth") in str(e.value)
    torch.manual_seed(3)
    src = ResNetD8(18, pretrained="none")
    torch.save(src.resnet.state_dict(), tmp_path / "hub" / "checkpoints" / "resnet18_v1c.pth")
    got = ResNetD8(18, pretrained="http://127.0.0.1:9/resnet18_v1c.pth")
    assert torch.equal(got.resnet.stem[0].weight, src.resnet.stem[0].weight)


def test_wrong_depth_or_torchvision_weights_are_refused(tmp_path):
    r18 = ResNetD8(18, pretrained="none")
    torch.save(r18.resnet.state_dict(), tmp_path / "r18.pth")
    with pytest.raises(PretrainedWeightsError, match="another depth"):
        ResNetD8(34, pretrained=str(tmp_path / "r18.pth"))  # most of layer2..4 missing
    tv = {("conv1.weight" if k == "stem.0.weight" else k): v for k, v in r18.resnet.state_dict().items()}
    torch.save(tv, tmp_path / "tv.pth")
    with pytest.raises(PretrainedWeightsError, match="torchvision"):
        ResNetD8(18, pretrained=str(tmp_path / "tv.pth"))
    torch.save({"whatever": torch.ones(3)}, tmp_path / "other.pth")
    with pytest.raises(PretrainedWeightsError, match="no tensor"):
        ResNetD8(18, pretrained=str(tmp_path / "other.pth"))


def test_checkpoint_with_python_objects_needs_explicit_trust(tmp_path, monkeypatch):
    from mmengine.config import ConfigDict

    r18 = ResNetD8(18, pretrained="none")
    path = tmp_path / "full.pth"
    torch.save({"meta": {"cfg": ConfigDict(a=1)}, "state_dict": r18.resnet.state_dict()}, path)
    monkeypatch.delenv("ABLATE_TRUST_CHECKPOINTS", raising=False)
    with pytest.raises(PretrainedWeightsError, match="ABLATE_TRUST_CHECKPOINTS=1"):
        ResNetD8(18, pretrained=str(path))
    monkeypatch.setenv("ABLATE_TRUST_CHECKPOINTS", "1")
    assert ResNetD8(18, pretrained=str(path)).load_report.loaded == len(r18.resnet.state_dict())


def test_syncbn_flag():
    model = ResNetD8(18, pretrained="none", norm="syncbn")
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 512, 4, 4)  # not distributed: plain BN maths


def test_backbone_section_validation(tmp_path):
    ok = validate_resnet({"name": "resnet_d8", "depth": 50, "pretrained": "none"}, "s.yaml")
    assert (ok.depth, ok.pretrained, ok.norm) == (50, "none", "bn")
    assert validate_resnet({"pretrained": "open-mmlab://resnet101_v1c"}, "s.yaml").depth == 101  # URL: not fetched
    for raw, key in [({"depth": 50}, "model.backbone.pretrained"),
                     ({"depth": 42, "pretrained": "none"}, "model.backbone.depth"),
                     ({"norm": "gn", "pretrained": "none"}, "model.backbone.norm"),
                     ({"width": 32, "pretrained": "none"}, "model.backbone.width"),
                     ({"pretrained": str(tmp_path / "gone.pth")}, "model.backbone.pretrained")]:
        with pytest.raises(StudyError) as e:
            validate_resnet(raw, "s.yaml")
        assert e.value.key == key, raw
    assert "download" in e.value.message and str(tmp_path / "gone.pth") in e.value.message


def test_resnet50_trains_a_step_on_voc(tmp_path, r50):
    """Real backbone, real loader, one optimiser step on a 64 x 64 crop."""
    from ablate.attention import get_preset

    make_voc(tmp_path, n_train=2, n_val=1)
    data = build_real_data(_voc_spec(tmp_path, crop_size=[64, 64]), batch_size=2)
    backbone = copy.deepcopy(r50[0])  # the fixture's weights stay as saved
    attention = get_preset("nonlocal").build(backbone.out_channels)
    head = torch.nn.Conv2d(backbone.out_channels, data.num_classes, 1)
    params = [*backbone.parameters(), *attention.parameters(), *head.parameters()]
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    backbone.train()
    x, y = next(iter(data.train))
    logits = F.interpolate(head(attention(backbone(x))), size=x.shape[-2:], mode="bilinear", align_corners=False)
    loss = F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss) and backbone.resnet.stem[0].weight.grad is not None


def test_a_trainer_can_bring_its_own_samplers(tmp_path):
    """Under DDP the trainer hands each rank its slice of every global batch and a val shard."""
    from ablate.data.real import build_real_datasets, train_loader, val_loader

    make_voc(tmp_path, n_train=4, n_val=2)
    spec = _voc_spec(tmp_path)
    sets = build_real_datasets(spec)
    assert (len(sets.train), len(sets.val), sets.num_classes) == (4, 2, 21)
    batches = list(train_loader(spec, sets.train, batch_sampler=[[3], [0, 2]]))
    assert [tuple(x.shape) for x, _ in batches] == [(1, 3, 48, 48), (2, 3, 48, 48)]
    shard = list(val_loader(spec, sets.val, sampler=[1]))
    assert len(shard) == 1 and shard[0][0].shape == (1, 3, H, W)


# ------------------------------------------------------------------------------------------
# whole studies on the fake layouts, through the CLI (python -m ablate.run)
# ------------------------------------------------------------------------------------------



R18 = {"name": "resnet_d8", "depth": 18, "pretrained": "none"}


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    """Every CLI case once, concurrently (each start imports torch, Lightning and mmseg):
    case -> (cwd, study path, CompletedProcess)."""
    import os
    import subprocess
    import sys
    from concurrent.futures import ThreadPoolExecutor

    root = tmp_path_factory.mktemp("studies")
    make_voc(root / "voc")
    make_cityscapes(root / "cityscapes")
    make_ade(root / "ade")
    voc = {"name": "voc", "data_root": str(root / "voc"), "crop_size": [32, 32], "scale": [W, H]}
    cases = {
        # ResNet-D8 with the 512-style head and the auxiliary head, SGD + poly, step-based training
        "voc": cli_study(root, "voc_e2e", voc,
                      {"backbone": R18, "head": {"channels": 16, "aux_weight": 0.4}, "mechanism": "nonlocal"},
                      {"iterations": 4, "val_interval": 2, "optimizer": "sgd", "lr": 0.01, "schedule": "poly",
                       "min_lr": 0.0001}, {"mechanism": ["none", "nonlocal"]}),
        "cityscapes": cli_study(root, "cityscapes_e2e", {"name": "cityscapes", "data_root": str(root / "cityscapes"),
                                                      "crop_size": [32, 64], "scale": [128, 64]},
                             {"backbone": SMALL, "mechanism": "glore", "args": {"K": 4}}, {"epochs": 1},
                             {"gcn": [True]}),
        "ade20k": cli_study(root, "ade20k_e2e", {"name": "ade20k", "data_root": str(root / "ade"), "crop_size": [32, 32],
                                              "scale": [W, H]},
                         {"backbone": SMALL, "mechanism": "none"}, {"epochs": 1}, {"mechanism": ["none"]}),
        "missing_root": cli_study(root, "missing_root", {**voc, "data_root": str(root / "nowhere")},
                               {"backbone": SMALL, "mechanism": "none"}, {"epochs": 1}, {"mechanism": ["none"]}),
        "missing_weights": cli_study(root, "missing_weights", voc,
                                  {"backbone": {**R18, "pretrained": str(root / "weights" / "r18.pth")},
                                   "mechanism": "none"}, {"epochs": 1}, {"mechanism": ["none"]}),
    }
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}

    def run(case: str, path: Path):
        cwd = root / f"run_{case}"
        cwd.mkdir()
        return subprocess.run([sys.executable, "-m", "ablate.run", str(path), "--run-dir", str(cwd / "runs"),
                               "--reports-dir", str(cwd / "reports")], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=600)

    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {case: pool.submit(run, case, path) for case, path in cases.items()}
        return {case: (root / f"run_{case}", cases[case], f.result()) for case, f in futures.items()}


def _trials(cwd: Path, name: str):
    import optuna

    from ablate.storage import records as st

    store = st.open_storage(str(cwd / "runs" / "optuna.journal"))
    return optuna.load_study(study_name=name, storage=store).get_trials(deepcopy=False)


def _labelled_val_pixels(spec) -> int:
    """Pixels of the val label files that are not ignored (ADE20K: 0 'other' is ignored too)."""
    from ablate.data.real import resolve_layout

    part = resolve_layout(spec).val[0]
    files = sorted(Path(part.seg_dir).rglob("*.png"))
    if part.ann_file:
        files = [Path(part.seg_dir) / f"{i}.png" for i in Path(part.ann_file).read_text().split()]
    ignored = (0, 255) if spec.name == "ade20k" else (255,)
    return sum(int((~np.isin(np.array(Image.open(f)), ignored)).sum()) for f in files)


@pytest.mark.slow
@pytest.mark.parametrize("name,classes", [("voc", 21), ("cityscapes", 19), ("ade20k", 150)])
def test_study_on_real_data_runs_end_to_end(cli_runs, name, classes):
    """python -m ablate.run trains every cell on the dataset, validates at the labels' original
    resolution and writes the report."""
    import optuna

    from ablate.study.load import load_study

    cwd, path, proc = cli_runs[name]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    study = load_study(path)
    trials = _trials(cwd, study.name)
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(t.user_attrs["cell_key"] for t in done) == sorted(c.key for c in study.cells())
    for t in done:
        assert len(t.user_attrs["class_iou"]) == classes  # the class count comes from the dataset
        assert 0.0 <= t.value <= 1.0
        # every labelled val pixel is scored once, at the label's own resolution
        assert t.user_attrs["val_pixels"] == _labelled_val_pixels(study.data)
    report = (cwd / "reports" / f"{study.name}.md").read_text()
    assert f"on the {name} `{study.data.val_split}` split" in report
    for cell in study.cells():
        assert f"| {cell.title()} |" in report
    if name == "voc":  # 4 iterations validated every 2: two rounds, the worker's two "epochs"
        assert all(len(t.user_attrs["curve"]) == 2 for t in done)
        assert "4 iterations, validated every 2" in report and "ResNet-18-D8" in report
        nonlocal_trial = next(t for t in done if t.user_attrs["attention_params"])
        assert nonlocal_trial.user_attrs["attention_flops"] > 0  # measured at the 16-channel, 4x4 map


@pytest.mark.slow
def test_missing_data_root_exits_2_naming_path_and_layout(cli_runs):
    cwd, path, proc = cli_runs["missing_root"]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and proc.stdout == ""
    flat = " ".join(proc.stderr.split())
    assert flat.startswith(f"error in {path}, key 'data.data_root':") and flat.endswith("Nothing was run.")
    assert str(path.parent / "nowhere") in flat and "does not exist" in flat
    assert "expected the standard layout" in flat and "JPEGImages" in flat and "SegmentationClass" in flat
    assert not (cwd / "runs").exists()


@pytest.mark.slow
def test_missing_pretrained_file_exits_2_saying_where_to_put_it(cli_runs):
    cwd, path, proc = cli_runs["missing_weights"]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and proc.stdout == ""
    flat = " ".join(proc.stderr.split())
    assert flat.startswith(f"error in {path}, key 'model.backbone.pretrained':")
    target = path.parent / "weights" / "r18.pth"
    assert f"does not exist; download open-mmlab://resnet18_v1c" in flat and f"to {target}" in flat
    assert "pretrained: none" in flat
    assert not (cwd / "runs").exists()


def test_data_factor_on_a_real_dataset_overrides_its_setting(tmp_path):
    """data.X factors vary the dataset's settings; the layout is checked once, again only if
    the factor moves where the files are."""
    from ablate.study.load import load_study

    make_voc(tmp_path / "voc", n_train=2, n_val=1)
    voc = {"name": "voc", "data_root": str(tmp_path / "voc"), "crop_size": [32, 32], "scale": [W, H]}
    path = cli_study(tmp_path, "crops", voc, {"backbone": SMALL, "mechanism": "none"}, {"epochs": 1},
                  {"data.crop_size": [[32, 32], [48, 48]]})
    cells = load_study(path).cells()
    assert [c.data.crop_size for c in cells] == [(32, 32), (48, 48)] and cells[0].key != cells[1].key
    moved = cli_study(tmp_path, "moved", voc, {"backbone": SMALL, "mechanism": "none"}, {"epochs": 1},
                   {"data.data_root": [str(tmp_path / "voc"), str(tmp_path / "elsewhere")]})
    with pytest.raises(StudyError) as e:
        load_study(moved)
    assert e.value.key == "data.data_root" and str(tmp_path / "elsewhere") in e.value.message
    assert load_study(moved, check_files=False).cells()[1].data.data_root == str(tmp_path / "elsewhere")


def test_poly_schedule_and_sgd_follow_mmseg():
    """lr = (lr - min_lr) * (1 - step / total) ** power + min_lr, with SGD's momentum."""
    from types import SimpleNamespace

    from ablate.models.segmenter import SegmentationModule

    module = SegmentationModule(21, SMALL, "none", {}, lr=0.01, optimizer="sgd", momentum=0.8, schedule="poly",
                                poly_power=0.9, min_lr=1e-4)
    module._trainer = SimpleNamespace(estimated_stepping_batches=10)
    conf = module.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["momentum"] == 0.8
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [(0.01 - 1e-4) * (1 - s / 10) ** 0.9 + 1e-4 for s in range(10)]
    assert lrs == pytest.approx(expected, rel=1e-9)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-4)  # the floor at the end


@pytest.mark.parametrize("backbone,head", [(SMALL, None), (R18, None), (R18, {"channels": 16, "aux_weight": 0.4})])
def test_cost_shapes_match_the_built_model(backbone, head):
    """The report's and the trial's block shapes are computed without building the backbone
    (a ResNet would load its weights): they must be what the built model feeds the block."""
    from ablate.models.segmenter import Segmenter, feature_geometry, feature_side

    model = Segmenter(21, backbone, "none", {}, head).eval()
    channels, stride = feature_geometry(backbone, head)
    x = torch.randn(1, 3, 33, 47)  # odd sides: the stride-2 convs round up
    with torch.no_grad():
        f = model.backbone(x)
        if model.reduce is not None:
            f = model.reduce(f)
        logits, extras = model.forward_train(x)
    assert tuple(f.shape[1:]) == (channels, feature_side(33, stride), feature_side(47, stride))
    assert model.attention_channels == channels and logits.shape == (1, 21, 33, 47)
    weight = head.get("aux_weight") if head else None
    assert [(w, aux.shape) for w, aux in extras] == ([(weight, logits.shape)] if weight else [])


def test_step_based_trial_reports_rounds_and_prunes_at_one(tmp_path):
    """With train.iterations each validation round is an 'epoch' for the worker: it is reported
    with its round index, a prune answer stops the trial there, and the last round is final."""
    from ablate.study.load import load_study
    from ablate.trainer.trial import run_trial

    make_voc(tmp_path / "voc", n_train=4, n_val=1)
    voc = {"name": "voc", "data_root": str(tmp_path / "voc"), "crop_size": [32, 32], "scale": [W, H]}
    path = cli_study(tmp_path, "steps", voc, {"backbone": SMALL, "mechanism": "none"},
                  {"iterations": 6, "val_interval": 2}, {"mechanism": ["none"]})
    study = load_study(path)
    config = study.trial_config(*study.trials()[0])
    assert config["train"]["epochs"] == 3
    seen = []
    result = run_trial(config, lambda e, m: seen.append(e) or e == 1, threads=1)
    assert seen == [0, 1] and result["pruned_epoch"] == 1 and len(result["curve"]) == 2
    seen.clear()
    result = run_trial(config, lambda e, m: seen.append(e) or e == 2, threads=1)  # the last round: not pruned
    assert seen == [0, 1, 2] and result["pruned_epoch"] is None and len(result["curve"]) == 3
