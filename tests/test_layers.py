"""The package is layered so data flows one way (docs/ARCHITECTURE.md): a module may import
modules of its own layer or lower ones, never higher ones."""

import ast
from pathlib import Path

import shallowmimic

LAYERS = [
    ("base", {"errors", "io", "device", "config", "stats"}),
    ("data", {"data", "download", "preprocess", "info"}),
    ("augment", {"augment", "preview"}),
    ("models", {"arch", "budget", "families", "spaces", "checkpoint", "models"}),
    ("training", {"schedule", "losses", "batches", "train", "teachers"}),
    ("search", {"search"}),
    ("ensemble", {"ensemble"}),
    ("transfer set", {"transfer"}),
    ("students", {"students"}),
    ("report", {"paper", "results", "findings", "figure", "report"}),
    ("study", {"study", "tuning", "pipeline"}),
    ("interface", {"cli", "report_arch", "bench", "__main__", "__init__"}),
]
LEVEL = {m: i for i, (_, mods) in enumerate(LAYERS) for m in mods}
PACKAGE = Path(shallowmimic.__file__).parent


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                names.add(node.module.split(".")[0])
            else:
                names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("shallowmimic."):
            names.add(node.module.split(".")[1])
    return names


def test_every_module_has_a_layer():
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    assert modules - set(LEVEL) == set(), "place new modules in a layer (here and in docs/ARCHITECTURE.md)"


def test_lower_layers_never_import_higher_ones():
    bad = []
    for path in PACKAGE.glob("*.py"):
        if path.stem in ("cli", "bench", "__main__", "__init__"):
            continue
        for name in imported(path):
            if name in LEVEL and LEVEL[name] > LEVEL[path.stem]:
                bad.append(f"{path.stem} ({LAYERS[LEVEL[path.stem]][0]}) imports {name} ({LAYERS[LEVEL[name]][0]})")
    assert bad == []
