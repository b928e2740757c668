"""The health pre-flight (ablate/doctor/check.py): each warning fires on a block built to trigger it,
real presets get their by-design notes, and the command line behaves."""
from __future__ import annotations

import io
import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from ablate.doctor import check as doctor
from ablate.attention import MECHANISMS, get_preset
from ablate.config.vocab import Preset
from support import REPO, base_study

C, SIDE = 16, 8  # small blocks: the doctor's checks do not depend on the size


def codes(findings, severity=None) -> list[str]:
    return [f.code for f in findings if severity is None or f.severity == severity]


def of(findings, code):
    return [f for f in findings if f.code == code]


# ---- deliberately broken blocks -------------------------------------------------------------


class Unused(nn.Module):
    """A residual 1x1 conv plus a layer the forward never calls."""

    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1)
        self.forgotten = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        return x + self.conv(x)


class Narrow(nn.Module):
    """An SE-style bottleneck of width 2 that says so in ``widths``."""

    def __init__(self, channels, width=2):
        super().__init__()
        self.down, self.up = nn.Conv2d(channels, width, 1), nn.Conv2d(width, channels, 1)
        self.widths = {"bottleneck": width}

    def forward(self, x):
        return x * torch.sigmoid(self.up(torch.relu(self.down(x.mean((2, 3), keepdim=True)))))


class PixelAttention(nn.Module):
    """softmax(gain * q_i . k_j) over the pixels; ``how`` picks the softmax call the block uses."""

    def __init__(self, channels, gain=1.0, how="torch"):
        super().__init__()
        self.q, self.k = nn.Conv2d(channels, channels, 1), nn.Conv2d(channels, channels, 1)
        self.gain, self.how = gain, how

    def forward(self, x):
        q, k, v = (t.flatten(2).transpose(1, 2) for t in (self.q(x), self.k(x), x))
        if self.how == "sdpa":
            y = F.scaled_dot_product_attention(q, k, v, scale=self.gain)
        else:
            s = self.gain * q @ k.transpose(1, 2)
            a = {"torch": lambda: torch.softmax(s, -1), "F": lambda: F.softmax(s, dim=-1),
                 "method": lambda: s.softmax(-1)}[self.how]()
            y = a @ v
        return x + y.transpose(1, 2).reshape(x.shape)


class Poisoned(nn.Module):
    """A block whose output is NaN wherever its input is 0 (0 * log 0)."""

    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        return self.conv(x) + x * torch.log(x)


class Gated(nn.Module):
    """conv -> BN with gamma 0 -> residual: the conv gets no gradient at init, by design."""

    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1, bias=False)
        self.norm = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.norm.weight)

    def forward(self, x):
        return x + self.norm(self.conv(x))


class Frozen(nn.Module):
    """A conv multiplied by a zero *buffer*: its gradient is zero and no parameter explains it."""

    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1, bias=False)
        self.register_buffer("off", torch.zeros(1))

    def forward(self, x):
        return x + self.off * self.conv(x)


class BiasBeforeNorm(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1)  # its bias is removed by the BN
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x):
        return x + self.norm(self.conv(x))


class ScaleCancelled(nn.Module):
    """conv -> BN -> ReLU, each channel L2-normalised over the pixels: with the BN's shift at 0
    its scale cancels, so the scale's gradient is zero at init (and not after the shift moves)."""

    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1, bias=False)
        self.norm = nn.BatchNorm2d(channels)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        z = F.normalize(torch.relu(self.norm(self.conv(x))).flatten(2), dim=2).reshape(x.shape)
        return x + self.out(z)


def test_a_scale_cancelled_while_its_shift_is_zero_is_info_naming_the_shift():
    found = doctor.check_block(ScaleCancelled(C), C, SIDE)
    (f,) = of(found, "zero-init")
    assert "`norm.weight`" in f.message and "`norm.bias` starts at zero" in f.message
    assert not codes(found, "warning")


def test_a_parameter_the_forward_never_uses_is_a_warning_naming_it():
    found = doctor.check_block(Unused(C), C, SIDE, name="unused")
    (f,) = of(found, "no-grad")
    assert f.severity == "warning" and "`forgotten`" in f.message and "`conv`" not in f.message
    assert codes(found, "warning") == ["no-grad"]


def test_a_width_2_bottleneck_is_a_warning_naming_the_reduction_factor():
    found = doctor.check_block(Narrow(C), C, SIDE, args={"reduction": 8})
    (f,) = of(found, "narrow")
    assert f.severity == "warning" and "`bottleneck` is 2" in f.message and "`reduction` (8)" in f.message
    assert not of(doctor.check_block(Narrow(C, width=4), C, SIDE), "narrow")


@pytest.mark.parametrize("how", ["torch", "F", "method", "sdpa"])
def test_huge_logits_make_a_one_hot_warning_whatever_softmax_call_the_block_uses(how):
    torch.manual_seed(0)
    found = doctor.check_block(PixelAttention(C, gain=1e4, how=how), C, SIDE, args={"scale": False})
    (f,) = of(found, "one-hot")
    assert f.severity == "warning" and "`scale` (off)" in f.message and "rows of 64" in f.message
    assert "at test_doctor.py:" in f.message  # where the block computed it
    assert not of(found, "uniform")


@pytest.mark.parametrize("how", ["torch", "sdpa"])
def test_vanishing_logits_make_a_uniform_note(how):
    torch.manual_seed(0)
    found = doctor.check_block(PixelAttention(C, gain=1e-6, how=how), C, SIDE)
    (f,) = of(found, "uniform")
    # a note: faithful dot-product presets start this way, so it must not read as a fault
    assert f.severity == "info" and "entropy 1.0000" in f.message
    assert not of(found, "one-hot")


def test_moderate_logits_are_neither_one_hot_nor_uniform():
    torch.manual_seed(0)
    found = doctor.check_block(PixelAttention(C, gain=1.0), C, SIDE)  # mean largest weight 0.06 of 64
    assert not of(found, "one-hot") and not of(found, "uniform")


def test_nan_output_is_an_error():
    found = doctor.check_block(Poisoned(C), C, SIDE)
    assert "nonfinite" in codes(found, "error")
    assert not codes(doctor.check_block(Unused(C), C, SIDE), "error")


def test_a_block_that_raises_is_an_error_not_a_crash():
    class Broken(nn.Module):
        def forward(self, x):
            raise RuntimeError("shapes do not match")

    (f,) = doctor.check_block(Broken(), C, SIDE)
    assert (f.severity, f.code) == ("error", "failed") and "shapes do not match" in f.message


def test_a_zero_initialised_gain_explains_the_missing_gradient_as_info():
    found = doctor.check_block(Gated(C), C, SIDE, args={"zero_init": True})
    (f,) = of(found, "zero-init")
    assert f.severity == "info" and "`conv`" in f.message and "`norm.weight`" in f.message
    assert "`zero_init` (on)" in f.message
    assert not codes(found, "warning")


def test_a_zero_gradient_no_zero_initialised_parameter_explains_is_a_warning():
    found = doctor.check_block(Frozen(C), C, SIDE)
    assert codes(found, "warning") == ["zero-grad"] and "`conv.weight`" in of(found, "zero-grad")[0].message


def test_a_bias_a_batchnorm_removes_is_info():
    found = doctor.check_block(BiasBeforeNorm(C), C, SIDE)
    (f,) = of(found, "invariant")
    assert f.severity == "info" and "`conv`" in f.message
    assert not codes(found, "warning")


# ---- the statistics ------------------------------------------------------------------------


def test_map_stats_of_uniform_one_hot_and_masked_rows():
    n = 10
    uniform = doctor.map_stats(torch.full((3, n, n), 1.0 / n), 2, self_axis=1)
    assert uniform.entropy == pytest.approx(1.0) and uniform.max_weight == pytest.approx(1 / n)
    assert uniform.self_weight == pytest.approx(1 / n) and uniform.rows == 3 * n
    eye = doctor.map_stats(torch.eye(n).expand(2, n, n), 2, self_axis=1)
    assert eye.entropy == 0.0 and eye.max_weight == 1.0 and eye.self_weight == 1.0
    # uniform over the 4 unmasked entries of each row of 10: uniform for what the row may use
    logits = torch.zeros(5, n).masked_fill(torch.arange(n) >= 4, float("-inf"))
    masked = doctor.map_stats(torch.softmax(logits, -1), 1)
    assert masked.entropy == pytest.approx(1.0) and masked.max_weight == pytest.approx(0.25)
    assert masked.self_weight is None
    p = torch.softmax(torch.randn(4, 7), -1)
    expected = float((-(p * p.log()).sum(-1) / math.log(7)).mean())
    assert doctor.map_stats(p, 1).entropy == pytest.approx(expected, rel=1e-5)


def test_recording_restores_the_softmax_functions_and_sdpa_matches_an_explicit_map():
    before = (torch.softmax, F.softmax, torch.Tensor.softmax, F.scaled_dot_product_attention)
    q, k, v = torch.randn(2, 1, 12, 4), torch.randn(2, 1, 12, 4), torch.randn(2, 1, 12, 4)
    with pytest.raises(ValueError):
        with doctor.recording_softmax() as maps:
            F.scaled_dot_product_attention(q, k, v, scale=0.7)
            torch.softmax(q @ k.transpose(-1, -2) * 0.7, -1)
            raise ValueError("leaves the block")
    assert (torch.softmax, F.softmax, torch.Tensor.softmax, F.scaled_dot_product_attention) == before
    assert len(maps) == 2
    a, b = maps
    assert a.max_weight == pytest.approx(b.max_weight, rel=1e-5)
    assert a.entropy == pytest.approx(b.entropy, rel=1e-5)
    assert a.self_weight == pytest.approx(b.self_weight, rel=1e-5)


# ---- real presets --------------------------------------------------------------------------


def preset_findings(name, channels=32, side=16, **args):
    torch.manual_seed(0)
    preset = get_preset(name)
    resolved = preset.resolve(args)
    return doctor.check_block(preset.build(channels, **args), channels, side, name=name, mechanism=name,
                              args=resolved)


def test_nonlocal_zero_init_bn_is_by_design_info_naming_zero_init():
    found = preset_findings("nonlocal")
    (f,) = of(found, "zero-init")
    assert f.severity == "info" and "`zero_init` (on)" in f.message
    assert "`theta`" in f.message and "`phi`" in f.message
    assert not of(found, "no-grad") and not of(found, "zero-grad")
    # without the zero gamma the same parameters get gradient: no note at all
    assert not of(preset_findings("nonlocal", zero_init=False), "zero-init")


def test_emanet_input_conv_is_listed_by_design_and_only_with_moving_average_bases():
    (f,) = of(preset_findings("emanet"), "no-grad-by-design")
    assert f.severity == "info" and "`conv_in`" in f.message and "issue #14" in f.message
    learned = preset_findings("emanet", bases="learned")
    assert not of(learned, "no-grad-by-design") and not of(learned, "no-grad")


def test_gcnet_without_its_width_floor_gets_a_narrow_bottleneck_warning():
    (f,) = of(preset_findings("gcnet", min_width=1), "narrow")
    assert "`reduction` (16)" in f.message and "`min_width` (1)" in f.message
    assert not of(preset_findings("gcnet"), "narrow")


@pytest.mark.parametrize("name", ["glore", "nonlocal_dot", "senet", "cbam", "isa", "a2net", "danet_channel"])
def test_healthy_presets_get_no_warnings(name):
    found = preset_findings(name)
    assert not [f.line() for f in found if f.severity != "info"]


# ---- a study, the report lines, the runner's pre-flight and the command line ------------------


def write_study(tmp_path, **changes):
    study = base_study() | changes
    path = tmp_path / "case.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def test_check_study_builds_each_distinct_block_once(tmp_path, monkeypatch):
    from ablate.study.load import load_study

    study = load_study(write_study(tmp_path, factors={"data.task": ["global_cue", "pairing"],
                                                      "gcn": [True, False]}))
    calls = []
    real = doctor.check_block
    monkeypatch.setattr(doctor, "check_block", lambda *a, **k: calls.append(k["args"]) or real(*a, **k))
    found = doctor.check_study(study)
    assert len(study.cells()) == 4 and len(calls) == 2  # the task does not change the block
    assert {f.cell for f in found} <= {c.key for c in study.cells()}
    assert all(f.title for f in found)


def test_a_search_study_checks_its_base_block(tmp_path):
    from ablate.study.load import load_study

    study = load_study(write_study(tmp_path, factors={"K": {"low": 2, "high": 8}}, search={"n_trials": 4},
                                   baseline={}, model={**base_study()["model"], "args": {"K": 2}}))
    found = doctor.check_study(study)
    (f,) = of(found, "narrow")  # the base K = 2 nodes
    assert f.title == "(base)" and "`nodes` is 2" in f.message and "`K` (2)" in f.message


def test_summary_lines_name_each_kind_of_warning_with_its_cells_and_count_the_notes():
    findings = [doctor.Finding("a", "warning", "narrow", "width 2", "K=2", "glore"),
                doctor.Finding("b", "warning", "narrow", "width 3", "K=3", "glore"),
                doctor.Finding("a", "info", "zero-init", "gamma 0", "K=2", "glore")]
    lines = doctor.summary_lines(findings)
    assert "2 warnings, 1 info" in lines[0]
    (warning,) = [line for line in lines if "**warning**" in line]
    assert "inner widths below 4" in warning and "K=2; K=3" in warning
    assert lines[-1] == "- by design (info): zero-init (1 cells)."
    many = [doctor.Finding(str(i), "warning", "uniform", "flat", f"task={i}", "nonlocal") for i in range(6)]
    (line,) = [line for line in doctor.summary_lines(many) if "**warning**" in line]
    assert "`nonlocal` (6): 6 cells" in line
    assert doctor.summary_lines([]) == ["Health pre-flight (`python -m ablate.doctor`): no findings."]


def test_preflight_fails_only_on_a_hard_error(tmp_path, monkeypatch):
    from ablate.study.load import load_study

    monkeypatch.setitem(MECHANISMS, "poisoned", Preset("poisoned", Poisoned, {}, summary="test block: NaN output",
                                                           family="gating"))
    study = load_study(write_study(tmp_path, factors={"mechanism": ["glore", "poisoned"]}, baseline={}))
    out = io.StringIO()
    assert doctor.preflight(study, out) is False
    printed = out.getvalue()
    assert "error (mechanism=poisoned)" in printed and "NaN/Inf" in printed and "mechanism=glore" not in printed
    healthy = load_study(write_study(tmp_path))
    out = io.StringIO()
    assert doctor.preflight(healthy, out) is True
    assert out.getvalue().startswith("doctor: 2 cells checked")
    assert "info" not in out.getvalue().split("\n", 1)[1]  # the by-design notes are only counted


def test_cli_prints_one_line_per_cell_and_exits_0():
    from ablate.study.load import load_study

    path = REPO / "studies" / "gcn_effect.yaml"
    run = subprocess.run([sys.executable, "-m", "ablate.doctor", str(path)], capture_output=True, text=True,
                         cwd=REPO, timeout=600)
    assert run.returncode == 0, run.stderr
    heads = [line for line in run.stdout.splitlines() if line and not line.startswith(" ")]
    cells = load_study(path).cells()
    assert [h.split(" [")[0] for h in heads[:-1]] == [c.title() for c in cells]
    assert heads[-1].startswith(f"{len(cells)} cells")


def test_cli_missing_file_is_one_paragraph_and_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        doctor.main([str(tmp_path / "missing.yaml")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "missing.yaml" in err and "Traceback" not in err and "\n\n" not in err.strip()
    with pytest.raises(SystemExit) as exit_:
        doctor.main([])
    assert exit_.value.code == 2


def test_runner_stops_before_any_trial_when_the_preflight_finds_a_hard_error(tmp_path, monkeypatch, capsys):
    """A hard error of the pre-flight ends the run with exit 2 before a trial is created; --no-doctor
    skips the check (the study then runs)."""
    from support import tiny_study

    from ablate.run import command as run
    from ablate.storage.records import open_storage

    monkeypatch.setattr(doctor, "preflight", lambda study, out=None, found=None: False)
    path = tiny_study(tmp_path, train={"epochs": 1})
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        run.main([str(path), "--run-dir", str(run_dir), "--no-wandb", "--no-report"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "health pre-flight found a hard error" in err and "Traceback" not in err
    journal = run_dir / "optuna.journal"
    if journal.exists():  # storage may have been opened, but no trial was created
        storage = open_storage(str(journal))
        assert all(not storage.get_all_trials(s._study_id) for s in storage.get_all_studies())


def test_the_softmax_recorder_leaves_torch_tensor_as_it_found_it():
    """After the doctor's hooks, Tensor.softmax is again the method torch defines (nothing of ours
    is left in torch.Tensor's own namespace, which the cue probe checks too)."""
    had = "softmax" in torch.Tensor.__dict__
    doctor.check_block(PixelAttention(C, gain=1.0), C, SIDE)
    assert ("softmax" in torch.Tensor.__dict__) == had
    assert torch.Tensor.softmax is torch._C.TensorBase.softmax or had
