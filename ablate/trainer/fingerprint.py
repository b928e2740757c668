"""A trial's provenance fingerprint, and the report's confound guard over fingerprints.

Every trial stores one ``fingerprint`` user attribute: the ablate source tree's git commit and
dirty flag, the versions of the packages that shape the numbers, the device, the torch thread
count actually used, the precision and the determinism flags. :func:`confounds` compares the
fingerprints of a study's cells and names each field whose value differs between cells, unless a
factor of the study varies that field on purpose (``train.threads`` varies the thread count).
"""
from __future__ import annotations

import functools
import importlib.util
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

# module -> the distributions that may install it
PACKAGES = {"torch": ("torch",), "lightning": ("lightning",), "optuna": ("optuna",), "mmseg": ("mmsegmentation",),
            "mmcv": ("mmcv", "mmcv-lite", "mmcv-full"), "triton": ("triton",)}

# factor -> the fingerprint fields it varies on purpose (not a confound when it is a factor)
FACTOR_FIELDS = {"train.threads": ("threads",), "trainer.precision": ("precision",),
                 "trainer.accelerator": ("device",)}

# flattened field -> how the report names it
FIELD_NAMES = {"git.commit": "git commit", "git.dirty": "git dirty flag",
               "device": "device", "threads": "torch thread count", "precision": "precision",
               "deterministic.algorithms": "torch deterministic algorithms",
               "deterministic.cudnn_deterministic": "cudnn.deterministic",
               "deterministic.cudnn_benchmark": "cudnn.benchmark"}


@functools.lru_cache(maxsize=1)
def git_state() -> dict:
    """Commit and dirty flag of the git checkout holding this package (tracked files only), or
    nulls when the package is not in a checkout of its own or git is missing. Cached per process."""
    root = Path(__file__).resolve().parents[2]  # ablate/trainer/fingerprint.py -> the checkout
    none = {"commit": None, "dirty": None}
    if not (root / ".git").exists():
        return none
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=20)
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return none
    if commit.returncode != 0:
        return none
    return {"commit": commit.stdout.strip() or None,
            "dirty": bool(status.stdout.strip()) if status.returncode == 0 else None}


@functools.lru_cache(maxsize=1)
def package_versions() -> dict:
    """python and each of :data:`PACKAGES` that is importable (a missing one is left out): the
    loaded module's ``__version__``, else the installed distribution's version, so that nothing
    heavy (mmseg, triton) is imported only to be named."""
    out = {"python": platform.python_version()}
    for name, dists in PACKAGES.items():
        try:
            loaded = getattr(sys.modules.get(name), "__version__", None)
            if loaded or importlib.util.find_spec(name) is not None:
                out[name] = str(loaded or _dist_version(dists))
        except (ImportError, ValueError):
            continue
    return out


def _dist_version(dists: tuple) -> str:
    for dist in dists:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model string (/proc/cpuinfo on Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


def fingerprint(precision: str = "32-true", cuda: bool = False) -> dict:
    """This process's fingerprint for a trial that trained with ``precision``, on CUDA or not.
    Thread count and determinism flags are read now: call it after the fit."""
    import torch

    device = cpu_model()
    if cuda and torch.cuda.is_available():
        device = torch.cuda.get_device_name(torch.cuda.current_device())
    return {"git": dict(git_state()), "versions": dict(package_versions()), "device": device,
            "threads": int(torch.get_num_threads()), "precision": str(precision),
            "deterministic": {"algorithms": bool(torch.are_deterministic_algorithms_enabled()),
                              "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
                              "cudnn_benchmark": bool(torch.backends.cudnn.benchmark)}}


def flatten(fp: dict, prefix: str = "") -> dict:
    """``{"versions": {"torch": "2.3"}}`` -> ``{"versions.torch": "2.3"}``."""
    out = {}
    for k, v in fp.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def field_name(field: str) -> str:
    if field.startswith("versions."):
        return f"{field.split('.', 1)[1]} version"
    return FIELD_NAMES.get(field, field)


def _text(v) -> str:
    if v is None:
        return "unknown"
    return str(v)[:12] if isinstance(v, str) and len(v) == 40 else str(v)  # a commit hash, shortened


def shared(fps: list[dict]) -> dict:
    """The flattened fields whose value is the same in every fingerprint of ``fps``."""
    flat = [flatten(f) for f in fps]
    if not flat:
        return {}
    return {k: v for k, v in flat[0].items() if all(k in f and f[k] == v for f in flat[1:])}


def confounds(cells: dict[str, list[dict]], exempt: set[str] = frozenset()) -> list[dict]:
    """Fields (not in ``exempt``) whose values differ between the cells' fingerprints.

    ``cells`` maps a cell's name to its trials' fingerprints. Each result is ``{"field", "name",
    "groups"}`` with ``groups`` a list of (value text, [cell names]) in first-seen order; a cell
    whose own trials disagree reads as "A and B". A field missing from a fingerprint reads as
    "absent". Silent (an empty list) when every cell agrees on every field.
    """
    flat = {c: [flatten(f) for f in fps] for c, fps in cells.items() if fps}
    fields = sorted({k for fps in flat.values() for f in fps for k in f} - set(exempt))
    out = []
    for field in fields:
        per_cell = {}
        for c, fps in flat.items():
            vals = sorted({_text(f[field]) if field in f else "absent" for f in fps})
            per_cell[c] = " and ".join(vals)
        if len(set(per_cell.values())) < 2:
            continue
        groups: dict[str, list[str]] = {}
        for c, v in per_cell.items():
            groups.setdefault(v, []).append(c)
        out.append({"field": field, "name": field_name(field), "groups": list(groups.items())})
    return out


def confound_line(c: dict) -> str:
    """``Confound check: trials differ in torch version: cells A, B ran 2.3.0, cell C ran 2.2.0``."""
    parts = [f"{'cells' if len(names) > 1 else 'cell'} {', '.join(names)} ran {value}" for value, names in c["groups"]]
    return f"Confound check: trials differ in {c['name']}: " + ", ".join(parts) + "."


def exempt_fields(factors) -> set[str]:
    """Fingerprint fields that a study's factors vary on purpose."""
    return {f for factor in factors for f in FACTOR_FIELDS.get(factor, ())}


def describe(values: dict) -> str:
    """One line of shared fingerprint fields (flattened), for the report's Provenance section."""
    order = ["git.commit", "git.dirty"] + sorted(k for k in values if k.startswith("versions.")) + [
        "device", "threads", "precision", "deterministic.algorithms", "deterministic.cudnn_deterministic",
        "deterministic.cudnn_benchmark"]
    parts = [f"{field_name(k)} {_text(values[k])}" for k in order if k in values]
    parts += [f"{field_name(k)} {_text(v)}" for k, v in sorted(values.items()) if k not in order]
    return "; ".join(parts)
