"""The package's folders are its layers (issue 22): each subpackage's `__init__` is its API,
named in `__all__` and imported lazily, so the command line and `status` start without torch."""

import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import shallowmimic

PACKAGE = Path(shallowmimic.__file__).parent
SUBPACKAGES = sorted(m.name for m in pkgutil.iter_modules([str(PACKAGE)]) if m.ispkg)


def test_the_top_holds_only_subpackages():
    assert sorted(p.name for p in PACKAGE.glob("*.py")) == ["__init__.py", "__main__.py"]
    assert len(SUBPACKAGES) >= 10


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_every_subpackage_names_its_api_and_every_name_resolves(name):
    package = importlib.import_module(f"shallowmimic.{name}")
    assert package.__doc__ and isinstance(package.__all__, list | tuple) and package.__all__, name
    for attr in package.__all__:
        assert getattr(package, attr) is not None, f"shallowmimic.{name}.{attr}"
    assert set(package.__all__) <= set(dir(package))


def test_an_unknown_name_is_an_attribute_error():
    import shallowmimic.distill

    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        shallowmimic.distill.nothing  # noqa: B018


def test_the_command_line_and_status_import_no_torch():
    code = ("import sys, shallowmimic.cli, shallowmimic.study.status, shallowmimic.core, shallowmimic.study; "
            "print('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "False", r.stderr


def test_every_file_name_of_a_study_directory_is_defined_once():
    """Issue 22 item 3: "result.json" was a literal in six modules; the names live in core.layout."""
    from shallowmimic.core import layout

    names = {v for k, v in vars(layout).items() if k.isupper() and isinstance(v, str) and "." in v}
    assert {"result.json", "run.json", "ensemble.json", "manifest.json", "search.json"} <= names
    repeated = [f"{p.relative_to(PACKAGE)}: {n}" for p in PACKAGE.rglob("*.py") if p.name != "layout.py"
                for n in names if f'"{n}"' in p.read_text()]
    assert repeated == []


def test_the_status_command_runs_without_torch(tmp_path):
    """`status` is marked as a command that reads files only (cli.options.FilesOnly), so the
    group skips the thread setup, and nothing on its path imports torch."""
    code = ("import sys\nfrom shallowmimic.cli.main import main\n"
            f"try:\n    main(['status', {str(tmp_path)!r}], standalone_mode=False)\n"
            "except Exception as e:\n    print(type(e).__name__, file=sys.stderr)\n"
            "print('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.strip().splitlines()[-1] == "False", r.stdout + r.stderr
