"""User code as mechanisms, tasks and backbones, named in a study by ``module:attr`` or declared by
an installed package under the entry-point group ``ablate.mechanisms``: loading and ``sys.path``
(:mod:`.load`), options read from annotations, the contract checks and one-paragraph errors
(:mod:`.mechanisms`, :mod:`.tasks`, :mod:`.backbones`). It knows the factor vocabulary
(:mod:`ablate.config.vocab`) and nothing of the built-in mechanisms, which look plugins up here."""
from .mechanisms import (
    GROUP, PATH_ENV, PLUGIN_FAMILY, builder, check_kind, CHECK_CHANNELS, CHECK_SIDE, PluginError,
    is_spec, make_importable, load_object, options_of, as_preset, check_block, mechanism,
    installed_presets, TaskSpec, load_task, task_spec, check_image, task_spec_from_dict, task_data,
    BackboneSpec, backbone_spec, build_backbone, backbone_geometry,
)

__all__ = [
    "GROUP", "PATH_ENV", "PLUGIN_FAMILY", "builder", "check_kind", "CHECK_CHANNELS", "CHECK_SIDE",
    "PluginError", "is_spec", "make_importable", "load_object", "options_of", "as_preset",
    "check_block", "mechanism", "installed_presets", "TaskSpec", "load_task", "task_spec",
    "check_image", "task_spec_from_dict", "task_data", "BackboneSpec", "backbone_spec",
    "build_backbone", "backbone_geometry",
]
