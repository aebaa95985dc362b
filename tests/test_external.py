"""Issue 23 item 1 (the loader and its checks): teachers from an ONNX file, a TorchScript file or
a Python factory with safetensors weights give the logits of the model they came from, and each
bad input is a one-line error."""

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
])
def test_a_bad_entry_is_refused_where_it_is_written(files, bad, message):
    with pytest.raises(UserError, match=message):
        bad(files)


def test_a_teacher_that_does_not_fit_the_data_is_one_line(files, tmp_path):
    onnx = ExternalTeacher(path=str(files["onnx"]), input="uint8-nhwc")
    small = IMAGES[:, :16, :16]
    with pytest.raises(UserError, match="expects 32x32 images, the data's are 16x16"):
        check(load_external(onnx), onnx, small, 10)
    script = ExternalTeacher(path=str(files["script"]))
    with pytest.raises(UserError, match="cannot run on 16x16 images"):
        check(load_external(script), script, small, 10)
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
    (tmp_path / "junk.pt").write_bytes(b"not torchscript")
    with pytest.raises(UserError, match="not a TorchScript file"):
        load_external(ExternalTeacher(path=str(tmp_path / "junk.pt")))
    (tmp_path / "junk.pt2").write_bytes(b"not an archive")
    with pytest.raises(UserError, match="not a torch.export file"):
        load_external(ExternalTeacher(path=str(tmp_path / "junk.pt2")))
    with pytest.raises(UserError, match="no such file"):
        ExternalTeacher(path=str(tmp_path / "gone.onnx")).digest()
