"""The package's layers, enforced: each package imports only what its layer may import.

The layers, top to bottom (each may import the ones above it, never those below):

| layer    | package                         | never imports                                      |
|----------|---------------------------------|----------------------------------------------------|
| network  | ``napari_sam2.model``           | anything but torch, the standard library and itself |
| weights  | ``napari_sam2.weights``         | tracking, outputs, front ends, napari, Qt          |
| tracking | ``napari_sam2.tracking``        | outputs, front ends, napari, Qt                    |
| outputs  | ``napari_sam2.outputs``         | front ends, napari, Qt                             |
| front    | widget, _reader, _writer, ...   | (napari; Qt only in the widget)                    |

Every module under ``src/napari_sam2`` is parsed with ``ast``: imports at any level count,
including the lazy ones inside functions, because they run all the same on a cluster worker
with no napari installed. Module-level import cycles inside the package are errors too.
"""

from __future__ import annotations

import ast
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "napari_sam2"

# the command line is cli.py and the modules beside it (cli_parser.py, cli_outputs.py, ...)
CLI = ("cli", *(path.stem for path in sorted(SRC.glob("cli_*.py"))))
# the weights store is weights.py and the modules beside it (weights_lock.py, weights_files.py, ...)
WEIGHTS = ("weights", *(path.stem for path in sorted(SRC.glob("weights_*.py"))))
FRONT_ENDS = ("widget", *CLI, "api", "batch", "_reader", "_writer", "_sample_data")
QT = ("qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "napari.qt", "superqt", "magicgui")
GUI = ("napari",) + QT  # "napari" covers napari.qt and every other napari module


def _internal(*names: str) -> tuple[str, ...]:
    return tuple(f"napari_sam2.{name}" for name in names)


# package prefix -> imports (module prefixes) it must not make. A layer may import the layers
# above it: tracking may use weights, outputs may use tracking.
FORBIDDEN: dict[str, tuple[str, ...]] = {
    **{
        f"napari_sam2.{name}": _internal("tracking", "outputs", *FRONT_ENDS) + GUI
        for name in WEIGHTS
    },
    "napari_sam2.tracking": _internal("outputs", *FRONT_ENDS) + GUI,
    "napari_sam2.outputs": _internal(*FRONT_ENDS) + GUI,
    # helpers of the outputs and the front ends (TIFF metadata, stacks on disk)
    "napari_sam2.tiff_meta": _internal("stack_files", *FRONT_ENDS) + GUI,
    "napari_sam2.stack_files": _internal(*FRONT_ENDS) + GUI,
    "napari_sam2.api": _internal("widget", *CLI, "_reader", "_writer", "_sample_data") + GUI,
    **{
        f"napari_sam2.{name}": _internal("widget", "_reader", "_writer", "_sample_data") + GUI
        for name in CLI
    },
    # batches run the command line's track on cluster workers: never napari or Qt
    "napari_sam2.batch": _internal("widget", "_reader", "_writer", "_sample_data") + GUI,
    # the npe2 reader, writer and sample data may use napari where they need it, never Qt
    "napari_sam2._reader": _internal("widget", *CLI) + QT,
    "napari_sam2._writer": _internal("widget", *CLI) + QT,
    "napari_sam2._sample_data": _internal("widget", *CLI) + QT,
}
# The widget's controllers hold its state and are tested without Qt; only the views use Qt.
QT_FREE_WIDGET_MODULES = (
    "image_axes",
    "label_export",
    "measurements_controller",
    "model_controller",
    "progress",
    "prompt_controller",
    "propagation",
    "session",
    "track_all_controller",
)
FORBIDDEN.update({f"napari_sam2.widget.{name}": QT for name in QT_FREE_WIDGET_MODULES})
ROOT_FORBIDDEN = GUI  # napari_sam2/__init__.py: napari imports it to discover the plugin

# The network imports torch, the standard library and itself only...
MODEL_THIRD_PARTY = ("torch",)
# ...except here: build_sam2(name) fetches a name's official weights from the weights store
# (DESIGN: "a name without checkpoint loads that model's weights from the weights store"),
# and checks a file against the store's checksums. The imports are lazy (inside functions),
# and weights never imports the model, so there is no cycle.
MODEL_EXCEPTIONS = {("napari_sam2.model.build", "napari_sam2.weights")}
# The one pair of modules allowed to import each other, both lazily (inside functions): the
# command line registers and dispatches `napari-sam2 batch`, and the batch workers run the
# command line's own `track` (one implementation of its outputs and run record).
LAZY_CYCLE_EXCEPTIONS = [("napari_sam2.batch", "napari_sam2.cli")]


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. napari_sam2.tracking.frames
    target: str  # what it imports, absolute, e.g. napari_sam2.tracking.intensity
    line: int
    top_level: bool  # at module level (runs on import), not inside a function

    def __str__(self) -> str:
        return f"{self.module} (line {self.line}) imports {self.target}"


def module_name(path: Path, root: Path) -> str:
    """The dotted name; a package's ``__init__.py`` is the package itself."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def imports_of(path: Path, root: Path) -> Iterator[Import]:
    """Every import in a module, absolute, with the submodule named where ``from X import y``
    names one."""
    module = module_name(path, root)
    package = module if _is_package(path) else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    top_level = {id(node) for node in tree.body}
    # imports inside `if TYPE_CHECKING:` or try blocks at module level still run at import
    for node in tree.body:
        if isinstance(node, (ast.If, ast.Try)):
            top_level |= {id(child) for child in ast.walk(node)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, alias.name, node.lineno, id(node) in top_level)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                name = sub if _module_path(sub, root) is not None else target
                yield Import(module, name, node.lineno, id(node) in top_level)


def _module_path(name: str, root: Path) -> Path | None:
    if not name.startswith(root.name + ".") and name != root.name:
        return None
    if name == root.name:
        return root / "__init__.py"
    rel = Path(*name.split(".")[1:])
    for candidate in (root / rel.with_suffix(".py"), root / rel / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def all_imports(root: Path) -> list[Import]:
    return [imp for path in sorted(root.rglob("*.py")) for imp in imports_of(path, root)]


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def layer_violations(root: Path) -> list[str]:
    """Each forbidden import, as a readable line."""
    stdlib = sys.stdlib_module_names
    problems = []
    for imp in all_imports(root):
        if _under(imp.module, "napari_sam2.model"):
            top = imp.target.split(".")[0]
            allowed = (
                top in stdlib
                or top in MODEL_THIRD_PARTY
                or _under(imp.target, "napari_sam2.model")
                or (imp.module, imp.target) in MODEL_EXCEPTIONS
            )
            if not allowed:
                problems.append(f"{imp}: the network imports only torch and the stdlib")
            continue
        outside_widget = not _under(imp.module, "napari_sam2.widget")
        if outside_widget and any(_under(imp.target, q) for q in QT):
            problems.append(f"{imp}: only the widget imports Qt")
        rules = list(FORBIDDEN.items())
        if imp.module == "napari_sam2":
            rules = [("napari_sam2", ROOT_FORBIDDEN)]
        for package, forbidden in rules:
            if _under(imp.module, package):
                for prefix in forbidden:
                    if _under(imp.target, prefix):
                        problems.append(f"{imp}: {package} must not import {prefix}")
    return sorted(set(problems))


def import_cycles(root: Path) -> list[list[str]]:
    """Cycles of module-level imports between the package's modules."""
    graph: dict[str, set[str]] = {}
    for imp in all_imports(root):
        if imp.top_level and _module_path(imp.target, root) is not None:
            if imp.target != imp.module:
                graph.setdefault(imp.module, set()).add(imp.target)
    cycles, done = [], set()

    def visit(node: str, stack: list[str]) -> None:
        if node in stack:
            cycles.append(stack[stack.index(node) :] + [node])
            return
        if node in done:
            return
        for nxt in sorted(graph.get(node, ())):
            visit(nxt, stack + [node])
        done.add(node)

    for node in sorted(graph):
        visit(node, [])
    return cycles


def lazy_cycles(root: Path) -> list[tuple[str, str]]:
    """Pairs of modules that import each other, one of them lazily (a hidden cycle)."""
    edges = {
        (imp.module, imp.target)
        for imp in all_imports(root)
        if _module_path(imp.target, root) is not None and imp.target != imp.module
    }
    pairs = sorted((a, b) for a, b in edges if (b, a) in edges and a < b)
    return [pair for pair in pairs if pair not in LAZY_CYCLE_EXCEPTIONS]


# --- the tests -----------------------------------------------------------------------------


def test_every_module_parses_and_is_seen():
    names = {module_name(p, SRC) for p in SRC.rglob("*.py")}
    assert {"napari_sam2.model.build", "napari_sam2.tracking.frames", "napari_sam2.cli"} <= names


def test_no_package_imports_a_layer_it_must_not():
    assert layer_violations(SRC) == []


def test_no_import_cycles():
    assert import_cycles(SRC) == []
    assert lazy_cycles(SRC) == []


def test_the_model_exception_is_still_needed():
    """The allow-listed import exists (else the exception should go)."""
    found = {(imp.module, imp.target) for imp in all_imports(SRC)}
    assert MODEL_EXCEPTIONS <= found


@pytest.fixture
def tree_copy(tmp_path) -> Path:
    root = tmp_path / "napari_sam2"
    shutil.copytree(SRC, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


@pytest.mark.parametrize(
    ("module", "line"),
    [
        ("tracking/frames.py", "import napari"),
        ("tracking/frames.py", "def f():\n    from napari.layers import Labels\n"),
        ("tracking/tracker.py", "from napari_sam2.outputs import LabelsWriter"),
        ("outputs/labels.py", "from qtpy.QtWidgets import QWidget"),
        ("weights.py", "def f():\n    import napari_sam2.tracking\n"),
        ("widget/propagation.py", "from qtpy.QtCore import QTimer\n"),
        ("model/sam2.py", "import numpy as np"),
        ("model/sam2.py", "def f():\n    from napari_sam2 import weights\n"),
        ("cli.py", "import napari"),
        ("__init__.py", "import napari"),
        ("_reader.py", "from qtpy import QtCore"),
    ],
)
def test_the_checker_catches_a_forbidden_import(tree_copy, module, line):
    path = tree_copy / module
    path.write_text(path.read_text() + "\n" + line + "\n")
    assert layer_violations(tree_copy) != []


def test_the_checker_catches_a_cycle(tree_copy):
    path = tree_copy / "stack_files.py"
    path.write_text(path.read_text() + "\ndef f():\n    from napari_sam2 import _reader\n")
    assert lazy_cycles(tree_copy) == [("napari_sam2._reader", "napari_sam2.stack_files")]
    path.write_text(path.read_text() + "\nfrom napari_sam2 import _reader\n")
    assert import_cycles(tree_copy) != []


def test_the_checker_catches_a_cycle_through_a_package(tree_copy):
    path = tree_copy / "tracking" / "tracker.py"
    path.write_text(path.read_text() + "\nfrom napari_sam2.tracking import FrameSource\n")
    assert any("napari_sam2.tracking" in cycle for cycle in import_cycles(tree_copy))


def test_the_widget_controllers_import_without_qt():
    code = (
        "import sys\n"
        + "".join(f"import napari_sam2.widget.{name}\n" for name in QT_FREE_WIDGET_MODULES)
        + "loaded = [m for m in sys.modules if m.split('.')[0] in ('qtpy', 'PyQt5', 'PyQt6')]\n"
        + "assert not loaded, loaded\n"
    )
    import subprocess

    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
