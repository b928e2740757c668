"""The ``model:`` section of a study file: the mechanism (a preset, an installed plugin or
``module:attr``), its argument overrides checked against the preset's factors, the backbone (a
registry entry or a plugin) and the head's style. Split out of :mod:`ablate.study.sections`, which
re-exports these names."""
from __future__ import annotations

from pathlib import Path

from ..attention import MECHANISMS, resolve_mechanism
from ..attention.carafe_spec import UPSAMPLERS, UpsampleSpec
from ..config.errors import StudyError, brief
from ..models.registry import BACKBONES, lookup
from ..plugins.mechanisms import BackboneSpec as PluginBackbone, PluginError, backbone_spec, is_spec
from ..config.specs import expect_mapping, parse_spec, unknown_keys, unknown_name
from ..config.trial import HeadSpec

ALL_BACKBONES = tuple(BACKBONES)  # the built-in ones (ablate/models/registry.py)


def mechanism_name(name, where: str, key: str) -> str:
    """``name`` checked: a built-in preset, a plugin by ``module:attr`` (the study's folder and the
    current directory importable) or an installed plugin's preset (ablate/plugins/mechanisms.py)."""
    if isinstance(name, str):
        try:
            resolve_mechanism(name, Path(where).parent)
            return name
        except PluginError as e:
            raise e.at(where, key) from None
        except KeyError:
            pass
    raise StudyError(where, key, f"{unknown_name('mechanism', name)}; valid: {', '.join(sorted(MECHANISMS))} "
                     "(python -m ablate list shows each one's factors), a plugin's installed name, or your own "
                     "block as module:attr.")


def parse_backbone(raw: dict, where: str, base=None, prefix="model.backbone.", check_files: bool = True):
    """``model.backbone``: a built-in backbone's spec (its registry entry parses it: a
    :class:`BackboneSpec` for small_cnn, a ``ResNetSpec`` for resnet_d8, whose ``pretrained`` file
    path must exist unless ``check_files`` is off) or a plugin's. ``base``: the spec a
    ``backbone.X`` factor overrides (a factor may switch the backbone family)."""
    name = raw.get("name", getattr(base, "name", "small_cnn"))
    if is_spec(name):  # a backbone plugin (ablate/plugins/mechanisms.py)
        return backbone_spec(raw, where, prefix, base if isinstance(base, PluginBackbone) else None)
    entry = lookup(name)
    if entry is None:
        raise StudyError(where, prefix + "name", f"{unknown_name('backbone', name)}; valid: "
                         f"{', '.join(ALL_BACKBONES)}.")
    return entry.parse(raw, where, prefix, base, check_files)


HEAD_STYLES = ("plain", "mmseg")


CARAFE_KEYS = ("k_up", "k_enc", "compressed")  # model.head keys read only by upsample: carafe


def head_spec(raw: dict, where: str, base: HeadSpec | None = None, prefix: str = "model.head.") -> HeadSpec:
    """``model.head`` (or a ``head.X`` factor over ``base``, named ``prefix`` + X in errors)."""
    spec = parse_spec(HeadSpec, raw, where, prefix, base)
    if spec.style not in HEAD_STYLES:
        raise StudyError(where, prefix + "style", f"unknown head style {brief(spec.style)}; valid: plain (the "
                         "block, then dropout and a 1x1 classifier) or mmseg (the convolutions of mmseg's decode "
                         "head for the mechanism around the block).")
    if spec.upsample not in UPSAMPLERS:
        raise StudyError(where, prefix + "upsample", f"unknown upsampler {brief(spec.upsample)}; valid: bilinear "
                         "(the logits resized to the input) or carafe (CARAFE stages on the features before the "
                         "classifier).")
    problem = UpsampleSpec.of(spec).problem()
    if problem:
        raise StudyError(where, prefix + problem[0], problem[1] + ".")
    if spec.upsample != "carafe":
        unused = [k for k in CARAFE_KEYS if getattr(spec, k) != getattr(HeadSpec, k)]
        if unused:
            raise StudyError(where, prefix + unused[0], f"applies to upsample: carafe only (the head's upsampler "
                             f"is {spec.upsample}); remove it or set {prefix}upsample: carafe.")
    return spec


def model_section(raw: dict, where: str, check_files: bool) -> tuple[str, dict, object, HeadSpec]:
    """``model:``: (the mechanism, its argument overrides, the backbone's spec, the head's spec)."""
    model = expect_mapping(raw.get("model"), where, "model")
    unknown_keys(model, ("backbone", "mechanism", "args", "head"), where, "model.")
    if "mechanism" not in model:
        raise StudyError(where, "model.mechanism", "missing; name the mechanism under study, one of: "
                         f"{', '.join(sorted(MECHANISMS))}.")
    mech = mechanism_name(model["mechanism"], where, "model.mechanism")
    args = expect_mapping(model.get("args"), where, "model.args")
    for k, v in args.items():
        check_factor_value(MECHANISMS[mech], k, v, where, f"model.args.{k}")
    backbone = parse_backbone(expect_mapping(model.get("backbone"), where, "model.backbone"), where,
                              check_files=check_files)
    head = head_spec(expect_mapping(model.get("head"), where, "model.head"), where)
    return mech, dict(args), backbone, head


def check_factor_value(preset, k, v, where: str, key: str, also: str = "") -> None:
    """A mechanism factor the preset has, with a value its factor accepts."""
    if k not in preset.defaults:
        raise StudyError(where, key, f"mechanism {brief(preset.name)} has no factor {brief(k)}; its factors are: "
                         f"{', '.join(preset.defaults) or 'none'}{also}.")
    try:
        preset.factor(k).coerce(v)
    except ValueError as e:
        raise StudyError(where, key, f"{e}.") from None
