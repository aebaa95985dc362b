"""File helpers: atomic writes keep the umask's permissions (issue 21 item 9)."""

import os

import pytest

from shallowmimic.core.files import atomic_path, create_once, current_umask, write_json


@pytest.fixture
def umask():
    old = os.umask(0o022)
    os.umask(old)

    def set_mask(mask):
        os.umask(mask)
        return mask

    yield set_mask
    os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_atomic_writes_respect_the_umask(tmp_path, umask, mask):
    umask(mask)
    assert current_umask() == mask
    write_json(tmp_path / "a.json", {"x": 1})
    with atomic_path(tmp_path / "b.bin") as tmp:
        tmp.write_bytes(b"1")
    for name in ("a.json", "b.bin"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~mask, name


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_a_safetensors_file_keeps_the_umask(tmp_path, umask, mask):
    """safetensors 0.8 replaces the file it writes with one of mode 0600, whatever was there."""
    import torch
    from safetensors.torch import save_file

    umask(mask)
    with atomic_path(tmp_path / "w.safetensors") as tmp:
        save_file({"w": torch.zeros(2)}, str(tmp))
    assert (tmp_path / "w.safetensors").stat().st_mode & 0o777 == 0o666 & ~mask


def test_a_failed_write_leaves_no_file(tmp_path):
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "c.json") as tmp:
        tmp.write_text("half")
        raise RuntimeError
    assert list(tmp_path.iterdir()) == []


def test_provenance_records_the_versions_and_whether_the_tree_was_clean(monkeypatch):
    """Issue 21 item 13."""
    from shallowmimic.core import files as io

    record = io.provenance()
    for key in ("torch", "optuna", "onnxruntime", "onnx", "numpy", "cuda", "git_commit", "git_dirty"):
        assert key in record, key
    assert record["optuna"] and record["onnxruntime"]
    for status, dirty in (("", False), (" M src/x.py", True), (None, None)):
        io.git_dirty.cache_clear()
        monkeypatch.setattr(io, "_git", lambda *a, s=status: s)
        assert io.git_dirty() is dirty
    io.git_dirty.cache_clear()


def test_create_once_keeps_the_first_text_and_leaves_no_temporary(tmp_path, umask):
    umask(0o002)
    assert create_once(tmp_path / "study.id", "a") == "a"
    assert create_once(tmp_path / "study.id", "b") == "a"
    assert [p.name for p in tmp_path.iterdir()] == ["study.id"]
    assert (tmp_path / "study.id").stat().st_mode & 0o777 == 0o664


def test_a_path_inside_the_study_is_named_alike_through_a_symbolic_link(tmp_path):
    from shallowmimic.core.layout import within

    (tmp_path / "study" / "students" / "s1").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "study", target_is_directory=True)
    for out in (tmp_path / "study", tmp_path / "link"):
        for path in (tmp_path / "study" / "students" / "s1", tmp_path / "link" / "students" / "s1"):
            assert within(path, out) == "students/s1"
    assert within(tmp_path / "elsewhere", tmp_path / "study") == str(tmp_path / "elsewhere")
