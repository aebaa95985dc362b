import zlib

import numpy as np
import pytest
import torch

from shallowmimic.core.errors import UserError
from shallowmimic.models.budget import PAPER_BUDGETS, parse_budget, solve_width
from shallowmimic.models.layers import build
from shallowmimic.models.solve import solve_student
from shallowmimic.models.students import STUDENT_OPTIONS, STUDENTS, default_free, free_ranges, get_student, sample_free
from shallowmimic.models.teachers import TEACHERS, get_teacher, teacher_spec


@pytest.mark.parametrize("family", list(STUDENTS))
@pytest.mark.parametrize("budget", list(PAPER_BUDGETS))
def test_budget_invariant_for_every_family(family, budget):
    """Free widths drawn from the paper's ranges -> counted parameters within 0.5% of budget."""
    fam, n = STUDENTS[family], PAPER_BUDGETS[budget]
    rng = np.random.default_rng(zlib.crc32(f"{family}@{budget}".encode()))  # stable across processes
    for _ in range(25):
        s = solve_student(fam, n, sample_free(fam, n, rng))
        assert abs(s.params - n) <= 0.005 * n, (s.spec, s.params)
    for lo, hi in free_ranges(fam, n):
        assert lo <= hi


@pytest.mark.parametrize("family", list(STUDENTS))
def test_solved_count_equals_built_model(family):
    fam = STUDENTS[family]
    s = solve_student(fam, 300_000, default_free(fam, 300_000))
    net = build(s.arch, 3, 32, 10, STUDENT_OPTIONS)
    assert sum(p.numel() for p in net.parameters()) == s.params
    assert sum(isinstance(m, torch.nn.Dropout) for m in net.modules()) == 0


def test_conv_layers_of_each_family():
    for fam in STUDENTS.values():
        convs = sum(1 for lay in solve_student(fam, 1_000_000, default_free(fam, 1_000_000)).arch.layers
                    if lay.kind == "conv")
        assert convs == fam.conv_layers
    assert "L" in STUDENTS["conv1"].spec((64, 500), 30) and "L" in STUDENTS["mlp1"].spec((500,), 30)
    assert "L" not in STUDENTS["conv2"].spec((64, 64), 30)


def test_conv3_example_from_the_issue():
    s = solve_student(get_student("conv3"), parse_budget("3.16M"), (64, 128, 128))
    assert s.spec == "64c@5-mp-128c@5-mp-128c@5-mp-1234fc" and abs(s.params - 3_160_000) < 1000


def test_free_widths_alone_exceeding_the_budget():
    with pytest.raises(UserError, match=r"free widths \(500, 500\) alone need .* more than the budget"):
        solve_student(get_student("conv2"), 1_000_000, (500, 500))


@pytest.mark.parametrize("free, msg", [((64,), "takes 2 free value"), ((64, 0), "positive integers")])
def test_bad_free_widths(free, msg):
    with pytest.raises(UserError, match=msg):
        solve_student(get_student("conv2"), 1_000_000, free)


def test_solve_width_is_exact_on_known_functions():
    assert solve_width(lambda w: 10 * w + 5, 1000) in (99, 100)
    assert solve_width(lambda w: 10 * w + 5, 1004) == 100
    assert solve_width(lambda w: w * w, 10_000) == 100
    assert solve_width(lambda w: w * w, 10_101) == 101  # 101^2 = 10201 is 100 away, 100^2 is 101 away
    assert solve_width(lambda w: 7 * w, 3) == 1


def test_parse_budget():
    assert parse_budget("3.16M") == 3_160_000 and parse_budget("300k") == 300_000
    assert parse_budget("1e6") == 1_000_000 and parse_budget(2500) == 2500
    with pytest.raises(UserError, match="invalid budget"):
        parse_budget("lots")


def test_sampler_respects_the_paper_ranges():
    rng = np.random.default_rng(0)
    fam = get_student("conv4")
    for _ in range(50):
        free = sample_free(fam, PAPER_BUDGETS["10M"], rng)
        for v, (lo, hi) in zip(free, ((50, 300), (50, 300), (50, 350), (50, 350)), strict=True):
            assert lo <= v <= hi
    small = free_ranges(fam, 100_000)
    assert all(hi < 100 for _, hi in small)  # shrunk below 1M


def test_unknown_names_list_the_known_ones():
    with pytest.raises(UserError, match="known: mlp1, mlp2, mlp3, mlp4, mlp5, conv1, conv2, conv3, conv4"):
        get_student("conv9")
    with pytest.raises(UserError, match="known: paper, fast"):
        get_teacher("slow")


def test_teacher_scales_map_onto_the_paper_ranges():
    assert teacher_spec((0, 0, 0, 0)) == "32c2-mp-64c2-mp-128c4-mp-512fc2"
    assert teacher_spec((1, 1, 1, 1)) == "96c2-mp-192c2-mp-384c4-mp-1536fc2"
    with pytest.raises(UserError, match="scales"):
        teacher_spec((0.5, 0.5, 1.5, 0.5))
    assert TEACHERS["fast"].options.batchnorm and not TEACHERS["paper"].options.batchnorm


def test_every_teacher_recipe_is_a_set_of_train_config_fields():
    """Issue 22 item 2: a variant's recipe is copied into TrainConfig as a whole, by field name."""
    from dataclasses import fields

    from shallowmimic.training.loop import TrainConfig
    from shallowmimic.training.teachers import teacher_config

    train_fields = {f.name for f in fields(TrainConfig)}
    for name, variant in TEACHERS.items():
        recipe = {f.name: getattr(variant.recipe, f.name) for f in fields(variant.recipe)}
        assert set(recipe) <= train_fields, name
        cfg = teacher_config(name, epochs=3)
        assert {k: getattr(cfg, k) for k in recipe} == recipe and cfg.loss == "hard" and cfg.epochs == 3


def test_pooled_conv_families_keep_their_paper_layout():
    from shallowmimic.models.students import STUDENTS

    assert STUDENTS["conv2"].spec((20, 30), 40) == "20c@5-mp-30c@5-mp-40fc"
    assert STUDENTS["conv3"].spec((20, 30, 35), 40) == "20c@5-mp-30c@5-mp-35c@5-mp-40fc"
    assert STUDENTS["conv3"].free == ("conv1", "conv2", "conv3") and STUDENTS["conv2"].conv_layers == 2
