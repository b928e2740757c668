"""The installed package list matches the source folders, and the kernels import under our own name."""
from __future__ import annotations

import tomllib

from support import REPO


def test_every_source_package_is_installed():
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    on_disk = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "ablate").rglob("__init__.py")}
    assert on_disk <= listed, f"packages missing from pyproject.toml: {sorted(on_disk - listed)}"
    assert cfg["package-dir"] == {"ablate_kernels": "kernels"}


def test_kernels_import_from_this_repo_not_a_namesake():
    import ablate_kernels

    assert (REPO / "kernels").resolve() == __import__("pathlib").Path(ablate_kernels.__file__).resolve().parent
