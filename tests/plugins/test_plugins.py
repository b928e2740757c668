"""Plugins (issue 15 items 1-3): a user's block, task or backbone by module:attr or by entry point.

In-process tests call ablate.plugins and the registry directly; the bad-plugin cases run the real
command (`python -m ablate.run STUDY --dry-run`) in a fresh process and read its exit status and
stderr. Entry points are made without pip: a folder holding ``<name>.dist-info/entry_points.txt``
on the path is an installed distribution to importlib.metadata.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from ablate.plugins import mechanisms as plugins, backbones as plugins_backbones, tasks as plugins_tasks
from ablate.attention import MECHANISMS, get_preset, installed_presets, resolve_mechanism
from ablate.config.errors import StudyError

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "my_attention"
BLOCKS = "plugs_h7"  # the test plugin module's name (unique to this file)

PLUGS = '''
from typing import Literal

import numpy as np
import torch
from torch import nn

from ablate.config.vocab import integer


class Good(nn.Module):
    """Scale the input (a test block)."""

    def __init__(self, channels: int, scale: float = 1.0, on: bool = True, k: int = 2,
                 mode: Literal["a", "b"] = "a", *rest, **more):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1)
        self.scale, self.k = scale, k

    def forward(self, x):
        return x * self.scale + 0 * self.conv(x)


class Declared(nn.Module):
    FACTORS = (integer("k", 2, "a count of at least 2"),)

    def __init__(self, channels, k=3, other=None):
        super().__init__()
        self.k = k

    def forward(self, x):
        return x


def built(channels: int, gain: float = 2.0):
    return Good(channels, scale=gain)


class WrongShape(nn.Module):
    def __init__(self, channels: int):
        super().__init__()

    def forward(self, x):
        return x[:, :1]


class Raises(nn.Module):
    def __init__(self, channels: int):
        super().__init__()

    def forward(self, x):
        raise RuntimeError("boom inside forward")


class Draws(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.w = nn.Parameter(torch.randn(channels))

    def forward(self, x):
        return x + torch.rand_like(x) * 0


class NoDefault(nn.Module):
    def __init__(self, channels: int, k: int):
        super().__init__()


class BadAnnotation(nn.Module):
    def __init__(self, channels: int, sizes: list[int] = ()):
        super().__init__()


class NotAModule:
    def __init__(self, channels: int):
        pass


NOT_A_BLOCK = 3


def halves(rng, size, noise: float = 0.1, flip: bool = False):
    """Left half class 1, right half class 2, each with its own mean colour."""
    label = np.ones((size, size), dtype=np.int64)
    label[:, size // 2:] = 2
    if flip:
        label = 3 - label
    image = rng.normal(0.0, noise, (3, size, size)).astype(np.float32) + (label == 2)[None]
    return image, label


halves.num_classes = 3


def out_of_range(rng, size):
    return np.zeros((3, size, size), np.float32), np.full((size, size), 7)


out_of_range.num_classes = 3


def no_classes(rng, size):
    return np.zeros((3, size, size), np.float32), np.zeros((size, size), np.int64)


class TinyNet(nn.Module):
    stride = 2

    def __init__(self, width: int = 8, depth: int = 2):
        super().__init__()
        self.out_channels = width
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, stride=2, padding=1),
                                  *[nn.Conv2d(width, width, 3, padding=1) for _ in range(depth - 1)])

    def forward(self, x):
        return self.body(x)


class LyingNet(TinyNet):
    stride = 4  # but it halves the map
'''


@pytest.fixture(autouse=True)
def _isolated(monkeypatch):
    """Each test sees a fresh plugin cache, sys.path and $ABLATE_PLUGIN_PATH."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delenv(plugins.PATH_ENV, raising=False)
    monkeypatch.setattr(plugins, "_RESOLVED", {})
    plugins_tasks._splits.cache_clear()
    plugins_backbones._geometry.cache_clear()


@pytest.fixture(scope="module")
def plugs(tmp_path_factory):
    """A folder holding the test plugin module (and a module that fails to import)."""
    folder = tmp_path_factory.mktemp("plugs")
    (folder / f"{BLOCKS}.py").write_text(PLUGS)
    (folder / "broken_h7.py").write_text("raise RuntimeError('this module is broken')\n")
    yield folder
    for name in (BLOCKS, "broken_h7"):
        sys.modules.pop(name, None)


def _on_path(folder: Path) -> None:
    sys.path.append(str(folder))


def dist_info(root: Path, package: str, entries: dict[str, str]) -> Path:
    """An installed distribution ``package`` declaring ``entries`` (name -> module:attr) under
    the group ablate.mechanisms, in ``root`` (which must be on the path)."""
    info = root / f"{package.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.1.0\n")
    lines = "".join(f"{k} = {v}\n" for k, v in entries.items())
    (info / "entry_points.txt").write_text(f"[{plugins.GROUP}]\n{lines}")
    return root


# -- mechanisms by module:attr ------------------------------------------------------------------------

def test_factors_are_derived_from_annotated_keyword_arguments(plugs):
    _on_path(plugs)
    preset = MECHANISMS[f"{BLOCKS}:Good"]
    kinds = {f.name: (f.kind, f.default, f.choices) for f in preset.factors}
    assert kinds == {"scale": ("float", 1.0, ()), "on": ("bool", True, ()), "k": ("int", 2, ()),
                     "mode": ("choice", "a", ("a", "b"))}
    assert preset.resolve({"k": 5, "on": "off", "scale": 3})["scale"] == 3.0
    with pytest.raises(ValueError, match="one of 'a', 'b'"):
        preset.resolve({"mode": "c"})
    assert preset.name == f"{BLOCKS}:Good" and preset.family == plugins.PLUGIN_FAMILY and preset.package == ""
    assert preset.summary == "Scale the input (a test block)."
    block = preset.build(4, scale=2.0)
    x = torch.randn(1, 4, 3, 3)
    assert torch.allclose(block(x), 2 * x)


def test_declared_factors_are_used_as_declared_and_functions_build_blocks(plugs):
    _on_path(plugs)
    declared = MECHANISMS[f"{BLOCKS}:Declared"]
    assert [(f.name, f.default, f.minimum) for f in declared.factors] == [("k", 3, 2)]  # `other` is no factor
    with pytest.raises(ValueError, match=">= 2"):
        declared.resolve({"k": 1})
    built = get_preset(f"{BLOCKS}:built")
    assert built.defaults == {"gain": 2.0}
    x = torch.randn(1, 8, 4, 4)
    assert torch.allclose(built.build(8)(x), 2 * x)


def test_the_registry_finds_plugins_but_iterates_the_built_ins_only(plugs):
    _on_path(plugs)
    names = list(MECHANISMS)
    assert f"{BLOCKS}:Good" in MECHANISMS and "glorre" not in MECHANISMS and 3 not in MECHANISMS
    assert MECHANISMS[f"{BLOCKS}:Good"] is resolve_mechanism(f"{BLOCKS}:Good")  # resolved once, cached
    assert list(MECHANISMS) == names and f"{BLOCKS}:Good" not in dict(MECHANISMS)
    assert resolve_mechanism("glore") is MECHANISMS["glore"]
    with pytest.raises(KeyError, match="unknown mechanism 'glorre'"):
        get_preset("glorre")
    with pytest.raises(KeyError):
        resolve_mechanism("glorre")


def test_the_contract_check_leaves_the_generators_as_they_were(plugs):
    _on_path(plugs)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    resolve_mechanism(f"{BLOCKS}:Draws")  # its constructor and forward draw random numbers
    assert torch.equal(torch.get_rng_state(), before)


def test_the_study_folder_and_the_current_directory_become_importable(plugs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, BLOCKS, raising=False)  # imported afresh, from the path
    preset = resolve_mechanism(f"{BLOCKS}:Good", base=plugs)  # plugs is not on the path: base makes it so
    assert preset.block.__module__ == BLOCKS
    folders = os.environ[plugins.PATH_ENV].split(os.pathsep)
    assert folders == [str(plugs.resolve()), str(tmp_path)]
    assert sys.path[-2:] == folders  # appended: nothing installed is shadowed
    plugins.make_importable()  # a child process: the recorded folders come back, none twice
    assert os.environ[plugins.PATH_ENV].split(os.pathsep) == folders and sys.path.count(str(tmp_path)) == 1


def test_a_child_process_finds_the_folders_its_parent_recorded(plugs, tmp_path):
    """Workers and DDP ranks are fresh interpreters: $ABLATE_PLUGIN_PATH carries the study's folder."""
    code = f"from ablate.attention import get_preset; print(get_preset('{BLOCKS}:Good').block.__module__)"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop(plugins.PATH_ENV, None)
    lost = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert lost.returncode != 0 and "there is no module 'plugs_h7'" in lost.stderr
    env[plugins.PATH_ENV] = str(plugs)
    found = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert found.returncode == 0 and found.stdout.strip() == BLOCKS, found.stderr


BAD = {  # attribute -> words the message must hold
    "Missing": ["has no attribute 'Missing'", "its classes:", "Good"],
    "NOT_A_BLOCK": ["it is 3, not a block class"],
    "NotAModule": ["not a torch.nn.Module"],
    "WrongShape": ["maps a tensor of shape (2, 32, 8, 8) to (2, 1, 8, 8)", "(B, C, H, W)"],
    "Raises": ["RuntimeError: boom inside forward"],
    "NoDefault": ["argument 'k' has no default"],
    "BadAnnotation": ["argument 'sizes' is annotated list[int]", "bool, int, float or Literal"],
}


@pytest.mark.parametrize("attr", sorted(BAD))
def test_a_bad_mechanism_plugin_is_a_plugin_error_naming_it(plugs, attr):
    _on_path(plugs)
    with pytest.raises(plugins.PluginError) as err:
        MECHANISMS[f"{BLOCKS}:{attr}"]
    text = err.value.paragraph()
    assert f"mechanism plugin '{BLOCKS}:{attr}'" in text
    for words in BAD[attr]:
        assert words in text
    assert isinstance(err.value, StudyError)
    located = err.value.at("s.yaml", "model.mechanism")
    assert located.paragraph().startswith("error in s.yaml, key 'model.mechanism': mechanism plugin")


def test_modules_that_do_not_import(plugs):
    _on_path(plugs)
    with pytest.raises(plugins.PluginError, match="there is no module 'no_such_module_h7'"):
        MECHANISMS["no_such_module_h7.blocks:X"]
    with pytest.raises(plugins.PluginError, match="module 'broken_h7' failed: RuntimeError: this module is broken"):
        MECHANISMS["broken_h7:X"]
    with pytest.raises(plugins.PluginError, match="expected module:attribute"):
        MECHANISMS["not a module:X"]


# -- mechanisms from installed packages (entry points) ------------------------------------------------

def test_installed_presets_carry_their_package_and_resolve_by_name(tmp_path):
    _on_path(EXAMPLE)
    _on_path(dist_info(tmp_path, "ablate-my-attention", {"gated_context": "my_attention.blocks:GatedContext"}))
    (preset,) = [p for p in installed_presets() if p.name == "gated_context"]
    assert preset.package == "ablate-my-attention" and preset.module == "my_attention.blocks"
    assert "gated_context" in MECHANISMS and MECHANISMS["gated_context"].package == "ablate-my-attention"
    assert "gated_context" not in list(MECHANISMS)
    assert {f.name for f in preset.factors} == {"reduction", "gate", "gate_bias", "zero_init"}
    assert preset.factor("gate").choices == ("pixel", "channel", "none")


def test_an_entry_point_may_name_a_preset_or_a_list_of_presets(plugs, tmp_path):
    _on_path(plugs)
    (tmp_path / "presets_h7.py").write_text(textwrap.dedent(f"""
        from ablate.config.vocab import Preset
        from {BLOCKS} import Good
        ONE = Preset("doubled", Good, {{"scale": 2.0}}, summary="Good at scale 2")
        MANY = [Preset("tripled", Good, {{"scale": 3.0}}, family="gating"), Preset("halved", Good, {{"scale": 0.5}})]
    """))
    _on_path(dist_info(tmp_path, "h7-presets", {"one": "presets_h7:ONE", "many": "presets_h7:MANY"}))
    found = {p.name: p for p in installed_presets() if p.package == "h7-presets"}
    assert sorted(found) == ["doubled", "halved", "tripled"]
    assert found["tripled"].family == "gating" and found["halved"].family == plugins.PLUGIN_FAMILY
    assert MECHANISMS["halved"].defaults["scale"] == 0.5
    sys.modules.pop("presets_h7", None)


def test_an_installed_name_may_not_take_a_built_in_one(plugs, tmp_path):
    _on_path(plugs)
    _on_path(dist_info(tmp_path, "h7-clash", {"glore": f"{BLOCKS}:Good"}))
    assert MECHANISMS["glore"].package == ""  # the built-in is never replaced
    with pytest.raises(plugins.PluginError, match="'glore' is the name of a built-in mechanism"):
        installed_presets()


def test_a_broken_entry_point_names_its_package(plugs, tmp_path):
    _on_path(plugs)
    _on_path(dist_info(tmp_path, "h7-broken", {"broken_ep": "broken_h7:Thing"}))
    with pytest.raises(plugins.PluginError) as err:
        MECHANISMS["broken_ep"]
    text = err.value.paragraph()
    assert "'broken_ep' of package 'h7-broken'" in text and "fails to load" in text and "this module is broken" in text
    assert "glore" in MECHANISMS  # a built-in never loads entry points


# -- the command line: every bad plugin exits 2 with one paragraph -------------------------------------

STUDY = """
name: plugin_case
model:
  backbone: {{name: small_cnn, width: 8, depth: 2}}
  mechanism: {mechanism}
data: {{name: synthetic, task: global_cue, train_images: 32, val_images: 16}}
train: {{epochs: 1, batch_size: 16, threads: 1}}
factors:
  mechanism: [{mechanism}, none]
seeds: 1
tracking: {{wandb: false}}
"""


def _ablate(args: list[str], cwd: Path, pythonpath: list[Path] = (), timeout: int = 300):
    env = {**os.environ, "WANDB_MODE": "offline"}
    env.pop(plugins.PATH_ENV, None)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *map(str, pythonpath)])
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


CLI_CASES = {  # mechanism -> words the paragraph must hold
    "no_such_module_h7:Block": ["'no_such_module_h7:Block'", "there is no module 'no_such_module_h7'"],
    "broken_h7:Block": ["'broken_h7:Block'", "importing module 'broken_h7' failed", "this module is broken"],
    f"{BLOCKS}:Missing": [f"'{BLOCKS}:Missing'", "has no attribute 'Missing'"],
    f"{BLOCKS}:NOT_A_BLOCK": [f"'{BLOCKS}:NOT_A_BLOCK'", "not a block class"],
    f"{BLOCKS}:WrongShape": [f"'{BLOCKS}:WrongShape'", "(2, 1, 8, 8)"],
    f"{BLOCKS}:Raises": [f"'{BLOCKS}:Raises'", "boom inside forward"],
    f"{BLOCKS}:NoDefault": [f"'{BLOCKS}:NoDefault'", "argument 'k' has no default"],
    "broken_ep": ["'broken_ep' of package 'h7-broken'", "fails to load"],
}


@pytest.mark.parametrize("mechanism", sorted(CLI_CASES))
def test_a_bad_plugin_exits_2_with_a_paragraph_and_no_traceback(plugs, tmp_path, mechanism):
    (tmp_path / "study.yaml").write_text(STUDY.format(mechanism=mechanism))
    for name in (BLOCKS, "broken_h7"):  # next to the study, as a user's own module would be
        (tmp_path / f"{name}.py").write_text((plugs / f"{name}.py").read_text())
    dist_info(tmp_path / "site", "h7-broken", {"broken_ep": "broken_h7:Thing"})
    proc = _ablate(["ablate.run", "study.yaml", "--dry-run"], tmp_path, [tmp_path / "site"])
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("error in ")
    flat = " ".join(proc.stderr.split())
    for words in CLI_CASES[mechanism]:
        assert words in flat, flat
    assert flat.endswith("Nothing was run.")


def test_a_module_next_to_the_study_is_found_from_any_folder(plugs, tmp_path):
    folder, elsewhere = tmp_path / "study_folder", tmp_path / "elsewhere"
    folder.mkdir(), elsewhere.mkdir()
    (folder / f"{BLOCKS}.py").write_text((plugs / f"{BLOCKS}.py").read_text())
    (folder / "study.yaml").write_text(STUDY.format(mechanism=f"{BLOCKS}:built"))
    proc = _ablate(["ablate.run", str(folder / "study.yaml"), "--dry-run"], elsewhere)
    assert proc.returncode == 0, proc.stderr
    assert f"mechanism={BLOCKS}:built" in proc.stdout


def test_a_study_file_takes_a_task_and_a_backbone_plugin_and_varies_their_options(plugs, tmp_path):
    (tmp_path / f"{BLOCKS}.py").write_text((plugs / f"{BLOCKS}.py").read_text())
    (tmp_path / "study.yaml").write_text(textwrap.dedent(f"""
        name: plugin_data
        model:
          backbone: {{name: "{BLOCKS}:TinyNet", width: 8}}
          mechanism: none
        data: {{name: "{BLOCKS}:halves", size: 16, train_images: 16, val_images: 8}}
        train: {{epochs: 1, batch_size: 8, threads: 1}}
        factors:
          data.noise: [0.1, 0.5]
          backbone.depth: [2, 3]
        seeds: 1
    """))
    proc = _ablate(["ablate.run", "study.yaml", "--dry-run"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "4 cells x 1 seeds" in proc.stdout
    bad = (tmp_path / "study.yaml").read_text().replace("data.noise: [0.1, 0.5]", "data.noise: [0.1, loud]")
    (tmp_path / "study.yaml").write_text(bad)
    proc = _ablate(["ablate.run", "study.yaml", "--dry-run"], tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "data.noise" in proc.stderr


def test_a_search_samples_plugin_options_by_their_kind(plugs, tmp_path):
    from optuna.distributions import FloatDistribution, IntDistribution

    from ablate.study.load import load_study

    study = tmp_path / "search.yaml"
    study.write_text(textwrap.dedent(f"""
        model: {{backbone: {{name: "{BLOCKS}:TinyNet"}}, mechanism: none}}
        data: {{name: "{BLOCKS}:halves", size: 16, train_images: 16, val_images: 8}}
        factors: {{backbone.width: {{low: 4, high: 12}}, data.noise: {{low: 0.05, high: 0.5}}}}
        search: {{n_trials: 3, sampler: random}}
    """))
    (tmp_path / f"{BLOCKS}.py").write_text((plugs / f"{BLOCKS}.py").read_text())
    dists = load_study(study).distributions()
    assert isinstance(dists["backbone.width"], IntDistribution) and isinstance(dists["data.noise"], FloatDistribution)
    study.write_text(study.read_text().replace("high: 12}", "high: 12.5}"))
    with pytest.raises(StudyError, match="backbone.width takes integers"):
        load_study(study)


# -- tasks and backbones ------------------------------------------------------------------------------

def test_a_task_plugin_is_validated_and_drawn_like_the_synthetic_tasks(plugs, tmp_path):
    where = str(plugs / "study.yaml")
    spec = plugins.task_spec({"name": f"{BLOCKS}:halves", "size": 16, "train_images": 6, "val_images": 4,
                              "noise": 0.2}, where)
    assert spec.as_dict() == {"name": f"{BLOCKS}:halves", "size": 16, "train_images": 6, "val_images": 4,
                              "seed": 0, "noise": 0.2, "flip": False}
    assert plugins.task_spec_from_dict(spec.as_dict()) == spec
    (xt, yt), (xv, yv), classes = plugins.task_data(spec.as_dict())
    assert classes == 3 and xt.shape == (6, 3, 16, 16) and xt.dtype == torch.float32 and yv.shape == (4, 16, 16)
    assert yt.dtype == torch.int64 and set(yt.unique().tolist()) == {1, 2}
    assert not torch.equal(xt[:4], xv)  # train and val come from their own streams
    plugins_tasks._splits.cache_clear()
    again = plugins.task_data(spec.as_dict())
    assert torch.equal(again[0][0], xt) and torch.equal(again[1][0], xv)  # the same seed, the same images
    flipped = plugins.task_spec({"flip": "on"}, where, base=spec)  # a data.flip factor over the base
    assert dict(flipped.options)["flip"] is True and flipped.size == 16


@pytest.mark.parametrize("raw, key, words", [
    ({"name": f"{BLOCKS}:halves", "colour": 1}, "data.colour", "valid keys here are: name, size"),
    ({"name": f"{BLOCKS}:halves", "noise": "loud"}, "data.noise", "expected a finite number"),
    ({"name": f"{BLOCKS}:halves", "size": 4}, "data.size", "an integer >= 8"),
    ({"name": f"{BLOCKS}:out_of_range"}, "data.name", "holds 7, outside 0 .. 2"),
    ({"name": f"{BLOCKS}:no_classes"}, "data.name", "num_classes"),
    ({"name": f"{BLOCKS}:Nope"}, "data.name", "has no attribute 'Nope'"),
])
def test_a_bad_task_names_the_key(plugs, raw, key, words):
    with pytest.raises(StudyError) as err:
        plugins.task_spec(raw, str(plugs / "study.yaml"))
    assert err.value.key == key and words in err.value.message


def test_a_backbone_plugin_is_validated_and_measured(plugs):
    where = str(plugs / "study.yaml")
    spec = plugins.backbone_spec({"name": f"{BLOCKS}:TinyNet", "width": 12}, where)
    assert spec.as_dict() == {"name": f"{BLOCKS}:TinyNet", "width": 12, "depth": 2}
    assert plugins.backbone_geometry(spec.as_dict()) == (12, 2)
    net = plugins.build_backbone(spec.as_dict())
    assert net(torch.zeros(1, 3, 16, 16)).shape == (1, 12, 8, 8)
    deeper = plugins.backbone_spec({"depth": 3}, where, base=spec)
    assert deeper.as_dict()["depth"] == 3 and deeper.as_dict()["width"] == 12
    with pytest.raises(StudyError, match="stride=4 the contract is"):
        plugins.backbone_spec({"name": f"{BLOCKS}:LyingNet"}, where)
    with pytest.raises(StudyError) as err:
        plugins.backbone_spec({"name": f"{BLOCKS}:TinyNet", "width": 1.5}, where)
    assert err.value.key == "model.backbone.width"


def test_a_trial_trains_with_a_plugin_task_backbone_and_mechanism(plugs):
    """What a study's trial config gives the trainer: each of the three by module:attr."""
    from ablate.trainer.trial import run_trial

    _on_path(plugs)
    config = {"study": "t", "cell": {}, "cell_key": "k", "seed": 0,
              "mechanism": f"{BLOCKS}:built", "args": {"gain": 1.0},
              "backbone": {"name": f"{BLOCKS}:TinyNet", "width": 8, "depth": 2},
              "data": {"name": f"{BLOCKS}:halves", "size": 16, "train_images": 16, "val_images": 8, "seed": 0,
                       "noise": 0.1, "flip": False},
              "train": {"epochs": 2, "batch_size": 8, "lr": 0.01, "weight_decay": 0.0, "threads": 1},
              "head": {"channels": 0, "aux_weight": 0.0}, "metric": "val_miou",
              "trainer": {"accelerator": "cpu", "devices": 1, "strategy": "auto", "num_nodes": 1}}
    result = run_trial(config)
    assert len(result["curve"]) == 2 and len(result["class_iou"]) == 3  # the task's num_classes
    assert result["val_pixels"] == 8 * 16 * 16
    assert result["attention_params"] == 8 * 8 + 8  # Good's 1x1 conv at the backbone's 8 channels


# -- the worked example, end to end --------------------------------------------------------------------

def test_the_example_block_keeps_the_contract_and_starts_as_the_identity():
    _on_path(EXAMPLE)
    preset = resolve_mechanism("my_attention.blocks:GatedContext")
    x = torch.randn(2, 16, 6, 6)
    for gate in ("pixel", "channel", "none"):
        block = preset.build(16, gate=gate).eval()
        assert torch.equal(block(x), x)  # zero-initialised context: the identity at first
        assert preset.build(16, gate=gate, zero_init=False)(x).shape == x.shape


@pytest.mark.slow
def test_a_module_attr_mechanism_runs_beside_a_built_in_without_any_install(plugs, tmp_path):
    (tmp_path / f"{BLOCKS}.py").write_text((plugs / f"{BLOCKS}.py").read_text())
    (tmp_path / "study.yaml").write_text(STUDY.format(mechanism=f"{BLOCKS}:built"))
    proc = _ablate(["ablate.run", "study.yaml", "--run-dir", "run", "--reports-dir", "reports", "--threads", "1"],
                   tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = (tmp_path / "reports" / "plugin_case.md").read_text()
    assert f"mechanism={BLOCKS}:built" in report and "mechanism=none" in report


@pytest.mark.slow
def test_the_installed_example_study_runs_and_reports_the_plugin(tmp_path):
    site = dist_info(tmp_path / "site", "ablate-my-attention", {"gated_context": "my_attention.blocks:GatedContext"})
    study = str(EXAMPLE / "study.yaml")
    dry = _ablate(["ablate.run", study, "--dry-run"], tmp_path, [site, EXAMPLE])
    assert dry.returncode == 0, dry.stderr
    assert "3 cells x 2 seeds" in dry.stdout and "mechanism=gated_context" in dry.stdout
    small = ["train.epochs=1", "seeds=1", "data.train_images=32", "data.val_images=16"]
    run = _ablate(["ablate.run", study, *small, "--run-dir", "run", "--reports-dir", "reports", "--threads", "1"],
                  tmp_path, [site, EXAMPLE], timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    (report,) = (tmp_path / "reports").glob("my_attention-*.md")
    rows = [line for line in report.read_text().splitlines() if line.startswith("| mechanism=")]
    assert {r.split("|")[1].strip() for r in rows} >= {"mechanism=gated_context", "mechanism=gcnet", "mechanism=none"}


def test_ablate_list_shows_the_installed_example_with_its_package(tmp_path):
    site = dist_info(tmp_path / "site", "ablate-my-attention", {"gated_context": "my_attention.blocks:GatedContext"})
    proc = _ablate(["ablate", "list"], tmp_path, [site, EXAMPLE])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.split()[:1] == ["gated_context"])
    assert "package: ablate-my-attention" in lines[at + 1] and lines[at + 2].split() == ["code:", "my_attention.blocks"]
    assert any(line.split()[:3] == ["gate", "=", "pixel"] for line in lines[at:at + 8])
