"""The ``ablate`` command line: subcommands, command-line overrides of a study, smoke mode."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ablate.config.errors import StudyError
from ablate.study.overrides import apply_overrides, effective_yaml, load_with_overrides, override_digest
from ablate.run.smoke import smoke_overrides, smoke_transform
from ablate.study.load import MAX_NAME_CHARS, load_study
from ablate.config.text import read_study

from support import REPO, base_study, tiny_study

GCN = str(REPO / "studies" / "gcn_effect.yaml")
ENV = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}


def ablate(*args, cwd=None, timeout=180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ablate", *map(str, args)], cwd=cwd or REPO, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def write(tmp_path: Path, study: dict, name: str = "case.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


# ---------------------------------------------------------------- subcommands

def test_each_command_dispatches_to_its_module_function():
    import ablate.costs.blocks
    import ablate.report.build
    import ablate.run.command
    import ablate_kernels.bench
    from ablate.__main__ import COMMANDS, _command, list_main

    assert set(COMMANDS) == {"run", "report", "list", "doctor", "costs", "estimate", "bench", "submit", "status"}
    assert _command("report") is ablate.report.main and _command("costs") is ablate.costs.main
    assert _command("bench") is ablate_kernels.bench.main and _command("list") is list_main
    doctor = pytest.importorskip("ablate.doctor")
    assert _command("doctor") is getattr(doctor, "main", None)
    import ablate.run.estimate

    assert _command("estimate") is ablate.run.estimate.main


def test_a_command_whose_module_is_missing_exits_2_with_a_message(monkeypatch, capsys):
    from ablate import __main__ as cli

    monkeypatch.setitem(cli.COMMANDS, "doctor", ("ablate.no_such_module_here", "main"))
    assert cli.main(["doctor"]) == 2
    err = capsys.readouterr().err
    assert "ablate doctor is not available" in err and "ablate.no_such_module_here" in err


@pytest.mark.parametrize("cmd,usage", [("run", "study"), ("report", "study"), ("list", "--channels"), ("doctor", "STUDY"),
                                       ("costs", "--mechanisms"), ("bench", "--ops")])
def test_each_command_has_help(cmd, usage):
    proc = ablate(cmd, "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage:") and usage in proc.stdout and "Traceback" not in proc.stderr


def test_top_level_help_names_every_command():
    from ablate.__main__ import COMMANDS

    proc = ablate("--help")
    assert proc.returncode == 0
    for cmd in COMMANDS:
        assert re.search(rf"^  {cmd}\b", proc.stdout, re.M), cmd


def test_unknown_command_exits_2_with_the_valid_list():
    proc = ablate("frobnicate")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "unknown command 'frobnicate'" in proc.stderr
    assert "run, report, list, doctor, costs, estimate, bench" in proc.stderr


def test_the_console_script_is_installed_and_runs():
    script = Path(sys.executable).parent / "ablate"
    if not script.exists():
        pytest.skip("the ablate console script is not installed next to this python")
    proc = subprocess.run([str(script), "list"], capture_output=True, text=True, env=ENV, timeout=120)
    assert proc.returncode == 0 and "glore" in proc.stdout


def test_a_closed_pipe_ends_quietly():
    """``ablate list | head -3``: the reader has gone before the first write, deterministically."""
    read, wr = os.pipe()
    os.close(read)
    try:
        proc = subprocess.run([sys.executable, "-m", "ablate", "list"], stdout=wr, stderr=subprocess.PIPE,
                              env=ENV, text=True, timeout=120)
    finally:
        os.close(wr)
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
    assert proc.returncode == 141


# ---------------------------------------------------------------- overrides

@pytest.mark.parametrize("text", ["3", "3.0", "0.001", "1e-3", "on", "off", "yes", "null", "glore", "'3'",
                                  "[0, 1]", "{K: 8, gcn: off}", "[on, 2, x]", "-1", "0x10"])
def test_override_values_are_typed_as_the_same_text_in_the_file(tmp_path, text):
    in_file = tmp_path / "v.yaml"
    in_file.write_text(f"x: {text}\n")
    assert apply_overrides({}, [f"x={text}"], "s.yaml")["x"] == read_study(in_file, "v.yaml")["x"]


def test_overrides_set_nested_keys_and_validate_like_the_file():
    plain = load_study(GCN)
    study = load_with_overrides(GCN, ["train.epochs=3", "seeds=2", "model.args.K=32"])
    assert study.train.epochs == 3 and plain.train.epochs != 3
    assert study.seeds == (0, 1)  # a count, as `seeds: 2` in the file
    assert dict(study.args)["K"] == 32 and all(dict(c.args)["K"] == 32 for c in study.cells() if c.mechanism == "glore")
    assert [c.title() for c in study.cells()] == [c.title() for c in plain.cells()]
    assert not {c.key for c in study.cells()} & {c.key for c in plain.cells()}  # other trials, other keys
    assert study.path == GCN


def test_overrides_leave_the_raw_mapping_and_the_file_alone(tmp_path):
    path = write(tmp_path, base_study())
    before = path.read_text()
    raw = read_study(path, str(path))
    copy = json.loads(json.dumps(raw))
    apply_overrides(raw, ["train.epochs=5", "factors.gcn=[on]"], str(path))
    assert raw == copy and path.read_text() == before


def test_factor_names_with_a_dot_are_one_key(tmp_path):
    raw = read_study(REPO / "studies" / "zoo.yaml", "zoo.yaml")
    out = apply_overrides(raw, ["factors.data.task=[local]", "factors.mechanism=[none, senet]"], "zoo.yaml")
    assert out["factors"] == {"mechanism": ["none", "senet"], "data.task": ["local"]}
    new = apply_overrides(base_study(), ["factors.train.lr=[0.01, 0.02]", "references=[{mechanism: none}]",
                                         "references[0].train.epochs=2"], "s.yaml")
    assert new["factors"]["train.lr"] == [0.01, 0.02]
    assert new["references"] == [{"mechanism": "none", "train.epochs": 2}]
    path = write(tmp_path, base_study())
    study = load_with_overrides(path, ["factors.train.lr=[0.01, 0.02]"])
    assert sorted(c.train.lr for c in study.cells()) == [0.01, 0.01, 0.02, 0.02]


def test_a_missing_section_is_made_and_checked_by_validation(tmp_path):
    path = write(tmp_path, base_study())
    assert load_with_overrides(path, ["model.head.channels=16"]).head.channels == 16
    with pytest.raises(StudyError) as e:
        load_with_overrides(path, ["model.head.chanels=16"])
    assert e.value.key == "model.head.chanels" and "valid keys here are" in e.value.message
    assert "model.head.chanels=16" in e.value.message


@pytest.mark.parametrize("override,key,words", [
    ("train.epochs=0", "train.epochs", "out of range"),
    ("seeds.x=1", "seeds", "not a mapping"),
    ("seeds[7]=1", "seeds", "index of an existing item"),
    ("model.args={K: 8", "model.args", "not a valid YAML value"),
    ("train.lr=.inf", "train.lr", "not a finite number"),
    ("train..epochs=3", "train..epochs", "malformed key"),
    ("trian.epochs=3", "trian", "unknown key"),
    ("model.args.Q=3", "model.args.Q", "has no factor"),
])
def test_a_bad_override_names_the_override_and_the_key(tmp_path, override, key, words):
    path = write(tmp_path, {**base_study(), "seeds": [0, 1]})
    with pytest.raises(StudyError) as e:
        load_with_overrides(path, [override])
    assert e.value.key == key and words in e.value.message and e.value.where == str(path)
    assert override in e.value.paragraph()


def test_an_override_without_equals_is_refused(tmp_path):
    path = write(tmp_path, base_study())
    with pytest.raises(StudyError, match="has no '='"):
        load_with_overrides(path, ["train.epochs"])


def test_a_bad_override_on_the_command_line_exits_2_without_a_traceback(tmp_path):
    path = write(tmp_path, base_study())
    proc = ablate("run", path, "train.epochs=-2", "--smoke", "--dry-run", cwd=tmp_path)
    err = " ".join(proc.stderr.split())  # one paragraph, wrapped at 100 columns
    assert proc.returncode == 2 and "Traceback" not in err
    assert "key 'train.epochs'" in err and "'train.epochs=-2'" in err and err.endswith("Nothing was run.")


def test_ablate_run_takes_overrides_and_dry_run_prints_the_effective_study(tmp_path):
    path = write(tmp_path, base_study())
    proc = ablate("run", path, "--dry-run", "train.epochs=3", "seeds=1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    digest = override_digest(["train.epochs=3", "seeds=1"], str(path))
    assert f"study case-o{digest}: 2 cells x 1 seeds" in proc.stdout and "epochs: 3" in proc.stdout
    bad = ablate("run", path, "train.epochs=x", "--dry-run", cwd=tmp_path)
    assert bad.returncode == 2 and "'train.epochs=x'" in " ".join(bad.stderr.split()) and "Traceback" not in bad.stderr


def test_an_overridden_study_gets_its_own_stable_name(tmp_path):
    path = write(tmp_path, base_study())
    a = load_with_overrides(path, ["train.epochs=3", "seeds=1"]).name
    assert re.fullmatch(r"case-o[0-9a-f]{8}", a)
    assert load_with_overrides(path, ["seeds=1", "train.epochs=3"]).name == a  # order of independent keys
    assert load_with_overrides(path, ["train.epochs=2", "seeds=1", "train.epochs=3"]).name == a  # last wins
    assert load_with_overrides(path, ["train.epochs=4", "seeds=1"]).name != a
    long = write(tmp_path, {**base_study(), "name": "n" * MAX_NAME_CHARS}, "long.yaml")
    assert len(load_with_overrides(long, ["seeds=1"]).name) <= MAX_NAME_CHARS
    assert load_with_overrides(path, ["name=mine", "seeds=1"]).name == "mine"
    with pytest.raises(StudyError, match="own name"):
        load_with_overrides(path, ["name=case", "seeds=1"])


def test_overrides_are_recorded_in_every_trial_config(tmp_path):
    path = write(tmp_path, base_study())
    study = load_with_overrides(path, ["train.epochs=3", "seeds=[5]"])
    configs = [study.trial_config(c, s) for c, s in study.trials()]
    assert len(configs) == 2 and all(c["overrides"] == ["train.epochs=3", "seeds=[5]"] for c in configs)
    assert all(c["study"] == study.name and c["train"]["epochs"] == 3 and c["seed"] == 5 for c in configs)
    plain = load_study(path)
    assert "overrides" not in plain.trial_config(*plain.trials()[0])


def test_effective_yaml_is_the_study_that_runs(tmp_path):
    path = write(tmp_path, base_study())
    text = effective_yaml(path, ["train.epochs=3", "model.args.K=8"])
    assert text.startswith(f"# effective study: {path} with train.epochs=3 model.args.K=8\n")
    again = write(tmp_path, yaml.safe_load(text), "again.yaml")
    assert load_study(again).cells() == load_with_overrides(path, ["train.epochs=3", "model.args.K=8"]).cells()


# ---------------------------------------------------------------- smoke mode

@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "studies").glob("*.yaml")))
def test_smoke_makes_every_shipped_study_one_seed_one_round_few_batches(name):
    path = REPO / "studies" / name
    plain = load_study(path, check_files=False)
    smoke = load_with_overrides(path, [], check_files=False, smoke=True)
    assert len(smoke.seeds) == 1 and smoke.seeds[0] == plain.seeds[0]
    assert smoke.name == f"{plain.name}-smoke"
    cells = smoke.cells()
    assert [c.title() for c in cells] == [c.title() for c in plain.cells()]  # every cell, once
    for c in cells:
        assert (c.train.iterations, c.train.epochs) == (2, 1) if c.train.iterations else c.train.epochs == 1
        steps = -(-c.data.train_images // c.train.batch_size)
        assert 1 <= c.data.train_images and steps <= 2, (c.title(), c.data.train_images)
        assert 1 <= c.data.val_images <= c.train.batch_size


@pytest.mark.parametrize("refs", [[{"mechanism": "none", "train.epochs": 5}],
                                  [{"gcn": True, "train.epochs": 30, "data.train_images": 40}]])
def test_smoke_keeps_cells_that_vary_rounds_and_sizes_apart(tmp_path, refs):
    raw = {**base_study(), "factors": {"gcn": [True, False], "train.epochs": [10, 30],
                                       "data.train_images": [512, 1536]},
           "references": refs, "train": {"epochs": 8, "batch_size": 32}}
    path = write(tmp_path, raw)
    plain, smoke = load_study(path).cells(), load_with_overrides(path, [], smoke=True).cells()
    assert [[k for k, _ in c.label] for c in smoke] == [[k for k, _ in c.label] for c in plain]
    assert len({c.key for c in smoke}) == len(smoke) == len(plain)  # every cell, no two merged
    assert min(c.train.epochs for c in smoke) == 1 and max(c.train.epochs for c in smoke) <= 3
    for a in range(len(plain)):  # the rounds and sizes keep their order
        for b in range(len(plain)):
            for get in (lambda c: c.train.epochs, lambda c: c.data.train_images):
                if get(plain[a]) < get(plain[b]):
                    assert get(smoke[a]) < get(smoke[b])
    assert all(c.data.train_images <= 2 * 32 + 2 and c.data.val_images <= 8 for c in smoke)


def test_smoke_dry_run_shows_what_smoke_mode_changes(tmp_path):
    path = write(tmp_path, base_study())
    proc = ablate("run", path, "--smoke", "--dry-run", "model.args.K=8", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    head = proc.stdout.split("\nstudy ")[0]
    assert f"# effective study: {path} with model.args.K=8 --smoke" in head
    assert "# smoke mode sets: seeds=[0] train.epochs=1 data.train_images=8 data.val_images=4" in head
    digest = override_digest(["model.args.K=8"], str(path))
    assert f"study case-o{digest}-smoke: 2 cells x 1 seeds = 2 trials (1 epochs each)" in proc.stdout
    assert not list(tmp_path.glob("*/")) and not (tmp_path / "reports").exists()  # nothing made


def test_smoke_transform_leaves_what_it_does_not_shrink():
    raw = {**base_study(), "trainer": {"accelerator": "cpu"}, "pruner": "median", "seeds": [7, 8]}
    out = smoke_transform(raw, "s.yaml")
    assert out["seeds"] == [7] and out["train"]["epochs"] == 1
    assert {k: v for k, v in out.items() if k not in ("seeds", "train", "data")} == \
        {k: v for k, v in raw.items() if k not in ("seeds", "train", "data")}
    assert {k: v for k, v in out["train"].items() if k != "epochs"} == {k: v for k, v in raw["train"].items()
                                                                        if k != "epochs"}


def test_smoke_refuses_a_val_interval_factor():
    raw = {**base_study(), "train": {"iterations": 100, "batch_size": 4}, "factors": {"train.val_interval": [10, 50]}}
    with pytest.raises(StudyError, match="val_interval"):
        smoke_overrides(raw, "s.yaml")


def test_smoke_runs_a_study_end_to_end_in_a_throwaway_folder(tmp_path):
    path = tiny_study(tmp_path, data={"train_images": 512, "val_images": 256}, train={"epochs": 5})
    proc = ablate("run", path, "train.lr=0.01", "--smoke", cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "passed: 2 cells" in proc.stdout and "2 trials" in proc.stdout
    trials = [ln for ln in proc.stdout.splitlines() if ln.startswith("trial ") and "val mIoU" in ln]
    assert len(trials) == 2  # one seed of each cell (the header line explains the unit)
    folder = Path(re.search(r"in (\S+ablate-smoke-[^\s;]+)", proc.stdout).group(1))
    assert not folder.exists()  # thrown away once every trial passed
    assert not (tmp_path / "reports").exists() and not (tmp_path / "runs").exists()


def test_smoke_into_a_run_dir_keeps_it_and_refuses_one_in_use(tmp_path):
    path = tiny_study(tmp_path)
    keep = tmp_path / "keep"
    proc = ablate("run", path, "--smoke", "--run-dir", keep, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "passed: 2 cells" in proc.stdout and (keep / "tiny-smoke.yaml").exists()
    assert load_study(keep / "tiny-smoke.yaml").seeds == (0,)  # the effective study, loadable as it is
    again = ablate("run", path, "--smoke", "--run-dir", keep, cwd=tmp_path)
    assert again.returncode == 2 and "not an empty folder" in " ".join(again.stderr.split())
    assert "Traceback" not in again.stderr


# ---------------------------------------------------------------- ablate list and installed plugins

def _fake_entry_points(monkeypatch, load):
    """One installed entry point, scaled_demo of package demo-attention, whose load() is ``load(block)``."""
    import torch

    from ablate.plugins import mechanisms as plugins

    class Scaled(torch.nn.Module):
        """a per-channel learnable scale (test plugin)"""

        def __init__(self, channels: int, gain: float = 1.0, learn: bool = True):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.full((1, channels, 1, 1), gain), requires_grad=learn)

        def forward(self, x):
            return x * self.scale

    class Dist:
        name = "demo-attention"

    class EntryPoint:
        name, value, dist = "scaled_demo", "demo_attention.blocks:Scaled", Dist()

        def load(self):
            return load(Scaled)

    monkeypatch.setattr(plugins, "_entry_points", lambda: [EntryPoint()])
    monkeypatch.setattr(plugins, "_RESOLVED", {})


def test_list_shows_installed_presets_marked_with_their_package(monkeypatch, capsys):
    from ablate.__main__ import main

    _fake_entry_points(monkeypatch, lambda block: block)
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    block = out[out.index("  scaled_demo "):]
    assert block.startswith("  scaled_demo          a per-channel learnable scale (test plugin)\n")
    assert "package: demo-attention" in block.splitlines()[1]
    assert "gain = 1.0" in block and "learn = on" in block  # factors from its annotated keywords
    assert out.index("  none ") < out.index("  scaled_demo ")  # after the built-ins


def test_list_with_a_broken_installed_plugin_exits_2_naming_it(monkeypatch, capsys):
    from ablate.__main__ import main

    def broken(block):
        raise ImportError("No module named 'demo_attention_dependency'")

    _fake_entry_points(monkeypatch, broken)
    assert main(["list"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "'scaled_demo'" in err and "demo-attention" in err and "demo_attention_dependency" in err
    assert "Traceback" not in err


def test_an_overridden_run_has_its_own_folder_and_records_the_overrides(tmp_path):
    import optuna

    from ablate.storage import records as st

    path = tiny_study(tmp_path)
    overrides = ["train.epochs=1", "seeds=[3]", "data.train_images=32"]
    proc = ablate("run", path, *overrides, "--no-report", "--no-wandb", cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    name = f"tiny-o{override_digest(overrides, str(path))}"
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [name]  # not runs/tiny
    store = st.open_storage(st.storage_url(tmp_path / "runs" / name, None))
    trials = optuna.load_study(study_name=name, storage=store).get_trials()
    configs = [json.loads(t.user_attrs["config"]) for t in trials]
    assert len(configs) == 2 and all(c["overrides"] == overrides and c["seed"] == 3 for c in configs)
    assert all(c["train"]["epochs"] == 1 and c["data"]["train_images"] == 32 for c in configs)
