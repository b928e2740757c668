"""Health pre-flight: build each cell's attention block and check it on one batch before training.

``python -m ablate.doctor STUDY.yaml`` prints one line per cell and the findings under it; it
exits 0 when no block has a hard error, 1 when one has, 2 for a mistake in the study file or
the command line (one paragraph, no traceback).

The three functions the rest of ablate uses (their signatures stay this simple):

* ``check_study(study) -> list[Finding]``: every finding of every cell of a loaded study;
* ``summary_lines(findings) -> list[str]``: a few Markdown lines for the report;
* ``preflight(study, out) -> bool``: the runner's check before the first trial; prints a
  count, then each distinct warning and error once with its cells, to the file ``out`` and
  returns False only for a hard error (NaN/Inf at initialisation, a block that fails to run).

``check_block(block, channels, size, name=...)`` checks one block (what ``check_study`` calls for
each distinct block; tests call it with deliberately broken ones).

What is checked, on a batch of ``BATCH`` random feature maps at the study's width and feature-map
size (``relu`` of a standard normal: what a conv-BN-ReLU backbone hands the block at
initialisation; fixed seed), the block in train mode, one forward and one backward through a
fixed random linear function of the output:

1. parameters with no gradient (``None``) or an all-zero one (zero up to rounding: at most
   ``NEGLIGIBLE`` times the largest parameter gradient). These causes are told apart and are
   info: a listed by-design exception (:data:`BY_DESIGN`, e.g. EMANet's input conv); a
   parameter behind a zero-initialised gain (the block starts as the identity: Non-local's and
   GloRe's zero BN gamma, DANet's and CCNet's zero ``gamma``, STN's zero regression layer; found
   by setting each zero-valued weight, alone, to small random values and seeing whose gradient
   appears), or behind its own zero-initialised bias (a BN scale that a later normalisation
   cancels while the shift is 0); a bias whose gradient stays zero (a BatchNorm or a softmax
   after it removes it). Any other is a warning;
2. named inner widths (a block's ``widths`` dict, see ``ablate/attention/widths.py``) below 4;
3. every softmax the forward computes (``torch.softmax``, ``F.softmax``, ``Tensor.softmax`` and
   the map inside ``F.scaled_dot_product_attention``, recorded by :func:`recording_softmax`):
   near one-hot rows (mean largest weight > 0.9, or mean weight of a position on itself > 0.5
   for square maps with rows of at least 8) and near uniform rows (entropy normalised by the
   log of the row's positive entries > 0.99). A message says where the map was computed and
   names the preset's factors that set its sharpness;
4. NaN/Inf in the output, the input's gradient or a parameter's gradient: an error.

Blocks depend only on (mechanism, args, channels, feature size), so a study's cells share the
checks of their block (the zoo's 116 cells build 29 blocks). The checks run on the CPU, with one
torch thread (fastest for one small batch, and on a busy machine by far); on CUDA the Triton
kernels (criss-cross, local window, EM) compute their softmax inside the kernel, out of the
recorder's sight. The global RNG state is left as it was. (Inputs over ``ONE_THREAD_UP_TO``
elements, the real datasets' 512-channel maps, keep the caller's thread count.)

The parts, each importable from here: :mod:`ablate.doctor.softmax` (the softmax recorder),
:mod:`ablate.doctor.gradients` (the pass and its gradient findings), :mod:`ablate.doctor.findings`
(findings, thresholds, width and map findings), :mod:`ablate.doctor.text` (the text); this
module checks a block and a study and is the command.
"""
from __future__ import annotations

import contextlib
import sys
from dataclasses import replace

import torch
from torch import nn

from .findings import (
    CODES,
    NARROW,
    ONE_HOT_MAX,
    ONE_HOT_SELF,
    SELF_MIN_SIZE,
    SEVERITIES,
    SHARPNESS_FACTORS,
    UNIFORM_ENTROPY,
    WIDTH_FACTORS,
    ZERO_INIT_FACTORS,
    Finding,
    map_findings,
    width_findings,
)
from .gradients import (
    BY_DESIGN,
    GATE_SIDE,
    NEGLIGIBLE,
    ByDesign,
    finite_findings,
    gradient_findings,
    one_pass,
)
from .text import counts_text, print_findings, print_preflight, summary_lines
from .softmax import MapStats, map_stats, recording_softmax

__all__ = [
    "BATCH", "SEED", "ONE_THREAD_UP_TO", "NARROW", "ONE_HOT_MAX", "ONE_HOT_SELF", "SELF_MIN_SIZE", "UNIFORM_ENTROPY",
    "NEGLIGIBLE", "GATE_SIDE", "SEVERITIES", "CODES", "SHARPNESS_FACTORS", "WIDTH_FACTORS", "ZERO_INIT_FACTORS",
    "BY_DESIGN", "ByDesign", "Finding", "MapStats", "map_stats", "recording_softmax", "check_block", "block_input",
    "study_cells", "check_study", "summary_lines", "print_findings", "preflight", "main",
]

BATCH = 2  # feature maps in the one batch (BatchNorm needs more than one value per channel)
SEED = 0
ONE_THREAD_UP_TO = 2 ** 20  # input elements up to which a block is checked on one torch thread


def _hw(size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def check_block(block: nn.Module, channels: int, size, name: str = "block", mechanism: str | None = None,
                args: dict | None = None, batch: int = BATCH, seed: int = SEED) -> list[Finding]:
    """Check one block on a (batch, channels, *size) batch; ``size`` an int or (H, W).
    ``mechanism`` (a preset name) selects its :data:`BY_DESIGN` exceptions and ``args`` (its
    resolved factors) the factors a message names. Findings carry ``title=name`` and no cell."""
    h, w = _hw(size)
    with torch.random.fork_rng(devices=[]), _threads(1 if batch * channels * h * w <= ONE_THREAD_UP_TO else 0):
        torch.manual_seed(seed)
        x = torch.randn(batch, channels, h, w).relu()
        try:
            res = one_pass(block, x, seed)
        except Exception as e:  # noqa: BLE001 - any failure of the block is the finding
            return [Finding("", "error", "failed", f"the block fails on a ({batch}, {channels}, {h}, {w}) input: "
                                                   f"{type(e).__name__}: {_short(str(e))}", name, name)]
        found = finite_findings(block, res)
        if not found:
            found = gradient_findings(block, x, res, mechanism, args, seed)
        found += width_findings(block, channels, args) + map_findings(res.maps, args)
    return [Finding("", sev, code, msg, name, name) for sev, code, msg in found]


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


@contextlib.contextmanager
def _threads(n: int):
    """Run with ``n`` torch threads (0: the caller's setting), then restore the caller's setting.
    One thread is fastest for a small batch, and far faster on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(n or before)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------
# a study


def block_input(study, cell) -> tuple[int, int, int]:
    """(channels, height, width) of the feature map the cell's block sees in training: the
    backbone's (or the head's) channels at the training input's size over the backbone's stride."""
    from dataclasses import asdict

    from ..models.geometry import feature_geometry, feature_side

    channels, stride = feature_geometry(asdict(cell.backbone), asdict(getattr(cell, "head", None) or study.head))
    h, w = cell.data.crop_size if hasattr(cell.data, "crop_size") else (cell.data.size, cell.data.size)
    return channels, feature_side(h, stride), feature_side(w, stride)


def study_cells(study) -> list:
    """The cells to check: the grid and references; for a search study, its base cell (the
    study's mechanism and args, no factor sampled)."""
    if not study.search:
        return study.cells()
    try:
        return [study.search_cell({})]
    except Exception:  # noqa: BLE001 - a search whose base cannot be built has nothing to check
        return []


def check_study(study) -> list[Finding]:
    """The findings of every cell of ``study`` (a loaded :class:`ablate.study.Study`), in cell
    order; each distinct block (mechanism, args, channels, size) is built and checked once."""
    from ..attention import get_preset

    seen: dict = {}
    out: list[Finding] = []
    with _threads(1):  # building; check_block picks its own
        for cell in study_cells(study):
            channels, h, w = block_input(study, cell)
            what = (cell.mechanism, cell.args, channels, h, w)
            if what not in seen:
                args = dict(cell.args)
                try:
                    with torch.random.fork_rng(devices=[]):
                        torch.manual_seed(SEED)
                        block = get_preset(cell.mechanism).build(channels, **args)
                except Exception as e:  # noqa: BLE001 - a block that cannot be built is the finding
                    seen[what] = [Finding("", "error", "failed", f"the block cannot be built at C = {channels}: "
                                                                 f"{type(e).__name__}: {_short(str(e))}",
                                          block=cell.mechanism)]
                else:
                    seen[what] = check_block(block, channels, (h, w), name=cell.mechanism, mechanism=cell.mechanism,
                                             args=args)
            out += [replace(f, cell=cell.key, title=cell.title()) for f in seen[what]]
    return out


def preflight(study, out=sys.stdout, found: list | None = None) -> bool:
    """The runner's check before the first trial: prints a count, then each distinct warning or
    error once with the cells it concerns, to ``out``; False only when a block has a hard error
    (NaN/Inf at initialisation, or a block that cannot be built or run). ``found``: a list the
    findings are appended to (the runner hands them to the report, which does not run the doctor)."""
    findings = check_study(study)
    if found is not None:
        found.extend(findings)
    print_preflight(findings, study_cells(study), study.path, out)
    return not any(f.severity == "error" for f in findings)


def health_lines(study, findings: list | None = None) -> list[str]:
    """The report's health section: :func:`summary_lines` of ``findings`` (checked now when None);
    a doctor that cannot run says so instead of stopping the report."""
    from .text import summary_lines

    try:
        return summary_lines(check_study(study) if findings is None else findings)
    except Exception as e:  # noqa: BLE001 - the report must still be written
        text = str(e) if len(str(e)) <= 200 else str(e)[:199] + "…"
        return [f"Health pre-flight could not run here ({type(e).__name__}: {text})."]


USAGE = """usage: python -m ablate.doctor STUDY.yaml

Builds each cell's attention block at the study's width and feature-map size, runs one random
batch forward and backward, and reports parameters without gradient, bottleneck widths below 4,
near one-hot or near uniform softmax maps at initialisation, and NaN/Inf. Exit status: 0 without
errors (warnings allowed), 1 with an error, 2 for a mistake in the study file or the command line."""


def main(argv=None) -> int:
    from ..config.errors import StudyError, exit_with
    from ..study.load import load_study

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    try:
        if len(argv) != 1:
            raise StudyError("command line", "", f"python -m ablate.doctor takes one study file, got "
                                                 f"{len(argv)} arguments; usage: python -m ablate.doctor STUDY.yaml.")
        study = load_study(argv[0], check_files=False)
    except StudyError as e:
        exit_with(e)
    findings = check_study(study)
    cells = study_cells(study)
    print_findings(cells, findings)
    blocks = len({(c.mechanism, c.args) for c in cells})
    print(f"{len(cells)} cells, {blocks} distinct blocks: {counts_text(findings)}.")
    return 1 if any(f.severity == "error" for f in findings) else 0


if __name__ == "__main__":
    sys.exit(main())
