import hashlib
import shutil
import tarfile

import numpy as np
import pytest
from click.testing import CliRunner

from shallowmimic.cli import main
from shallowmimic.core.errors import DataError
from shallowmimic.data import download as dl
from shallowmimic.data.sources import load_dataset

from .conftest import tiny_arrays


def run_cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_fails(args, *fragments):
    result = run_cli(*args)
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    # Progress bars may share the stream; the error itself is exactly one line.
    lines = [ln for ln in result.output.splitlines() if ln.startswith("Error: ")]
    assert len(lines) == 1, result.output
    for f in fragments:
        assert f in lines[0], lines[0]


def test_directory_archive_and_npz_load_identically(tiny, tiny_npz, tiny_batches, tiny_tar):
    loaded = [load_dataset(p) for p in (tiny_batches, tiny_tar, tiny_npz)]
    assert [d.kind for d in loaded] == ["cifar-dir", "cifar-tar", "npz"]
    for d in loaded:
        np.testing.assert_array_equal(d.x_train, tiny["x_train"])
        np.testing.assert_array_equal(d.y_train, tiny["y_train"])
        np.testing.assert_array_equal(d.x_test, tiny["x_test"])
        np.testing.assert_array_equal(d.y_test, tiny["y_test"])
        assert d.class_names == tuple(tiny["label_names"])
        assert d.x_train.dtype == np.uint8 and d.y_train.dtype == np.int64


def test_data_digest_is_the_content(tiny, tiny_npz, tiny_batches, tiny_tar, tmp_path):
    """Issue 21 item 1: the data's identity is what it holds; a path, a format or a copy elsewhere
    is the same data, one changed pixel or label is not."""
    digests = {load_dataset(p).digest for p in (tiny_batches, tiny_tar, tiny_npz)}
    moved = tmp_path / "moved.npz"
    shutil.copy(tiny_npz, moved)
    assert digests == {load_dataset(moved).digest} and len(digests.pop()) == 64
    pixel = {**tiny, "x_train": tiny["x_train"].copy()}
    pixel["x_train"][0, 0, 0, 0] ^= 1
    label = {**tiny, "y_train": (tiny["y_train"] + 1) % 10}
    for i, arrays in enumerate((pixel, label)):
        np.savez(tmp_path / f"{i}.npz", **arrays)
        assert load_dataset(tmp_path / f"{i}.npz").digest != load_dataset(moved).digest


def test_parent_directory_of_batches_is_accepted(tiny_batches):
    assert load_dataset(tiny_batches.parent).kind == "cifar-dir"


def test_any_class_count_and_image_size(tmp_path):
    arrays = tiny_arrays(size=16, classes=3)
    np.savez(tmp_path / "d.npz", **arrays)
    d = load_dataset(tmp_path / "d.npz")
    assert (d.num_classes, d.image_size) == (3, 16)


def test_label_names_are_optional(tmp_path, tiny):
    arrays = {k: v for k, v in tiny.items() if k != "label_names"}
    np.savez(tmp_path / "d.npz", **arrays)
    assert load_dataset(tmp_path / "d.npz").class_names == tuple(f"class_{i}" for i in range(10))


# --- one test per bad input: exit code 1 and a one-line message naming file and problem ----------


def test_missing_path(tmp_path):
    assert_fails(["data", "info", "--data", tmp_path / "nope.npz"], "nope.npz", "no such file")


def test_truncated_npz(tmp_path, tiny_npz):
    bad = tmp_path / "trunc.npz"
    bad.write_bytes(tiny_npz.read_bytes()[: tiny_npz.stat().st_size // 2])
    assert_fails(["data", "info", "--data", bad], "trunc.npz", "corrupt or truncated")


def test_corrupt_npz(tmp_path):
    bad = tmp_path / "junk.npz"
    bad.write_bytes(b"this is not a zip file at all" * 10)
    assert_fails(["data", "info", "--data", bad], "junk.npz", "corrupt or truncated")


def test_missing_keys(tmp_path, tiny):
    np.savez(tmp_path / "m.npz", x_train=tiny["x_train"], y_train=tiny["y_train"])
    assert_fails(["data", "info", "--data", tmp_path / "m.npz"], "m.npz", "missing array(s) x_test, y_test")


@pytest.mark.parametrize(
    "key, value, fragment",
    [
        ("x_train", np.zeros((50, 8, 8), np.uint8), "expected (N, H, W, 3)"),
        ("x_test", np.zeros((10, 8, 6, 3), np.uint8), "square RGB"),
        ("x_train", np.zeros((50, 8, 8, 3), np.float32), "dtype float32, expected uint8"),
        ("y_train", np.zeros((49,), np.uint8), "50 images but y_train has 49 labels"),
        ("y_test", np.zeros((10, 2), np.uint8), "expected a 1-D array"),
    ],
)
def test_wrong_shapes_and_dtypes(tmp_path, tiny, key, value, fragment):
    np.savez(tmp_path / "s.npz", **{**tiny, key: value})
    assert_fails(["data", "info", "--data", tmp_path / "s.npz"], "s.npz", fragment)


@pytest.mark.parametrize("key, label", [("y_train", 10), ("y_test", -1)])
def test_labels_out_of_range(tmp_path, tiny, key, label):
    y = tiny[key].astype(np.int64)
    y[3] = label
    np.savez(tmp_path / "l.npz", **{**tiny, key: y})
    assert_fails(["data", "info", "--data", tmp_path / "l.npz"], "l.npz", key, "outside [0, 9]")


def test_truncated_tar(tmp_path, tiny_tar):
    bad = tmp_path / "cut.tar.gz"
    bad.write_bytes(tiny_tar.read_bytes()[: tiny_tar.stat().st_size // 2])
    assert_fails(["data", "info", "--data", bad], "cut.tar.gz", "corrupt or truncated")


def test_corrupt_tar(tmp_path):
    bad = tmp_path / "junk.tar.gz"
    bad.write_bytes(b"\x1f\x8b" + b"garbage" * 100)
    assert_fails(["data", "info", "--data", bad], "junk.tar.gz", "corrupt or truncated")


def test_tar_missing_batch(tmp_path, tiny_batches):
    (tiny_batches / "data_batch_3").unlink()
    assert_fails(["data", "info", "--data", tiny_batches], "missing CIFAR batch file 'data_batch_3'")


def test_corrupt_batch_pickle(tiny_batches):
    (tiny_batches / "test_batch").write_bytes(b"\x80\x02}q\x00(")
    assert_fails(["data", "info", "--data", tiny_batches], "test_batch", "corrupt or truncated")


def test_batch_pickle_cannot_run_code(tiny_batches):
    evil = b"cos\nsystem\n(S'echo pwned'\ntR."
    (tiny_batches / "data_batch_1").write_bytes(evil)
    assert_fails(["data", "info", "--data", tiny_batches], "data_batch_1", "refusing to load os.system")


def test_unsupported_file(tmp_path):
    (tmp_path / "x.csv").write_text("a,b")
    assert_fails(["data", "info", "--data", tmp_path / "x.csv"], "x.csv", "unsupported data file")


# --- download and resolution --------------------------------------------------------------------


def test_download_verifies_md5_and_skips_when_present(tmp_path, tiny_tar):
    md5 = hashlib.md5(tiny_tar.read_bytes()).hexdigest()
    target = dl.download_cifar10(tmp_path / "cache", url=tiny_tar.as_uri(), md5=md5, progress=False)
    assert target.read_bytes() == tiny_tar.read_bytes()
    calls = []
    again = dl.download_cifar10(tmp_path / "cache", url="unused", md5=md5,
                                opener=lambda url: calls.append(url), progress=False)
    assert again == target and calls == []
    assert load_dataset(target).kind == "cifar-tar"


def test_download_checksum_mismatch_writes_nothing(tmp_path, tiny_tar):
    out = tmp_path / "cache"
    assert_fails(["data", "download", "--dir", out, "--url", tiny_tar.as_uri()], "checksum mismatch")
    assert not any(out.iterdir())


def test_download_unreachable_url(tmp_path):
    assert_fails(["data", "download", "--dir", tmp_path, "--url", (tmp_path / "none.tgz").as_uri()],
                 "download failed")


def test_resolution_order(tmp_path, tiny_npz, tiny_tar, monkeypatch):
    monkeypatch.setenv(dl.ENV_CACHE, str(tmp_path / "cache"))
    monkeypatch.setenv(dl.ENV_DATA, str(tiny_npz))
    assert dl.resolve_data_path("explicit.npz").name == "explicit.npz"
    assert dl.resolve_data_path(None) == tiny_npz
    monkeypatch.delenv(dl.ENV_DATA)
    (tmp_path / "cache").mkdir()
    shutil.copy(tiny_tar, tmp_path / "cache" / "cifar-10-python.tar.gz")
    assert dl.resolve_data_path(None).name == "cifar-10-python.tar.gz"


def test_no_data_anywhere_explains_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv(dl.ENV_CACHE, str(tmp_path / "empty"))
    monkeypatch.delenv(dl.ENV_DATA, raising=False)

    def offline(*a, **k):
        raise DataError("https://example/cifar: download failed (offline)")

    monkeypatch.setattr(dl, "download_cifar10", offline)
    assert_fails(["data", "info"], "no CIFAR-10 data found", "--data PATH", "shallowmimic data download")


def test_tar_roundtrip_through_tarfile_members(tiny_tar):
    with tarfile.open(tiny_tar) as tar:
        assert "cifar-10-batches-py/data_batch_1" in tar.getnames()


# --- the CLI on good data -------------------------------------------------------------------------


def test_info_reports_counts_and_split(tiny_npz):
    result = run_cli("data", "info", "--data", tiny_npz, "--val-size", 10)
    assert result.exit_code == 0, result.output
    assert "50 train / 10 test" in result.output
    assert "40 train / 10 validation" in result.output
    assert "c9" in result.output


def test_preview_writes_png(tmp_path, tiny_npz):
    out = tmp_path / "p.png"
    result = run_cli("data", "preview", "--data", tiny_npz, "--out", out, "--images", 3)
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("cmd", [[], ["data"], ["data", "info"], ["data", "preview"],
                                 ["data", "download"], ["bench"], ["bench", "augment"]])
def test_help_everywhere(cmd):
    result = run_cli(*cmd, "--help")
    assert result.exit_code == 0 and "Usage:" in result.output


def test_real_cifar10_info(real_data):
    result = run_cli("data", "info", "--data", real_data)
    assert result.exit_code == 0, result.output
    assert "50,000 train / 10,000 test" in result.output
    assert "40,000 train / 10,000 validation" in result.output
    train_all = [ln.split()[1] for ln in result.output.splitlines()[6:16]]
    assert train_all == ["5,000"] * 10


def test_bench_augment_prints_a_table():
    result = run_cli("bench", "augment", "--batch", "32", "--device", "cpu")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("machine reference: ") and "GFLOP/s" in lines[0]
    assert "images/s" in lines[1] and "cpu" in result.output


def test_the_split_on_a_device_is_a_typed_record(tmp_path):
    """Issue 22 item 3: the split's tensors are a frozen record with its fingerprint as a field,
    not a dict that also carries a string."""
    import dataclasses

    import torch

    from shallowmimic.data.split import SplitConfig, SplitData, make_split, split_tensors

    path = tmp_path / "d.npz"
    np.savez(path, **tiny_arrays(n_train=60, n_test=7, size=8, classes=3))
    ds = load_dataset(path)
    data = split_tensors(ds, SplitConfig(val_size=20, seed=3, train_limit=25, val_limit=5), torch.device("cpu"))
    assert isinstance(data, SplitData) and data.fingerprint == make_split(60, 20, 3).fingerprint()
    assert (len(data.x_train), len(data.y_train), len(data.x_val), len(data.x_test)) == (25, 25, 5, 7)
    assert data.x_train.dtype == torch.uint8 and data.y_val.dtype == torch.int64
    with pytest.raises(dataclasses.FrozenInstanceError):
        data.fingerprint = "other"


# --- image folders (issue 23 item 2) -----------------------------------------------------------


def _write_folder(root, arrays, names=("cat", "dog", "emu"), fmt="png"):
    from PIL import Image

    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        for i, (img, label) in enumerate(zip(x, y, strict=True)):
            d = root / split / names[label]
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(d / f"{i:04d}.{fmt}")
    return root


def test_an_image_folder_loads_decoded_once_and_cached(tmp_path, monkeypatch):
    import PIL.Image

    from shallowmimic.data.sources import load_dataset

    monkeypatch.setenv("SHALLOWMIMIC_CACHE", str(tmp_path / "cache"))
    arrays = tiny_arrays(n_train=30, n_test=9, size=16, classes=3)
    root = _write_folder(tmp_path / "imgs", arrays)
    ds = load_dataset(root, image_size=16)
    assert ds.kind == "folder" and ds.class_names == ("cat", "dog", "emu") and ds.image_size == 16
    # files are read in sorted order per class: the same images and labels, class by class
    order = np.argsort(arrays["y_train"], kind="stable")
    assert np.array_equal(ds.x_train, arrays["x_train"][order]) and np.array_equal(ds.y_train, arrays["y_train"][order])
    assert len(list((tmp_path / "cache" / "image-folders").glob("*.npz"))) == 1
    monkeypatch.setattr(PIL.Image, "open", lambda *a, **k: (_ for _ in ()).throw(AssertionError("decoded again")))
    again = load_dataset(root, image_size=16)
    assert again.digest == ds.digest
    monkeypatch.undo()
    monkeypatch.setenv("SHALLOWMIMIC_CACHE", str(tmp_path / "cache"))
    bigger = load_dataset(root, image_size=24)  # another size: decoded anew, cached apart
    assert bigger.image_size == 24 and len(list((tmp_path / "cache" / "image-folders").glob("*.npz"))) == 2
    first = sorted((root / "train" / "cat").iterdir())[0]
    PIL.Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(first)  # a changed file: never the stale cache
    assert load_dataset(root, image_size=16).digest != ds.digest


def test_a_non_square_image_is_center_cropped_then_resized(tmp_path, monkeypatch):
    from PIL import Image

    from shallowmimic.data.sources import load_dataset

    monkeypatch.setenv("SHALLOWMIMIC_CACHE", str(tmp_path / "cache"))
    wide = np.zeros((8, 24, 3), np.uint8)
    wide[:, 8:16] = 200  # the centre square is all 200; the edges that are cut are 0
    for split in ("train", "test"):
        for name in ("a", "b"):
            (tmp_path / "d" / split / name).mkdir(parents=True)
            Image.fromarray(wide).save(tmp_path / "d" / split / name / "x.png")
    ds = load_dataset(tmp_path / "d", image_size=8)
    assert ds.x_train.shape == (2, 8, 8, 3) and (ds.x_train == 200).all()


@pytest.mark.parametrize("damage, message", [
    (lambda r: shutil.rmtree(r / "test" / "emu"), "different class folders"),
    (lambda r: (r / "train" / "cat" / "notes.txt").write_text("x"), "not a PNG or JPEG"),
    (lambda r: (r / "train" / "dog" / "0001.png").write_bytes(b"not an image"), "not a readable image"),
    (lambda r: [p.unlink() for p in (r / "test" / "cat").iterdir()], "no images"),
])
def test_a_bad_image_folder_is_one_line(tmp_path, monkeypatch, damage, message):
    monkeypatch.setenv("SHALLOWMIMIC_CACHE", str(tmp_path / "cache"))
    root = _write_folder(tmp_path / "imgs", tiny_arrays(n_train=30, n_test=9, size=8, classes=3))
    damage(root)
    r = CliRunner().invoke(main, ["data", "info", "--data", str(root), "--image-size", "8"])
    assert r.exit_code == 1 and message in r.output and "Traceback" not in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1


def test_a_study_reads_its_image_size_from_the_config():
    from shallowmimic.study.config import load_study

    assert load_study("smoke", ["images.size=48"]).images.size == 48
    from shallowmimic.core.errors import UserError

    with pytest.raises(UserError, match="images.size"):
        load_study("smoke", ["images.size=4"])
