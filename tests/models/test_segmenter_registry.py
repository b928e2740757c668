"""The one backbone registry (ablate/models/registry.py): what it says about each built-in
backbone is what the built module does, and the study and the segmenter read it."""
from __future__ import annotations

from dataclasses import asdict

import pytest
import torch
import yaml

from ablate.config.errors import StudyError
from ablate.models import registry
from ablate.models.segmenter import Segmenter, build_backbone, feature_geometry
from ablate.study.sections import ALL_BACKBONES, parse_backbone

SPECS = {"small_cnn": {"name": "small_cnn", "width": 12, "depth": 4},
         "resnet_d8": {"name": "resnet_d8", "depth": 18, "pretrained": "none"}}


def test_every_builtin_backbone_has_a_spec_here():
    assert set(SPECS) == set(registry.BACKBONES) and ALL_BACKBONES == tuple(registry.BACKBONES)


@pytest.mark.parametrize("name", list(SPECS))
def test_geometry_is_the_built_modules(name):
    entry = registry.lookup(name)
    spec = asdict(parse_backbone(dict(SPECS[name]), "s.yaml", check_files=False))  # the study's spec, as stored
    model = build_backbone(spec).eval()
    assert isinstance(model, entry.cls)
    assert entry.stride == entry.cls.stride and (entry.builder is None or callable(entry.builder))
    channels, stride = registry.geometry(spec)
    with torch.no_grad():
        f = model(torch.randn(1, 3, 32, 40))
    assert f.shape[1:] == (channels, 32 // stride, 40 // stride) == (model.out_channels, *f.shape[2:])
    assert entry.stages == hasattr(model, "forward_stages")
    assert feature_geometry(spec) == (channels, stride) and feature_geometry(spec, {"channels": 7}) == (7, stride)
    assert entry.weights == ("pretrained" in spec)


def test_an_unknown_backbone_names_every_registered_one():
    with pytest.raises(StudyError) as e:
        parse_backbone({"name": "resnet50"}, "s.yaml")
    assert e.value.key == "model.backbone.name" and all(n in str(e.value) for n in registry.BACKBONES)


def test_the_aux_head_needs_a_backbone_with_stages(tmp_path):
    from ablate.study.load import load_study

    raw = {"model": {"mechanism": "none", "head": {"aux_weight": 0.4}}, "factors": {"mechanism": ["none"]}}
    path = tmp_path / "aux.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(StudyError) as e:
        load_study(path)
    staged = [n for n, b in registry.BACKBONES.items() if b.stages]
    assert e.value.key == "model.head.aux_weight" and staged and all(n in str(e.value) for n in staged)
    with pytest.raises(ValueError):  # the segmenter refuses it too, by the module's own stages
        Segmenter(3, SPECS["small_cnn"], "none", {}, {"aux_weight": 0.4})
