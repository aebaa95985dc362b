"""The package is layered so data flows one way (docs/ARCHITECTURE.md): a module may import
modules of its own layer or lower ones, never higher ones."""

import ast
from pathlib import Path

import shallowmimic

LAYERS = [
    ("base", {"errors", "io", "layout", "device", "config", "stats"}),
    ("data", {"data", "download", "preprocess", "info"}),
    ("augment", {"augment", "preview"}),
    ("models", {"arch", "budget", "families", "spaces", "checkpoint", "models", "flops"}),
    ("training", {"schedule", "losses", "batches", "train", "teachers", "logits"}),
    ("search", {"search", "jobs"}),
    ("ensemble", {"ensemble"}),
    ("transfer set", {"transfer"}),
    ("students", {"students"}),
    ("deploy", {"export", "inference"}),
    ("report", {"paper", "results", "findings", "frontier", "figure", "report"}),
    ("study", {"study", "tuning", "planning", "cost", "status", "pipeline"}),
    ("interface", {"cli", "launch", "report_arch", "bench", "__main__", "__init__"}),
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


def test_training_flops_are_counted_exactly_for_a_linear_model():
    """Issue 10 item 4: bench's achieved FLOP/s rest on PyTorch's counter, not hand estimates."""
    import torch

    from shallowmimic.bench import peak_flops
    from shallowmimic.flops import train_flops_per_image

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 5, bias=False))
    # forward 2*48*5 per image; backward: the weight gradient only (the input needs none)
    assert train_flops_per_image(model, 3, 4) == 2 * 48 * 5 * 2
    deeper = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 5, bias=False), torch.nn.Linear(5, 3))
    # second layer also passes a gradient back to the first: 3 x its forward
    assert train_flops_per_image(deeper, 3, 4) == 2 * (2 * 48 * 5) + 3 * (2 * 5 * 3)
    peak, source = peak_flops(torch.device("cpu"), "fp32")
    assert peak > 0 and "machine reference" in source
