"""The built-in backbones, one registry: name -> class, geometry, study spec and report wording.

Everything that needs to know about a backbone asks here: the segmenter builds it
(:func:`build`), the report and the trainer size the attention block's input without building it
(:func:`geometry`; a ResNet would load its weights), the study parses ``model.backbone``
(:attr:`Backbone.parse`) and checks the auxiliary head (:attr:`Backbone.stages`), ``ablate
estimate`` times a step without fetching weights (:attr:`Backbone.weights`), and the report
describes it (:attr:`Backbone.describe`). A plugin backbone (``module:attr``) is not here:
:mod:`ablate.plugins` builds it and asks the built module for its geometry.

The table imports no torch: a study reads it when it loads (``load_study``, ``python -m
ablate.run.status``), so each entry names its class and builder by where they are
(``module:attr``, imported by :attr:`Backbone.cls` and :func:`build`), and its parse and channels
come from torch-free spec modules (:mod:`ablate.models.resnet_spec`).

To add a backbone: its module in ``ablate/models/``, one :class:`Backbone` entry in
:data:`BACKBONES` (its study spec a frozen dataclass in a module that imports no torch;
:func:`ablate.config.specs.parse_spec` checks one against its fields).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Mapping

from ..config.lazy import named
from .resnet_spec import ResNetSpec, resnet_channels, validate_resnet

if TYPE_CHECKING:  # a type only: the table imports no torch
    from torch import nn


@dataclass(frozen=True)
class Backbone:
    """One built-in backbone. ``channels(spec)``: the output channels for a spec's dict;
    ``stride``: the output stride (the class's ``stride``); ``stages``: it has ``forward_stages``
    (stage 3 for mmseg's auxiliary FCN head, ``aux_channels`` wide); ``weights``: its spec names
    pretrained weights (``pretrained``), loaded when it is built; ``source``: the class as
    ``module:attr`` (:attr:`cls` imports it); ``build_with``: ``module:attr`` of what builds it from
    its spec's keywords when the class alone cannot (small_cnn's ``init`` and ``freeze``,
    :mod:`ablate.models.pretext`); ``parse(raw, where, prefix, base, check_files)``:
    ``model.backbone`` (or a ``backbone.X`` factor over ``base``) -> its spec;
    ``describe(spec)``: the report's words for it."""

    name: str
    source: str  # the class, ``module:attr``
    channels: Callable[[Mapping], int]
    stride: int
    parse: Callable
    describe: Callable
    stages: bool = False
    weights: bool = False
    build_with: str = ""  # ``module:attr`` of what builds it from the spec's keywords ("": ``cls``)

    @property
    def cls(self) -> Callable[..., nn.Module]:
        """The backbone's class (its module imported on first use)."""
        return named(self.source)

    @property
    def builder(self) -> Callable[..., nn.Module] | None:
        """What builds it from its spec's keywords (None: :attr:`cls`)."""
        return named(self.build_with) if self.build_with else None


def _parse_small(raw: dict, where: str, prefix: str, base, check_files: bool):
    from ..config.specs import BackboneSpec  # the study's record (study_records imports no model)
    from ..config.specs import parse_small_backbone

    return parse_small_backbone(raw, where, prefix, base if isinstance(base, BackboneSpec) else None)


def _describe_small(b) -> str:
    """``width 32``, and its init when not from scratch (naming the pretext checkpoint's key)."""
    words = f"width {b.width}"
    if getattr(b, "init", "scratch") != "scratch":
        from .pretext import pretext_key  # the key hashes the pretext's code and torch's version

        words += f", init {b.init} (pretext checkpoint `{pretext_key(b.width, b.depth)}`)"
    return words + (", frozen" if getattr(b, "freeze", False) else "")


def _parse_resnet(raw: dict, where: str, prefix: str, base, check_files: bool):
    return validate_resnet(raw, where, prefix, base if isinstance(base, ResNetSpec) else None, check_files)


# in the order error messages list them; each stride is its class's ``stride`` (tests/models checks)
BACKBONES = {
    "small_cnn": Backbone("small_cnn", "ablate.models.backbone:SmallCNN", lambda s: s["width"], 2, _parse_small,
                          _describe_small, build_with="ablate.models.pretext:build_small_cnn"),
    "resnet_d8": Backbone("resnet_d8", "ablate.models.resnet:ResNetD8", lambda s: resnet_channels(s["depth"]), 8,
                          _parse_resnet, lambda b: f"ResNet-{b.depth}-D8, pretrained `{b.pretrained}`",
                          stages=True, weights=True),
}


def lookup(name) -> Backbone | None:
    """The built-in backbone called ``name`` (None: not a built-in one, e.g. a plugin's)."""
    return BACKBONES.get(name) if isinstance(name, str) else None


def build(spec: Mapping) -> nn.Module:
    """A built-in backbone from its spec's dict (``name`` and the constructor's keywords)."""
    kwargs = dict(spec)
    entry = BACKBONES[kwargs.pop("name")]
    return (entry.builder or entry.cls)(**kwargs)


def geometry(spec: Mapping) -> tuple[int, int]:
    """(output channels, output stride) of a built-in backbone's spec, without building it."""
    entry = BACKBONES[spec["name"]]
    return entry.channels(spec), entry.stride


__all__ = ["BACKBONES", "Backbone", "build", "geometry", "lookup"]
