"""The Python API (issue 22 item 5): docs/API.md's example runs as written, through the public
names only, on a slice of the real CIFAR-10 (the study directory in a temporary folder)."""

import contextlib
import io
import os
import re
from pathlib import Path

import pytest

DOC = Path(__file__).parents[1] / "docs" / "API.md"


def example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 1
    return blocks[0]


def test_the_example_uses_public_names_only():
    code = example()
    assert re.findall(r"^(?:from|import) (\S+)", code, flags=re.M) == ["pathlib", "shallowmimic"]
    import shallowmimic as sm

    for name in set(re.findall(r"\bsm\.(\w+)", code)):
        assert name in sm.__all__, name


def test_the_api_example_runs(real_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.symlink(real_data, tmp_path / "cifar10.npz")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(example(), str(DOC), "exec"), {})
    text = out.getvalue()
    assert "300437" in text and "conv4" in text
    assert re.search(r"TFLOP in \d+ jobs", text)
    assert sum(line.startswith(("PASS", "FAIL", "INCONCLUSIVE", "N/A")) for line in text.splitlines()) == 4, text
    assert (tmp_path / "runs" / "api" / "report" / "report.md").exists()
    assert (tmp_path / "runs" / "api" / "conv1.onnx").stat().st_size > 0


def test_create_model_refuses_what_it_cannot_build():
    import shallowmimic as sm

    for kwargs, message in [({"name": "resnet"}, "unknown model 'resnet' .*known: paper"),
                            ({"name": "conv2"}, "needs|takes a parameter budget"),
                            ({"name": "fast", "budget": "1M"}, "not a budget")]:
        with pytest.raises(sm.UserError, match=message):
            sm.create_model(**kwargs)
    assert sm.list_models("teacher") == ["paper", "fast", "bn"]
    with pytest.raises(sm.UserError, match="unknown role"):
        sm.list_models("judge")
