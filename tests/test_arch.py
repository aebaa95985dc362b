import pytest
import torch

from shallowmimic.core.errors import UserError
from shallowmimic.models.layers import FlatLinear, build
from shallowmimic.models.notation import BuildOptions, count_params, format_spec, parse_spec

PAPER_TEACHERS = [
    ("76c2-mp-126c2-mp-148c4-mp-1200fc2", 5_339_350, "5.3M"),
    ("96c2-mp-171c2-mp-128c4-mp-512fc2", 2_453_729, "2.5M"),
    ("54c2-mp-158c2-mp-189c4-mp-1044fc2", 5_823_101, "5.8M"),
]


def numel(net):
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("spec, exact, rounded", PAPER_TEACHERS)
def test_paper_teacher_parameter_counts(spec, exact, rounded):
    arch = parse_spec(spec)
    assert count_params(arch, 3, 32, 10) == exact
    assert f"{exact / 1e6:.1f}M" == rounded
    assert numel(build(arch, 3, 32, 10)) == exact


@pytest.mark.parametrize("spec", [
    "128c-p-1200L-30k", "64c@5-mp3-20L-300fc", "32c2@5-mp-64c-mp-100fc", "500L-2.5kfc", "1200fc3",
    "16c-mp3-mp-mp-mp-10", "8c",
])
@pytest.mark.parametrize("batchnorm", [False, True])
def test_count_matches_built_model(spec, batchnorm):
    arch = parse_spec(spec)
    net = build(arch, 3, 32, 7, BuildOptions(batchnorm=batchnorm))
    assert numel(net) == count_params(arch, 3, 32, 7, batchnorm)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 7)


def test_notation_details():
    layers = parse_spec("128c-p-1200L-30k").layers
    assert [(lay.kind, lay.width) for lay in layers] == [("conv", 128), ("pool", 0), ("linear", 1200), ("fc", 30000)]
    assert parse_spec("64c2@5").layers == parse_spec("64c@5-64c@5").layers
    assert format_spec(parse_spec("76c2-mp-126c2-mp3-1200fc2").layers) == "76c2-mp-126c2-mp3-1200fc2"
    assert parse_spec("1.2kfc").layers[0].width == 1200


def test_input_size_and_classes_come_from_the_data():
    arch = parse_spec("8c-mp-8c-mp-16fc")
    assert build(arch, 3, 48, 100)(torch.randn(1, 3, 48, 48)).shape == (1, 100)
    assert count_params(arch, 3, 48, 100) != count_params(arch, 3, 32, 10)


@pytest.mark.parametrize("spec, fragment", [
    ("76c2-mq-126c2", "76c2->>mq<<-126c2"),
    ("76x2", ">>76x2<<"),
    ("", "empty"),
    ("64c@4", "odd kernel"),
    ("100fc-64c", "conv layer after a fully-connected layer"),
    ("1.5fc", "whole number"),
    ("10fc-mp", "pool after a fully-connected layer"),
])
def test_invalid_specs_point_at_the_problem(spec, fragment):
    with pytest.raises(UserError, match="invalid spec") as e:
        parse_spec(spec)
    assert fragment in str(e.value)


def test_too_many_pools_for_the_image():
    with pytest.raises(UserError, match="too many pools"):
        count_params(parse_spec("8c-" + "-".join(["mp"] * 7)), 3, 32, 10)


def test_glorot_init_scale_and_input_scale():
    arch = parse_spec("100fc")
    a = build(arch, 3, 8, 10, BuildOptions(init_scale=1.0))
    torch.manual_seed(0)
    a = build(arch, 3, 8, 10, BuildOptions(init_scale=1.0))
    torch.manual_seed(0)
    b = build(arch, 3, 8, 10, BuildOptions(init_scale=2.0, input_scale=0.5))
    wa, wb = a[2].weight, b[2].weight
    assert torch.allclose(wb, 2 * wa)
    bound = (6 / (192 + 100)) ** 0.5
    assert wa.abs().max() <= bound and wa.abs().max() > 0.9 * bound
    x = torch.randn(1, 3, 8, 8)
    assert torch.allclose(b[0](x), 0.5 * x)


def test_teacher_dropout_placement():
    net = build(parse_spec("8c2-mp-8c2-mp-8c4-mp-32fc2"), 3, 32, 10,
                BuildOptions(pool_dropout=(0.1, 0.2, 0.3), fc_dropout=0.4))
    rates = [m.p for m in net if isinstance(m, torch.nn.Dropout)]
    assert rates == [0.1, 0.2, 0.3, 0.4, 0.4]


def _reference_forward(net, x):
    """The network as the spec reads: activation before pool, NCHW flatten into a Linear."""
    mods = list(net)
    for i in range(len(mods) - 1):  # undo the pool-before-ReLU reordering
        if isinstance(mods[i], torch.nn.MaxPool2d) and isinstance(mods[i + 1], torch.nn.ReLU):
            mods[i], mods[i + 1] = mods[i + 1], mods[i]
    for m in mods:
        x = torch.nn.functional.linear(x.contiguous().flatten(1), m.weight, m.bias) if isinstance(m, FlatLinear) \
            else m(x)
    return x


@pytest.mark.parametrize("spec", ["30c@5-mp3-12L-241fc", "8c@5-mp-8c@5-mp-8c@5-mp-20fc", "40fc-30fc", "6c-6c-mp",
                                  "8c-mp-8c-gmp"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_speed_rewrites_compute_the_spec_exactly(spec, channels_last):
    """Pool-before-ReLU and the channels_last flatten are the same function with the same
    weight names as the plain build (conv-ReLU-pool, nn.Flatten, Linear)."""
    torch.manual_seed(0)
    net = build(parse_spec(spec), 3, 16, 10, BuildOptions())
    x = torch.randn(4, 3, 16, 16)
    if channels_last:
        net, x = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    out = net(x)
    ref = _reference_forward(net, x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    g_out, = torch.autograd.grad(out.square().sum(), x)
    g_ref, = torch.autograd.grad(ref.square().sum(), x)
    torch.testing.assert_close(g_out, g_ref, rtol=1e-4, atol=1e-5)
    kinds = [type(m).__name__ for m in net]
    assert ("ReLU", "MaxPool2d") not in set(zip(kinds, kinds[1:], strict=False))
    assert ("MaxPool2d", "ReLU") in set(zip(kinds, kinds[1:], strict=False)) or "mp" not in spec


def test_weight_names_match_models_saved_before_the_rewrites():
    # A flatten used to sit where the Identity is: the Linear layers keep their indices.
    net = build(parse_spec("30c@5-mp3-12L-241fc"), 3, 32, 10, BuildOptions())
    assert list(net.state_dict()) == ["1.weight", "1.bias", "5.weight", "6.weight", "6.bias", "8.weight", "8.bias"]
