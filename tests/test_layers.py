"""The package is layered so data flows one way (docs/ARCHITECTURE.md): a module may import
modules of its own layer or lower ones, never higher ones."""

import ast
from pathlib import Path

import shallowmimic

LAYERS = [
    ("core", {"core"}),
    ("data", {"data"}),
    ("augment", {"augment"}),
    ("models", {"models"}),
    ("training", {"training"}),
    ("search", {"search"}),
    ("ensemble", {"distill.ensemble"}),
    ("transfer set", {"distill.transfer"}),
    ("students", {"distill.students", "distill"}),
    ("deploy", {"deploy"}),
    ("report", {"report"}),
    ("study", {"study"}),
    ("interface", {"cli", "__main__", "__init__"}),
]
LEVEL = {m: i for i, (_, mods) in enumerate(LAYERS) for m in mods}
PACKAGE = Path(shallowmimic.__file__).parent


def modules(root: Path) -> dict[str, Path]:
    """Every module under `root`, by its dotted name inside the package ("arch", "data.loaders";
    a package by the name of its folder)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imported(path: Path, name: str, package: str, known: set[str]) -> set[str]:
    """The package's own modules that module `name` imports, relative (any depth) or absolute,
    at its top or inside a function, as dotted names inside the package."""
    here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join([*here[: len(here) - node.level + 1], *([node.module] if node.module else [])])
                base = f"{package}.{base}".rstrip(".")
            else:
                base = node.module or ""
            targets = [f"{base}.{a.name}" for a in node.names]  # `from .x import f`: x, if f is no module
        else:
            continue
        for t in targets:
            if not t.startswith(package + "."):
                continue
            t = t[len(package) + 1:]
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                names.add(t)
    return names


def layer_of(module: str, level: dict[str, int]) -> int | None:
    """A module's layer: that of the longest of its dotted prefixes that has one (a module of
    its own, else its subpackage)."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in level:
            return level[".".join(parts[:n])]
    return None


def upward_imports(root: Path, package: str, level: dict[str, int], skip=()) -> list[str]:
    found = modules(root)
    bad = []
    for name, path in found.items():
        mine = layer_of(name, level)
        if name in skip or mine is None:
            continue
        for other in imported(path, name, package, set(found)):
            theirs = layer_of(other, level)
            if theirs is not None and theirs > mine:
                bad.append(f"{name} (layer {mine}) imports {other} (layer {theirs})")
    return sorted(bad)


def test_every_module_has_a_layer():
    unplaced = {m for m in modules(PACKAGE) if layer_of(m, LEVEL) is None}
    assert unplaced == set(), "place new modules in a layer (here and in docs/ARCHITECTURE.md)"


def test_lower_layers_never_import_higher_ones():
    assert upward_imports(PACKAGE, "shallowmimic", LEVEL) == []


def test_the_layer_check_sees_nested_and_absolute_imports(tmp_path):
    """Issue 22 item 1: the check must see an upward import however it is written, in a nested
    package too (it once read only `from .x import` in one folder's files)."""
    root = tmp_path / "pkg"
    files = {
        "__init__.py": "",
        "low/__init__.py": "from .core import f\n",
        "low/core.py": "def f():\n    from ..high.top import g  # upward, relative, two levels, lazy\n",
        "low/other.py": "import pkg.high.top\nfrom pkg.low import core\n",  # upward absolute; sideways
        "low/fine.py": "from . import core\nfrom .core import f\n",
        "high/__init__.py": "",
        "high/top.py": "from pkg.low.core import f\ndef g():\n    pass\n",  # downward: allowed
        "flat.py": "from .high import top\n",  # the flat layout: a module as its own layer
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    level = {"low": 0, "flat": 0, "high": 1}
    assert upward_imports(root, "pkg", level) == [
        "flat (layer 0) imports high.top (layer 1)",
        "low.core (layer 0) imports high.top (layer 1)",
        "low.other (layer 0) imports high.top (layer 1)",
    ]


def test_training_flops_are_counted_exactly_for_a_linear_model():
    """Issue 10 item 4: bench's achieved FLOP/s rest on PyTorch's counter, not hand estimates."""
    import torch

    from shallowmimic.cli.bench import peak_flops
    from shallowmimic.models.flops import train_flops_per_image

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 5, bias=False))
    # forward 2*48*5 per image; backward: the weight gradient only (the input needs none)
    assert train_flops_per_image(model, 3, 4) == 2 * 48 * 5 * 2
    deeper = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 5, bias=False), torch.nn.Linear(5, 3))
    # second layer also passes a gradient back to the first: 3 x its forward
    assert train_flops_per_image(deeper, 3, 4) == 2 * (2 * 48 * 5) + 3 * (2 * 5 * 3)
    peak, source = peak_flops(torch.device("cpu"), "fp32")
    assert peak > 0 and "machine reference" in source
