import pytest

from shallowmimic.config import from_dict
from shallowmimic.errors import UserError
from shallowmimic.findings import check_findings
from shallowmimic.study import PRESETS, StudyConfig, load_study


def acc(v):
    return {"test_acc": v}


def test_findings_pass_on_the_papers_pattern():
    mimic = {("mlp1", 1): acc(0.6), ("conv1", 1): acc(0.7), ("conv2", 1): acc(0.8),
             ("conv1", 2): acc(0.75), ("conv2", 2): acc(0.82)}
    hard = {("conv1", 1): acc(0.65)}
    ens = {"test_acc": 0.9, "best_member": {"test_acc": 0.88}}
    assert [f.status for f in check_findings(mimic, hard, ens)] == ["PASS"] * 4


def test_findings_fail_when_the_pattern_breaks():
    mimic = {("mlp1", 1): acc(0.75), ("conv1", 1): acc(0.7), ("conv2", 1): acc(0.65)}
    hard = {("conv1", 1): acc(0.72)}
    ens = {"test_acc": 0.7, "best_member": {"test_acc": 0.71}}
    assert [f.status for f in check_findings(mimic, hard, ens)] == ["FAIL"] * 4
    assert [f.status for f in check_findings({}, {}, None)] == ["N/A"] * 4


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
        load_study("quick", ["ensemble.k=5"])
    with pytest.raises(UserError, match="unknown student family"):
        load_study("quick", ['students.families=["conv7"]'])
    assert load_study("quick", ["students.lr=0.5"]).students.lr == 0.5
