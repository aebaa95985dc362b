from pathlib import Path

import numpy as np
import pytest

from shallowmimic.core.config import from_dict
from shallowmimic.core.errors import UserError
from shallowmimic.report.findings import check_findings
from shallowmimic.study.config import PRESETS, StudyConfig, load_study

N = 10_000


# The unit tests below speak of the 0.1M / 0.3M budgets the quick preset had when they were
# written: they pin those budgets (and the middle of the ranges) so that the preset may change.
AT_100K = ['students.budgets=["100k", "300k"]', 'students.hard_budgets=["100k"]', "students.widths={}"]


def quick(overrides=()):
    return load_study("quick", [*AT_100K, *overrides])


def acc(v):
    """One model at accuracy exactly `v`, right on a random set of images (its own draw for
    each accuracy, so two settings disagree on many images, as real models do)."""
    c = np.zeros(N, dtype=bool)
    c[np.random.default_rng(round(v * 1e4)).permutation(N)[: round(N * v)]] = True
    return {"test_acc": c.mean(), "correct": c[None, :]}


def ens(e, best):
    return {"k": 3, "test_acc": e, "correct": acc(e)["correct"][0],
            "best_member": {"test_acc": best, "correct": acc(best)["correct"][0]}}


def statuses(mimic, hard, ensemble):
    return [f.status for f in check_findings(mimic, hard, ensemble)]


def test_findings_pass_on_the_papers_pattern():
    mimic = {("mlp1", 1): acc(0.6), ("conv1", 1): acc(0.7), ("conv2", 1): acc(0.8),
             ("conv1", 2): acc(0.75), ("conv2", 2): acc(0.82)}
    hard = {("conv1", 1): acc(0.65)}
    assert statuses(mimic, hard, ens(0.9, 0.88)) == ["PASS"] * 4


def test_findings_fail_when_the_pattern_breaks():
    mimic = {("mlp1", 1): acc(0.75), ("conv1", 1): acc(0.7), ("conv2", 1): acc(0.65)}
    hard = {("conv1", 1): acc(0.72)}
    assert statuses(mimic, hard, ens(0.7, 0.71)) == ["FAIL"] * 4
    assert statuses({}, {}, None) == ["N/A"] * 4


def test_tiny_differences_are_inconclusive_not_pass_or_fail():
    # 0.1 points apart: the old strict orderings called this PASS (or FAIL); the data cannot tell
    mimic = {("mlp1", 1): acc(0.699), ("conv1", 1): acc(0.700), ("conv2", 1): acc(0.701)}
    hard = {("conv1", 1): acc(0.699)}
    assert statuses(mimic, hard, ens(0.702, 0.701)) == ["INCONCLUSIVE"] * 4


def test_adjacent_depths_are_guards():
    base = {("mlp1", 1): acc(0.5), ("conv1", 1): acc(0.6), ("conv4", 1): acc(0.7)}
    flat = {**base, ("conv2", 1): acc(0.66), ("conv3", 1): acc(0.659)}  # conv3 a hair below conv2
    assert check_findings(flat, {}, None)[0].status == "PASS"
    dip = {**base, ("conv2", 1): acc(0.68), ("conv3", 1): acc(0.62)}  # significantly reversed
    assert check_findings(dip, {}, None)[0].status == "FAIL"


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_loads_and_validates(name):
    cfg = load_study(name)
    assert cfg.name == name and cfg.ensemble.k <= cfg.teachers.count


def test_paper_preset_has_the_protocols_sizes():
    cfg = load_study("paper")
    assert (cfg.teachers.count, cfg.ensemble.k, cfg.transfer.epochs) == (16, 16, 160)
    assert len(cfg.students.families) == 9 and cfg.students.budgets == ("1M", "3.16M", "10M", "31.6M")
    assert cfg.students.hard_budgets == ("10M",)


def test_config_rejects_unknown_keys_and_wrong_types():
    with pytest.raises(UserError, match=r"unknown key\(s\) teacher"):
        from_dict(StudyConfig, {"teacher": {}})
    with pytest.raises(UserError, match="expected int"):
        from_dict(StudyConfig, {"teachers": {"count": "3"}})
    with pytest.raises(UserError, match="ensemble.k = 5"):
        quick(["ensemble.k=5"])
    with pytest.raises(UserError, match="unknown student family"):
        quick(['students.families=["conv7"]'])
    assert quick(["students.lr.hard=0.5"]).students.lr.hard == 0.5
    with pytest.raises(UserError, match="expected a table"):
        quick(["students.lr=0.5"])
    with pytest.raises(UserError, match=r"students.lr.mimic: expected float, got 'abc'"):
        quick(["students.lr.mimic=abc"])


def test_quick_preset_names_its_deviations():
    from shallowmimic.study.config import deviations

    text = " | ".join(deviations(load_study("quick")))
    for needle in ("batch norm", "label smoothing", "triangular schedule", "no teacher search", "3 teachers",
                   "8 epochs of 16000 images", "linear schedule", "gradient-norm clipping for mimic",
                   "budgets 100k, 300k", "students conv2@300k, conv3@300k are not trained",
                   "hard-label twins of conv1, conv4 only"):
        assert needle in text, needle
    assert "averaged over test-time augmentations" not in text  # the quick ensemble labels each image once
    flip = " | ".join(deviations(quick(['transfer.tta="flip"'])))
    assert "test-time augmentations (flip)" in flip
    assert "clipping for hard" not in text  # hard-label students are not clipped
    paper = " | ".join(deviations(load_study("paper")))
    assert "batch norm" not in paper and "budgets" not in paper


def test_per_loss_settings_reach_the_students():
    from shallowmimic.study.planning import student_train_config

    cfg = quick(["students.lr.hard=0.07", "students.grad_clip.mimic=2.5"])
    mimic, hard = student_train_config(cfg, "mimic", 0), student_train_config(cfg, "hard", 0)
    assert (mimic.lr, mimic.grad_clip) == (cfg.students.lr.mimic, 2.5)
    assert (hard.lr, hard.grad_clip) == (0.07, 0.0)


@pytest.mark.parametrize("override, message", [
    ('transfer.tta="rotate"', "transfer.tta"), ('precision="fp16"', "precision"),
    ("students.grad_clip.hard=true", "expected float"),
    ('students.hard_families=["mlp2"]', "students.hard_families"),
    ('students.omit=["conv2@1M"]', "students.omit"), ('students.omit=["conv5@100k"]', "students.omit"),
    ('students.omit=["conv2"]', "students.omit"),
])
def test_new_fields_are_validated(override, message):
    with pytest.raises(UserError, match=message):
        quick([override])


def test_teacher_label_smoothing_override_is_reported_and_keyed():
    from shallowmimic.study.config import deviations
    from shallowmimic.study.planning import plan

    base, off = quick(), quick(["teachers.label_smoothing=0.0"])
    assert "label smoothing 0," in " | ".join(deviations(off))
    dirs = lambda cfg: [j.dir for j in plan(cfg, Path("runs/x"), {"d": 1})["teachers"]]  # noqa: E731
    assert set(dirs(base)).isdisjoint(dirs(off))  # different teachers, different directories


def test_hard_label_twins_only_for_hard_families():
    from shallowmimic.study.planning import plan

    def twins(cfg):
        return {j.params["family"] for j in plan(cfg, Path("runs/x"), {"d": 1})["students"] if "hard" in j.name}

    every = quick(["students.hard_families=[]"])
    convs = quick(['students.hard_families=["conv1","conv2","conv3","conv4"]'])
    assert twins(every) == set(every.students.families)
    assert twins(convs) == {"conv1", "conv2", "conv3", "conv4"}


def test_omitted_settings_are_not_trained_but_their_hard_twins_are():
    from shallowmimic.study.planning import plan

    cfg = quick(['students.omit=["conv2@300k","conv3@0.3M"]', 'students.hard_families=["conv2"]'])
    names = {j.name for j in plan(cfg, Path("runs/x"), {"d": 1})["students"]}
    assert not any(n.startswith(("conv2-300k-mimic", "conv3-300k-mimic")) for n in names)
    assert {"conv2-100k-mimic-r0", "conv4-300k-mimic-r0", "conv2-100k-hard-r0"} <= names
    assert len(names) == (5 * 2 - 2) * cfg.students.repeats + 1


def test_cycled_transfer_epochs_are_a_named_deviation():
    """Issue 9 item 7: students trained longer than the stored transfer set say so in the report."""
    from shallowmimic.study.config import deviations

    assert not any("more than once" in d for d in deviations(quick()))
    cycled = deviations(quick(["students.epochs=500", "transfer.epochs=160"]))
    assert any("students train 500 epochs over 160 stored transfer epochs" in d for d in cycled)
    assert any("more than once" in d for d in deviations(load_study("paper")))  # 500 over 160


def test_student_widths_reach_mimic_and_hard_students_and_only_them():
    from shallowmimic.distill.students import StudentSetting
    from shallowmimic.study.planning import plan

    def jobs(cfg):
        return {j.name: j for j in plan(cfg, Path("runs/x"), {"d": 1})["students"]}

    base = jobs(quick(["students.widths={}"]))
    wide = jobs(quick(["students.widths={}", "students.widths.conv2@100k=[32, 32]",
                                     "students.widths.conv1@300k=[40, 300]"]))
    assert base.keys() == wide.keys()
    for name, job in wide.items():
        spec = StudentSetting.from_params(job.params).solved(32, 10).spec
        if name.startswith("conv2-100k"):  # mimic and hard-label twins alike
            assert spec.startswith("32c@5-mp-32c@5-mp-") and job.dir != base[name].dir
        elif name.startswith("conv1-300k"):
            assert spec.startswith("40c@5-mp3-") and job.dir != base[name].dir
        else:  # every other student keeps its directory: a study resumes them
            assert job.dir == base[name].dir and "free" not in job.params
            assert spec == StudentSetting.from_params(base[name].params).solved(32, 10).spec
    assert sum(n.startswith("conv2-100k-mimic") for n in wide) == 2


def test_hard_label_settings_can_have_fewer_models():
    from shallowmimic.study.config import deviations
    from shallowmimic.study.planning import plan

    def counts(overrides):
        names = [j.name for j in plan(quick(overrides), Path("runs/x"), {"d": 1})["students"]]
        return tuple(sum(n.startswith(f"conv4-100k-{loss}") for n in names) for loss in ("mimic", "hard"))

    assert counts(["students.repeats=2", "students.hard_repeats=0"]) == (2, 2)
    assert counts(["students.repeats=2", "students.hard_repeats=1"]) == (2, 1)
    assert counts(["students.repeats=1", "students.hard_repeats=3"]) == (1, 3)
    text = " | ".join(deviations(quick(["students.repeats=2", "students.hard_repeats=1"])))
    assert "2 model(s) per setting (1 per hard-label setting)" in text
    with pytest.raises(UserError, match="hard_repeats must be 0"):
        quick(["students.hard_repeats=-1"])
    with pytest.raises(UserError, match="hard_repeats sets the models"):
        quick(["students.widths={}", "students.hard_repeats=1", "search.student_trials=2"])


def test_students_can_be_validated_after_the_last_epoch_only():
    from shallowmimic.study.config import deviations
    from shallowmimic.study.planning import plan

    def val_every(overrides):
        return {j.params["train"]["val_every"] for j in plan(quick(overrides), Path("runs/x"),
                                                             {"d": 1})["students"]}

    assert val_every(["students.val_every=1"]) == {1}
    assert val_every(["students.val_every=8"]) == {8}
    assert any(d.endswith("not the plateau schedule; the model kept is the last epoch's")
               for d in deviations(quick(["students.val_every=8", "students.epochs=8"])))
    assert any(d.endswith("not the plateau schedule; validated every 2 epochs")
               for d in deviations(quick(["students.val_every=2", "students.epochs=8"])))
    with pytest.raises(UserError, match="val_every must be at least 1"):
        quick(["students.val_every=0"])
    with pytest.raises(UserError, match="val_every must be 1 with the plateau schedule"):
        quick(["students.val_every=2", 'students.schedule="plateau"'])


@pytest.mark.parametrize("override, message", [
    ("students.widths.conv9@100k=[3]", "expected FAMILY@BUDGET"),
    ("students.widths.conv2=[32, 32]", "expected FAMILY@BUDGET"),
    ("students.widths.conv2@1M=[32, 32]", "1M is not one of the students' budgets"),
    ("students.widths.conv2@100k=[32]", "conv2 takes 2 free value"),
    ("students.widths.conv2@100k=[32.5, 32]", "widths must be integers"),
    ("students.widths.conv2@100k=[200, 200]", "more than the budget"),
    ("students.widths.conv2@100k=32", "expected a list"),
    ("students.widths=[1]", "expected a table"),
])
def test_student_widths_are_validated(override, message):
    with pytest.raises(UserError, match=message):
        quick([override])


def test_student_widths_are_reported_and_exclude_the_student_search():
    from shallowmimic.study.config import deviations

    with pytest.raises(UserError, match="students.widths fixes the widths"):
        quick(["students.widths.conv2@100k=[32, 32]", "search.student_trials=2"])
    text = " | ".join(deviations(quick(["students.widths={}", "students.widths.conv2@100k=[32, 32]"])))
    assert "widths set in students.widths for conv2@100k and the middle" in text
    assert "widths set in students.widths" not in " | ".join(deviations(quick(["students.widths={}"])))


def test_workers_take_the_largest_students_first():
    from shallowmimic.study.planning import largest_first, plan

    students = plan(quick(), Path("runs/x"), {"d": 1})["students"]
    order = [j.name for j in largest_first(students, 32, 10)]
    assert sorted(order) == sorted(j.name for j in students)
    assert order[:2] == ["conv4-300k-mimic-r0", "conv4-300k-mimic-r1"]  # 182 MFLOP per training image
    assert order[-4:] == ["mlp1-300k-mimic-r0", "mlp1-300k-mimic-r1", "mlp1-100k-mimic-r0", "mlp1-100k-mimic-r1"]
    assert order != [j.name for j in students]  # the plan's order puts them the other way round
