"""Evaluation modes (ablate/models/inference.py): whole, slide, multi-scale + flip, the eval: parser, and
parity with mmseg 1.2.2's own slide_inference, postprocess_result and SegTTAModel.merge_preds
(called as plain functions on a stand-in ``self``: no registry, no config)."""
from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ablate.config.errors import StudyError
from ablate.config.evaluation import EvalSpec, parse_eval
from ablate.models.inference import evaluate, multiscale_flip_inference, scaled_size, slide_inference, whole_inference, windows

C = 4


def _conv(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Conv2d(3, C, 1).double().eval()


def _image(h: int, w: int, b: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


class Recorder:
    """A model that records the input sizes it is called with and returns a fixed function of
    the position (``kind``: 'x' = the column index, increasing left to right, so not
    flip-symmetric; 'sym' = distance from the vertical mid-line, flip-symmetric)."""

    def __init__(self, kind: str = "x"):
        self.kind, self.sizes = kind, []

    def __call__(self, x):
        b, _, h, w = x.shape
        self.sizes.append((h, w))
        col = torch.arange(w, dtype=x.dtype).expand(h, w)
        f = col if self.kind == "x" else (col - (w - 1) / 2).abs()
        return torch.stack([f, -f, torch.zeros_like(f), f / 2])[None].expand(b, C, h, w).clone()


# ------------------------------------------------------------------------------------------
# slide
# ------------------------------------------------------------------------------------------

def test_slide_with_a_crop_covering_the_image_is_whole_exactly():
    model, x = _conv(), _image(37, 53)
    whole = whole_inference(model, x)
    for crop in ((37, 53), (64, 64)):
        assert torch.equal(slide_inference(model, x, C, crop, (10, 10)), whole)


def test_slide_on_a_translation_equivariant_model_is_whole():
    model, x = _conv(), _image(37, 53)
    got = slide_inference(model, x, C, (16, 20), (11, 7))
    assert len(windows(37, 53, (16, 20), (11, 7))) > 4  # windows really overlap and differ
    torch.testing.assert_close(got, whole_inference(model, x), rtol=1e-12, atol=1e-12)


def test_slide_differs_from_whole_for_a_global_model():
    """A model whose output depends on the whole window (its mean) sees each window's mean."""
    def global_model(x):
        return x.mean((2, 3), keepdim=True)[:, :1].expand(x.shape[0], C, *x.shape[-2:])
    x = _image(32, 32)
    assert not torch.allclose(slide_inference(global_model, x, C, (16, 16), (16, 16)), whole_inference(global_model, x))


def test_windows_cover_every_pixel_and_end_at_the_border():
    for h, w, crop, stride in ((37, 53, (16, 20), (11, 7)), (512, 683, (512, 512), (341, 341)), (5, 9, (8, 8), (3, 3))):
        count = torch.zeros(h, w)
        for y1, y2, x1, x2 in windows(h, w, crop, stride):
            assert y2 - y1 == min(crop[0], h) and x2 - x1 == min(crop[1], w)
            count[y1:y2, x1:x2] += 1
        assert (count > 0).all()
        assert max(y2 for _, y2, _, _ in windows(h, w, crop, stride)) == h


# ------------------------------------------------------------------------------------------
# multi-scale + flip
# ------------------------------------------------------------------------------------------

def test_multiscale_calls_the_model_at_each_scale_and_flip():
    rec = Recorder()
    x = _image(40, 60, b=1)
    scales = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
    multiscale_flip_inference(rec, x, C, scales, flip=True)
    want = [scaled_size(40, 60, s) for s in scales for _ in (0, 1)]
    assert rec.sizes == want
    assert want[0] == (20, 30) and want[-1] == (70, 105)


def test_multiscale_in_slide_mode_slides_at_each_scale():
    rec = Recorder()
    multiscale_flip_inference(rec, _image(40, 60, b=1), C, (0.5, 1.5), flip=False, mode="slide", crop=(32, 32),
                              stride=(16, 16))
    small = len(windows(20, 30, (32, 32), (16, 16)))
    assert rec.sizes[:small] == [(20, 30)] * small
    assert set(rec.sizes[small:]) == {(32, 32)} and len(rec.sizes) - small == len(windows(60, 90, (32, 32), (16, 16)))


def test_flip_is_undone_before_averaging():
    x = _image(8, 12, b=1)
    # flip-symmetric output: flipping changes nothing, so the average is the one view
    one = multiscale_flip_inference(Recorder("sym"), x, C, (1.0,), flip=False)
    both = multiscale_flip_inference(Recorder("sym"), x, C, (1.0,), flip=True)
    torch.testing.assert_close(both, one)
    # position-dependent output: the flipped view, flipped back, is the mirror image of the plain one
    f = torch.arange(12, dtype=x.dtype).expand(8, 12)
    plain = torch.stack([f, -f, torch.zeros_like(f), f / 2])[None]
    want = ((plain.softmax(1) + plain.flip(-1).softmax(1)) / 2).log()
    torch.testing.assert_close(multiscale_flip_inference(Recorder("x"), x, C, (1.0,), flip=True), want)


def test_views_are_resized_back_to_the_output_size():
    x = _image(20, 30, b=1)
    out = multiscale_flip_inference(_conv(), x, C, (0.5, 2.0), flip=True, out_size=(40, 60))
    assert out.shape == (1, C, 40, 60)
    torch.testing.assert_close(out.exp().sum(1), torch.ones(1, 40, 60, dtype=x.dtype))


def test_single_view_is_the_logits_and_the_prediction_of_whole():
    model, x = _conv(), _image(17, 23)
    assert torch.equal(evaluate(model, x, C, EvalSpec()), whole_inference(model, x))
    ms = multiscale_flip_inference(model, x, C, (1.0,), False)
    assert torch.equal(ms.argmax(1), whole_inference(model, x).argmax(1))


# ------------------------------------------------------------------------------------------
# parity with mmseg 1.2.2's code
# ------------------------------------------------------------------------------------------

def _mmseg():
    pytest.importorskip("mmseg")
    from ablate.compat import install_mmcv_ops

    install_mmcv_ops()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from mmseg.models.segmentors.base import BaseSegmentor
        from mmseg.models.segmentors.encoder_decoder import EncoderDecoder
        from mmseg.models.segmentors.seg_tta import SegTTAModel
        from mmseg.structures import SegDataSample
    return EncoderDecoder, BaseSegmentor, SegTTAModel, SegDataSample


def _small_net() -> nn.Module:
    """A model whose windows' outputs differ from the whole image's (a 3x3 conv, padding, and a
    stride-2 pool with bilinear upsampling), in float64."""
    torch.manual_seed(3)
    conv = nn.Conv2d(3, C, 3, padding=1).double().eval().requires_grad_(False)
    return lambda x: F.interpolate(F.avg_pool2d(conv(x), 2, ceil_mode=True), size=x.shape[-2:], mode="bilinear",
                                   align_corners=False)


def test_slide_matches_mmseg_slide_inference():
    EncoderDecoder = _mmseg()[0]
    net, x = _small_net(), _image(45, 70)
    for crop, stride in (((32, 32), (21, 21)), ((16, 40), (8, 13)), ((64, 80), (32, 32))):
        stub = SimpleNamespace(test_cfg=SimpleNamespace(crop_size=crop, stride=stride), out_channels=C,
                               encode_decode=lambda img, metas: net(img))
        theirs = EncoderDecoder.slide_inference(stub, x, [{}])
        ours = slide_inference(net, x, C, crop, stride)
        if crop[0] < 45:  # smaller windows than the image: they matter for this model
            assert not torch.allclose(ours, whole_inference(net, x))
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)


def test_flip_and_scale_merge_matches_mmseg_tta():
    """Views evaluated by our code; mmseg's postprocess_result flips each back and resizes it to
    the original shape, SegTTAModel.merge_preds averages the softmax; the predictions agree and
    our output is the log of mmseg's averaged probabilities."""
    _, BaseSegmentor, SegTTAModel, SegDataSample = _mmseg()
    net, x = _small_net(), _image(30, 44, b=1)
    scales = (0.5, 1.0, 1.5)
    samples = []
    for r in scales:
        v = F.interpolate(x, size=scaled_size(30, 44, r), mode="bilinear", align_corners=False)
        for flip in (False, True):
            s = SegDataSample(metainfo=dict(ori_shape=(30, 44), flip=flip, flip_direction="horizontal", img_path="x"))
            logits = net(v.flip(-1) if flip else v)
            samples.append(BaseSegmentor.postprocess_result(SimpleNamespace(align_corners=False), logits, [s])[0])
    tta = SimpleNamespace(module=SimpleNamespace(out_channels=C))
    merged = SegTTAModel.merge_preds(tta, [samples])[0]
    ours = multiscale_flip_inference(net, x, C, scales, flip=True)
    assert torch.equal(ours[0].argmax(0), merged.pred_sem_seg.data[0])
    mean_p = sum(s.seg_logits.data.softmax(0) for s in samples) / len(samples)
    torch.testing.assert_close(ours[0].exp(), mean_p, rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------------------
# the eval: mapping
# ------------------------------------------------------------------------------------------

def test_parse_eval_accepts_the_papers_settings():
    assert parse_eval(None, "s.yaml") == EvalSpec()
    spec = parse_eval({"mode": "slide", "crop": [512, 512], "stride": [341, 341],
                       "scales": [0.5, 0.75, 1.0, 1.25, 1.5, 1.75], "flip": True}, "s.yaml")
    assert spec.crop == (512, 512) and spec.stride == (341, 341) and spec.flip and len(spec.scales) == 6
    assert spec.describe() == "slide 512x512 stride 341x341, scales 0.5, 0.75, 1, 1.25, 1.5, 1.75 + flip"
    assert parse_eval({"mode": "whole"}, "s.yaml").describe() == "whole image"


@pytest.mark.parametrize("raw, key", [
    ({"mode": "sliding"}, "eval.mode"),
    ({"mode": "slide", "crop": [512, 512]}, "eval.stride"),
    ({"mode": "slide", "crop": [512], "stride": [341, 341]}, "eval.crop"),
    ({"mode": "slide", "crop": [512, 512], "stride": [0, 341]}, "eval.stride"),
    ({"mode": "slide", "crop": [256, 256], "stride": [341, 341]}, "eval.stride"),
    ({"mode": "whole", "crop": [512, 512]}, "eval.crop"),
    ({"scales": []}, "eval.scales"),
    ({"scales": [1.0, -0.5]}, "eval.scales"),
    ({"scales": [1.0, 1.0]}, "eval.scales"),
    ({"scales": "1.0"}, "eval.scales"),
    ({"flip": "yes"}, "eval.flip"),
    ({"flips": True}, "eval.flips"),
    ([1, 2], "eval"),
])
def test_parse_eval_refuses_bad_values(raw, key):
    with pytest.raises(StudyError) as e:
        parse_eval(raw, "study.yaml")
    assert e.value.where == "study.yaml" and e.value.key == key
    assert "Nothing was run" in str(e.value)


# ------------------------------------------------------------------------------------------
# on exported data, with the harness's own model
# ------------------------------------------------------------------------------------------

def test_modes_on_an_exported_voc_image_with_a_segmenter(tmp_path):
    """global_cue written in the VOC layout, an image read back through mmseg's validation
    pipeline, and a small Non-local segmenter: slide with a crop covering the image is whole
    exactly; multi-scale + flip calls the model at each scale; its prediction has the label's size."""
    from ablate.data import export as ex
    from ablate.data.real import build_real_datasets, collate_val, validate_real_data
    from ablate.data.synthetic import SceneConfig
    from ablate.models.segmenter import Segmenter

    ex.export(SceneConfig(size=32, train_images=2, val_images=2), "voc", tmp_path)
    spec = validate_real_data({"name": "voc", "data_root": str(tmp_path), "crop_size": [32, 32],
                               "scale": [32, 32], "num_workers": 0}, "test")
    x, y = collate_val([build_real_datasets(spec, "test").val[0]])
    model = Segmenter(21, {"name": "small_cnn", "width": 8, "depth": 2}, "nonlocal", {}, seed=0).eval()
    sizes = []

    def fn(v):
        sizes.append(tuple(v.shape[-2:]))
        return model(v)

    with torch.no_grad():
        whole = whole_inference(fn, x)
        assert torch.equal(slide_inference(fn, x, 21, (32, 32), (16, 16)), whole)
        assert not torch.allclose(slide_inference(fn, x, 21, (16, 16), (8, 8)), whole)  # global block
        sizes.clear()
        spec = parse_eval({"scales": [0.75, 1.0, 1.5], "flip": True}, "s.yaml")
        out = evaluate(fn, x, 21, spec, out_size=tuple(y.shape[-2:]))
    assert sizes == [(24, 24)] * 2 + [(32, 32)] * 2 + [(48, 48)] * 2
    assert out.shape[-2:] == y.shape[-2:]
