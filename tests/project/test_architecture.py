"""The shape of the code: pinned cell keys and presets, one-way imports, no import cycle, no Triton needed."""
from __future__ import annotations

import ast
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

import pins

REPO = Path(__file__).resolve().parents[2]
REGENERATE = "python tests/pins.py (only for a change meant to alter them; say so in the commit)"


# -- behaviour pinned across refactors --------------------------------------------------------------

def test_every_committed_study_keeps_its_cell_keys():
    """Cell keys hash the resolved configuration: a moved default or factor would orphan stored results."""
    pinned = json.loads(pins.CELL_KEYS.read_text())
    now = pins.study_cells()
    assert sorted(now) == sorted(pinned), (
        f"studies on disk {sorted(now)} differ from those pinned {sorted(pinned)}; a new study is pinned by {REGENERATE}")
    for name, cells in pinned.items():
        assert now[name] == cells, f"{name}: cells (title, mechanism, key) changed"


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6)


@pytest.mark.parametrize("name", sorted(json.loads(pins.PRESET_PINS.read_text())))
def test_preset_builds_the_pinned_block(name):
    """Same family, factors and defaults; same parameters drawn in the same order; same output."""
    from ablate.attention import MECHANISMS

    pinned = json.loads(pins.PRESET_PINS.read_text())[name]
    now = json.loads(json.dumps(pins.preset_pin(MECHANISMS[name])))
    assert now["family"] == pinned["family"]
    assert now["factors"] == pinned["factors"]
    assert list(now["state"]) == list(pinned["state"]), "state-dict entries differ"
    for key, (shape, total, absolute) in pinned["state"].items():
        assert now["state"][key][0] == shape, key
        assert _close(now["state"][key][1], total) and _close(now["state"][key][2], absolute), key
    assert all(_close(a, b) for a, b in zip(now["output"], pinned["output"])), "eval-mode output differs"


def test_every_preset_is_pinned():
    from ablate.attention import MECHANISMS

    assert sorted(MECHANISMS) == sorted(json.loads(pins.PRESET_PINS.read_text())), f"pin a new preset with {REGENERATE}"


# -- imports: one way between ablate/ and kernels/, no cycle, Triton optional ------------------------

PACKAGES = {"ablate": REPO / "ablate", "ablate_kernels": REPO / "kernels"}  # import name -> folder


def _modules() -> dict[str, Path]:
    """Every module of ablate/ and kernels/ by its import name (``ablate.attention.ema``, ``ablate_kernels.em``)."""
    out = {}
    for top, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join([top, *parts])] = path
    return out


def _runtime_imports(tree: ast.AST):
    """Every import statement, lazy ones inside functions included, except under ``if TYPE_CHECKING``."""
    def walk(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for sub in child.orelse:
                    yield from walk_one(sub)
                continue
            yield from walk_one(child)

    def walk_one(node):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        yield from walk(node)

    yield from walk(tree)


def _imported(name: str, path: Path, node, modules: dict) -> set[str]:
    """The modules of ours one import statement in module ``name`` loads explicitly."""
    if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
            package = package[: len(package) - (node.level - 1)]
            base = ".".join(package + ([base] if base else []))
        targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
    found = set()
    for t in targets:
        while t and t not in modules:  # `import ablate.x.y` of a module we have, or its package
            t = t.rpartition(".")[0]
        if t:
            found.add(t)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        graph[name] = set().union(*(_imported(name, path, n, modules) for n in _runtime_imports(tree))) - {name}
    return graph


def test_the_import_graph_sees_lazy_and_relative_imports():
    """The graph the two tests below read: a known lazy import and known relative ones are in it."""
    graph = import_graph()
    assert "ablate_kernels.criss_cross" in graph["ablate.attention.criss_cross"]  # lazy, in forward
    assert "ablate_kernels.reference" in graph["ablate.attention.ema"]
    assert "ablate.config.vocab" in graph["ablate.attention"]
    assert "ablate_kernels.dispatch" in graph["ablate_kernels.em"]  # `from . import dispatch`


def test_nothing_in_kernels_imports_ablate():
    """kernels/ is below ablate/: the mechanisms call the kernels, never the other way round."""
    for name, targets in import_graph().items():
        if name.startswith("ablate_kernels"):
            assert not {t for t in targets if t.split(".")[0] == "ablate"}, f"{name} imports {targets}"


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycle_in_ablate_and_kernels():
    """No module reaches itself through imports, lazy ones included (a lazy import is no licence for a loop)."""
    cycle = _find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_cycles():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


NO_TRITON = """
import importlib.abc, sys

class NoTriton(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "triton" or name.startswith("triton."):
            raise ImportError(f"{name} is made unimportable by the test")
        return None

sys.meta_path.insert(0, NoTriton())
"""

BUILD_EVERY_PRESET = """
import torch
from ablate.attention import MECHANISMS
import ablate_kernels.bench, ablate_kernels.criss_cross, ablate_kernels.em, ablate_kernels.local_window
from ablate_kernels import dispatch

assert not dispatch.triton_available()
torch.set_num_threads(1)
x = torch.randn(2, 16, 12, 10, requires_grad=True)
for name, preset in sorted(MECHANISMS.items()):
    torch.manual_seed(0)
    block = preset.build(16)
    y = block(x)
    y.sum().backward()
    assert y.shape == x.shape and torch.isfinite(y).all(), name
assert "triton" not in sys.modules
print("built", len(MECHANISMS))
"""


def test_every_preset_builds_and_runs_without_triton():
    """Triton is Linux-only: where it does not import, every mechanism still builds, runs and
    trains on the PyTorch references (and importing a kernel module does not fail)."""
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("ABLATE_KERNELS", "TRITON_INTERPRET")}
    proc = subprocess.run([sys.executable, "-c", NO_TRITON + BUILD_EVERY_PRESET], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from ablate.attention import MECHANISMS

    assert proc.stdout.strip() == f"built {len(MECHANISMS)}"


def test_the_triton_blocker_blocks():
    proc = subprocess.run([sys.executable, "-c", NO_TRITON + "import triton"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0 and "made unimportable by the test" in proc.stderr


# -- the preset table --------------------------------------------------------------------------------

def test_a_preset_is_its_blocks_factors_with_its_values_and_the_signature_defaults():
    """Defaults live once: a factor a preset does not set takes the block's keyword default."""
    import inspect

    from ablate.attention import MECHANISMS

    for name, p in MECHANISMS.items():
        params = inspect.signature(p.block).parameters
        assert [f.name for f in p.factors] == [f.name for f in p.block.FACTORS], name
        for f in p.factors:
            want = p.values[f.name] if f.name in p.values else params[f.name].default
            want = float(want) if f.kind == "float" else want
            assert f.default == want and type(f.default) is type(want), (name, f.name)


def test_the_table_refuses_a_value_for_an_undeclared_factor_or_a_factor_the_block_lacks():
    from torch import nn

    from ablate.attention import NonLocalBlock, Preset
    from ablate.config.vocab import switch

    with pytest.raises(TypeError, match="declares no factor 'thta'"):
        Preset("typo", NonLocalBlock, {"thta": False})

    class Block(nn.Module):
        FACTORS = (switch("gate"),)

        def __init__(self, channels: int):
            super().__init__()

    with pytest.raises(TypeError, match="'gate' is not a keyword argument"):
        Preset("x", Block)
    with pytest.raises(ValueError, match="default of factor 'theta'"):
        Preset("bad", NonLocalBlock, {"theta": 3})


def test_each_preset_names_the_module_of_its_block_and_families_are_grouped():
    from ablate.attention import FAMILIES, MECHANISMS
    from ablate.attention.presets import TABLE

    assert tuple(TABLE) == FAMILIES
    assert [p.name for ps in TABLE.values() for p in ps] == list(MECHANISMS)
    for family, presets in TABLE.items():
        assert all(p.family == family and MECHANISMS[p.name] is p for p in presets)
    for p in MECHANISMS.values():
        block = p.block  # imports its module
        assert p.module.startswith("ablate.attention.") and getattr(sys.modules[p.module], block.__name__) is block
        assert (REPO / (p.module.replace(".", "/") + ".py")).is_file()


def test_no_module_imports_a_private_name_of_another():
    """``from .x import _name`` across modules hides a dependency; shared helpers are public."""
    modules = _modules()
    for name, path in modules.items():
        for node in _runtime_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and _imported(name, path, node, modules):
                private = [a.name for a in node.names if a.name.startswith("_") and a.name != "__version__"]
                assert not private, f"{name} imports private {private} from {node.module}"


# -- layers: one way down, from the table in ARCHITECTURE.md -----------------------------------------

def layer_table() -> dict[str, int]:
    """ARCHITECTURE.md's layer table: package (``config``, ``run``, ...) -> its layer number."""
    import re

    text = (REPO / "ARCHITECTURE.md").read_text()
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    layers = {}
    for line in section.splitlines():
        m = re.match(r"\|\s*(\d+)\s*\|\s*`([\w.]+)`\s*\|", line)
        if m:
            layers[m.group(2)] = int(m.group(1))
    return layers


def _all_imports(tree: ast.AST):
    """Every import statement, ``if TYPE_CHECKING`` ones included: a type-only edge is an edge too."""
    return [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]


def full_import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: set().union(*(_imported(name, path, n, modules) for n in _all_imports(ast.parse(path.read_text()))))
            - {name} for name, path in modules.items()}


def package_of(module: str) -> str:
    """``ablate.run.worker`` -> ``run``; top-level ``ablate`` modules -> ``ablate``; kernels -> ``kernels``."""
    parts = module.split(".")
    if parts[0] == "ablate_kernels":
        return "kernels"
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in layer_table()) else "ablate"


def layer_violations(graph: dict[str, set[str]], layers: dict[str, int]) -> list[str]:
    """Each edge from a package to one of the same or a higher layer (a different package)."""
    bad = []
    for src, targets in sorted(graph.items()):
        for dst in sorted(targets):
            a, b = package_of(src), package_of(dst)
            if a != b and layers[b] >= layers[a]:
                bad.append(f"{src} ({a}, layer {layers[a]}) imports {dst} ({b}, layer {layers[b]})")
    return bad


def test_every_package_has_a_layer_and_a_short_init():
    layers = layer_table()
    on_disk = {p.name for p in (REPO / "ablate").iterdir() if (p / "__init__.py").is_file()} | {"kernels", "ablate"}
    assert set(layers) == on_disk, f"ARCHITECTURE.md's layer table {sorted(layers)} != packages {sorted(on_disk)}"
    for name in on_disk - {"kernels", "ablate"}:
        init = REPO / "ablate" / name / "__init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc) > 80, f"ablate/{name}/__init__.py needs a docstring saying what the package does"


def test_imports_go_one_way_down_the_layers_type_only_ones_included():
    """The layer order of ARCHITECTURE.md holds for every import, lazy and TYPE_CHECKING ones included."""
    bad = layer_violations(full_import_graph(), layer_table())
    assert not bad, "imports up or across the layers (change the code, or the table with a reviewed reason):\n" + \
        "\n".join(bad)


def test_the_layer_check_catches_an_upward_import():
    layers = {"config": 1, "run": 2, "ablate": 3, "kernels": 0}
    assert layer_violations({"ablate.config.errors": {"ablate.run.worker"}}, layers)
    assert not layer_violations({"ablate.run.worker": {"ablate.config.errors", "ablate.run.claims"}}, layers)


def test_no_cycle_even_through_type_only_imports():
    cycle = _find_cycle(full_import_graph())
    assert cycle is None, "import cycle (type-only edges included): " + " -> ".join(cycle)


def test_only_the_entry_points_stay_at_the_top_level():
    top = sorted(p.name for p in (REPO / "ablate").glob("*.py"))
    assert top == ["__init__.py", "__main__.py", "_graveyard.py"], top


def test_an_old_import_path_warns_and_forwards_to_the_new_module():
    code = ("import warnings; warnings.simplefilter('error')\n"
            "try:\n    from ablate.run_worker import Worker\nexcept DeprecationWarning as e:\n    print('warned:', e)\n"
            "warnings.simplefilter('ignore')\nfrom ablate.run_worker import Worker\nimport ablate.run.worker as w\n"
            "print(Worker is w.Worker)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "warned: ablate.run_worker moved to ablate.run.worker" in proc.stdout and proc.stdout.strip().endswith("True")


def test_modules_and_functions_stay_small_enough_to_read():
    """Every module of ablate/ and kernels/ at most 500 lines, every function at most 80."""
    too_long = []
    for name, path in _modules().items():
        text = path.read_text()
        if text.count("\n") > 500:
            too_long.append(f"{path.relative_to(REPO)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                too_long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}: "
                                f"{node.end_lineno - node.lineno + 1} lines")
    assert not too_long, "split these:\n" + "\n".join(too_long)


def test_the_report_renders_what_it_is_given():
    """Only ``report/command.py`` (``ablate report``) reads storage or asks the doctor; every other
    module of the report package renders the data and findings handed to it."""
    reads = {}
    for name, targets in full_import_graph().items():
        if name.startswith("ablate.report.") and name != "ablate.report.command":
            reads[name] = sorted(t for t in targets if t.startswith(("ablate.storage", "ablate.doctor")))
    assert not any(reads.values()), {k: v for k, v in reads.items() if v}
