"""Issue 23 item 1 (the loader and its checks): teachers from an ONNX file, a TorchScript file or
a Python factory with safetensors weights give the logits of the model they came from, and each
bad input is a one-line error."""

import sys

import numpy as np
import pytest
import torch

from shallowmimic.core.errors import UserError
from shallowmimic.data.split import standardize, to_float
from shallowmimic.models.external import ExternalTeacher, check, load_external
from shallowmimic.models.layers import build
from shallowmimic.models.notation import parse_spec

SPEC = "6c-mp-12c-mp-16fc"
IMAGES = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8))


def tiny_net() -> torch.nn.Module:
    """The factory an entry names (`tests.test_external:tiny_net`)."""
    torch.manual_seed(0)
    return build(parse_spec(SPEC), 3, 32, 10)


def broken_net():
    raise ValueError("no such width")


@pytest.fixture
def files(tmp_path):
    from safetensors.torch import save_file

    from shallowmimic.deploy.export import Deployable

    net = tiny_net().eval()
    for p in net.parameters():  # weights of its own, not the factory's fresh ones
        p.data.add_(0.01 * torch.randn_like(p))
    x = standardize(to_float(IMAGES))
    with torch.no_grad():
        want = net(x)
    onnx = tmp_path / "teacher.onnx"
    torch.onnx.export(Deployable(net).eval(), (IMAGES[:2],), str(onnx), input_names=["images"],
                      output_names=["logits"], dynamic_axes={"images": {0: "batch"}}, dynamo=False)
    script = tmp_path / "teacher.pt"
    torch.jit.trace(net, x[:2]).save(str(script))
    pt2 = tmp_path / "teacher.pt2"
    batch = torch.export.Dim("batch")
    torch.export.save(torch.export.export(net, (x[:2],), dynamic_shapes=({0: batch},)), str(pt2))
    weights = tmp_path / "teacher.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights))
    return {"want": want, "onnx": onnx, "script": script, "pt2": pt2, "weights": weights}


def test_every_kind_of_external_teacher_gives_the_original_logits(files):
    entries = [ExternalTeacher(path=str(files["onnx"]), input="uint8-nhwc"),
               ExternalTeacher(path=str(files["script"]), input="standardized-nchw"),
               ExternalTeacher(path=str(files["pt2"]), input="standardized-nchw"),
               ExternalTeacher(factory="tests.test_external:tiny_net", weights=str(files["weights"]))]
    for entry in entries:
        model = load_external(entry, recorded=entry.digest())
        check(model, entry, IMAGES, 10)
        got = model(IMAGES)
        assert got.dtype == torch.float32 and (got - files["want"]).abs().max() < 1e-4, entry.name
    assert len({e.digest() for e in entries}) == 4


def test_an_ensemble_member_is_fed_floats_in_0_1_whatever_its_file_takes(files):
    from shallowmimic.data.split import to_float

    unit = to_float(IMAGES)
    for path, wants in ((files["onnx"], "uint8-nhwc"), (files["script"], "standardized-nchw"),
                        (files["pt2"], "standardized-nchw")):
        entry = ExternalTeacher(path=str(path), input=wants)
        member = load_external(entry, takes="unit-nchw").eval()  # eval() leaves an exported program alone
        assert (member(unit) - files["want"]).abs().max() < 1e-4, path
        with torch.autocast("cpu", dtype=torch.bfloat16):  # run in fp32 whatever the study's precision
            assert (member(unit) - files["want"]).abs().max() < 1e-4, path


@pytest.mark.parametrize("bad, message", [
    (lambda f: ExternalTeacher(path=str(f["onnx"]), input="bgr"), "input 'bgr' is not one of"),
    (lambda f: ExternalTeacher(path=str(f["onnx"]).replace(".onnx", ".h5")), "not an ONNX"),
    (lambda f: ExternalTeacher(), "not neither"),
    (lambda f: ExternalTeacher(factory="tests.test_external:tiny_net"), "weights = a .safetensors"),
    (lambda f: ExternalTeacher(factory=":tiny_net", weights=str(f["weights"])), "is 'package.module:function'"),
    (lambda f: ExternalTeacher(factory="tests.test_external:", weights=str(f["weights"])), "package.module:func"),
    (lambda f: ExternalTeacher(path=str(f["onnx"]), weights=str(f["weights"])), "goes with a factory"),
])
def test_a_bad_entry_is_refused_where_it_is_written(files, bad, message):
    with pytest.raises(UserError, match=message):
        bad(files)


def test_a_teacher_that_does_not_fit_the_data_is_one_line(files, tmp_path):
    onnx = ExternalTeacher(path=str(files["onnx"]), input="uint8-nhwc")
    small = IMAGES[:, :16, :16]
    with pytest.raises(UserError, match=r"takes input of shape \[.*, 32, 32, 3\], but the data's images are 16x16x3"):
        check(load_external(onnx), onnx, small, 10)
    for traced in (files["script"], files["pt2"]):  # a shape guard of torch.export is an AssertionError
        entry = ExternalTeacher(path=str(traced))
        with pytest.raises(UserError, match="cannot run on 16x16 images"):
            check(load_external(entry), entry, small, 10)
    with pytest.raises(UserError, match=r"gives \(10,\) outputs per image, the data has 4 classes"):
        check(load_external(onnx), onnx, IMAGES, 4)
    wrong = ExternalTeacher(path=str(files["onnx"]), input="standardized-nchw")
    with pytest.raises(UserError, match="says input = 'standardized-nchw' but the file takes tensor.uint8.; set "
                                        "input = 'uint8-nhwc'"):
        check(load_external(wrong), wrong, IMAGES, 10)
    recorded = onnx.digest()
    files["onnx"].write_bytes(files["onnx"].read_bytes() + b"\0")
    with pytest.raises(UserError, match="changed since its digest was recorded"):
        load_external(onnx, recorded=recorded)
    with pytest.raises(UserError, match="the factory failed"):
        load_external(ExternalTeacher(factory="tests.test_external:broken_net", weights=str(files["weights"])))
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(UserError, match="do not fit"):
        load_external(ExternalTeacher(factory="tests.test_external:tiny_net",
                                      weights=str(tmp_path / "junk.safetensors")))
    with pytest.raises(UserError, match="cannot import it"):
        load_external(ExternalTeacher(factory="tests.nowhere:net", weights=str(files["weights"])))
    for source, error in (("raise RuntimeError('no GPU here')", "RuntimeError: no GPU here"),
                          ("def net(:", "SyntaxError")):  # the user's module fails as it is imported
        (tmp_path / "users_teacher.py").write_text(source + "\n")
        sys.path.insert(0, str(tmp_path))
        try:
            with pytest.raises(UserError, match=f"cannot import it .{error}"):
                load_external(ExternalTeacher(factory="users_teacher:net", weights=str(files["weights"])))
        finally:
            sys.path.remove(str(tmp_path))
            sys.modules.pop("users_teacher", None)
    (tmp_path / "junk.pt").write_bytes(b"not torchscript")
    with pytest.raises(UserError, match="not a TorchScript file"):
        load_external(ExternalTeacher(path=str(tmp_path / "junk.pt")))
    (tmp_path / "junk.pt2").write_bytes(b"not an archive")
    with pytest.raises(UserError, match="not a torch.export file"):
        load_external(ExternalTeacher(path=str(tmp_path / "junk.pt2")))
    with pytest.raises(UserError, match="no such file"):
        ExternalTeacher(path=str(tmp_path / "gone.onnx")).digest()


class _Wrapped(torch.nn.Module):
    """A teacher wrapped with its own input statistics, held as plain tensors (torch.export makes
    them constants of the program, not buffers)."""

    def __init__(self):
        super().__init__()
        self.lin, self.mean = torch.nn.Linear(3, 10), torch.tensor([0.5, 0.4, 0.3])

    def forward(self, x):
        return self.lin(x.mean((2, 3)) - self.mean)


def test_a_torch_export_teacher_moves_with_its_constants(tmp_path):
    path = tmp_path / "wrapped.pt2"
    torch.export.save(torch.export.export(_Wrapped().eval(), (torch.rand(2, 3, 32, 32),)), str(path))
    # the meta device stands in for a GPU: a constant left on the CPU fails the same way there
    program = load_external(ExternalTeacher(path=str(path)), device="meta").run  # (autocast refuses meta)
    assert program(torch.rand(2, 3, 32, 32, device="meta")).shape == (2, 10)


def test_a_node_that_mounts_the_file_elsewhere_loads_it_from_its_own_entry(files, tmp_path):
    import shutil

    from shallowmimic.data.split import SplitData
    from shallowmimic.distill.ensemble import build_ensemble, find_teachers, load_ensemble
    from shallowmimic.training.external import evaluate_external

    y = torch.arange(16) % 10
    data = SplitData(IMAGES, y, IMAGES[:8], y[:8], IMAGES[8:], y[8:], fingerprint="f")
    entry = ExternalTeacher(path=str(files["script"]))
    evaluate_external(entry, data, tmp_path / "study" / "x00", 10, torch.device("cpu"))
    build_ensemble(find_teachers([tmp_path / "study"]), 1, data, tmp_path / "ens", "cpu")
    elsewhere = tmp_path / "other-mount" / "teacher.pt"  # what model.json names is not there
    elsewhere.parent.mkdir()
    shutil.move(files["script"], elsewhere)
    with pytest.raises(UserError, match="no such file"):
        load_ensemble(tmp_path / "ens", "cpu")
    ensemble = load_ensemble(tmp_path / "ens", "cpu", external=(ExternalTeacher(path=str(elsewhere)),))
    assert (ensemble(to_float(IMAGES)) - files["want"]).abs().max() < 1e-4
    # its stored logits are still its own (they name the digest it ran with, not a path)
    again = build_ensemble(find_teachers([tmp_path / "study"]), 1, data, tmp_path / "ens2", "cpu")
    assert again["val_acc"] == float((files["want"][:8].argmax(1) == y[:8]).float().mean())
