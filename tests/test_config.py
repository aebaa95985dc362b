"""Configs refuse what they cannot do, at the boundary (issue 21)."""

import pytest
from click.testing import CliRunner

from shallowmimic.cli import main
from shallowmimic.core.errors import UserError
from shallowmimic.study.config import load_study


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.mark.parametrize("override, message", [
    ('students.schedule="cosine"', "students.schedule: 'cosine' is not one of plateau, linear, triangle"),
    ('teachers.schedule="cosine"', "teachers.schedule"),
    ('search.sampler="cmaes"', "search.sampler"),
    ('device="gpu"', "device gpu: unknown device"),
    ('device="cudaX"', "unknown device"),
])
def test_fixed_value_fields_are_checked_when_loaded(override, message):
    with pytest.raises(UserError, match=message):
        load_study("quick", [override])


def test_train_config_refuses_unknown_schedule_and_loss():
    from shallowmimic.training.loop import TrainConfig

    with pytest.raises(UserError, match="train.schedule"):
        TrainConfig(schedule="cosine")
    with pytest.raises(UserError, match="train.loss"):
        TrainConfig(loss="l1")


def test_schedules_all_have_a_rate():
    from shallowmimic.training.schedule import SCHEDULES, scheduled_lr

    assert all(scheduled_lr(s, 0.5, 0.1, 0.25) > 0 for s in SCHEDULES)
    with pytest.raises(ValueError):
        scheduled_lr("cosine", 0.5, 0.1, 1.0)


def test_cli_choices_come_from_the_registries():
    from shallowmimic.models.spaces import SAMPLERS
    from shallowmimic.models.teachers import TEACHERS
    from shallowmimic.training.losses import LOSSES
    from shallowmimic.training.schedule import SCHEDULES

    def choices(*command):
        ctx = main.make_context("shallowmimic", [*command, "--help"], resilient_parsing=True)
        cmd = main
        for name in command:
            cmd = cmd.get_command(ctx, name) if hasattr(cmd, "get_command") else cmd
        return {p.name: tuple(p.type.choices) for p in cmd.params if hasattr(p.type, "choices")}

    teacher = choices("teacher", "train")
    assert teacher["variant"] == tuple(TEACHERS) and "bn" in teacher["variant"]
    assert teacher["schedule"] == SCHEDULES and "triangle" in teacher["schedule"]
    assert choices("student", "train")["loss"] == LOSSES
    assert choices("tune", "student")["sampler"] == SAMPLERS


def test_unknown_device_is_refused_while_parsing(tmp_path):
    r = run("run", "--out", tmp_path / "s", "--device", "gpu", "--data", tmp_path / "none.npz")
    assert r.exit_code == 2 and "unknown device" in r.output and "none.npz" not in r.output
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("override, message", [
    ("data.train_limit=-1", "data.train_limit"), ("data.val_limit=-150", "data.val_limit"),
    ("data.val_size=0", "data.val_size"), ("transfer.images=-1", "transfer.images"),
    ("students.epochs=0", "students.epochs"), ("teachers.count=0", "teachers.count"),
    ("search.heartbeat=0", "search.heartbeat"),
])
def test_out_of_range_numbers_are_refused_when_loaded(override, message):
    with pytest.raises(UserError, match=message):
        load_study("quick", [override])


@pytest.mark.parametrize("args, message", [
    (["arch", "64c", "--size", "0"], "--size"), (["arch", "64c", "--classes", "1"], "--classes"),
    (["teacher", "train", "--out", "t", "--train-limit", "-1", "--data", "none.npz"], "--train-limit"),
    (["ensemble", "--teachers", "t", "--out", "e", "--val-limit", "-1", "--data", "none.npz"], "--val-limit"),
])
def test_out_of_range_cli_numbers_are_one_line_errors(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = run(*args)
    errors = [line for line in r.output.splitlines() if line.startswith("Error:")]
    assert r.exit_code != 0 and len(errors) == 1 and message in errors[0] and "Traceback" not in r.output
    assert list(tmp_path.iterdir()) == []  # refused before anything was loaded or written


def test_arch_knows_every_teacher_variant():
    r = run("arch", "--teacher", "bn")
    assert r.exit_code == 0 and "total" in r.output


def one_error(r):
    errors = [line for line in r.output.splitlines() if line.startswith("Error:")]
    assert r.exit_code != 0 and len(errors) == 1 and "Traceback" not in r.output, r.output
    assert r.output.rstrip().splitlines()[-1] == errors[0], r.output  # nothing after it: one line
    return errors[0]


@pytest.mark.parametrize("images", ["0", "500"])
def test_preview_bounds_its_grid(tmp_path, images):
    r = run("data", "preview", "--out", tmp_path / "p.png", "--images", images, "--data", tmp_path / "none.npz")
    assert "--images" in one_error(r) and not (tmp_path / "p.png").exists()


def test_run_out_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("")
    assert "is a file" in one_error(run("run", "--out", tmp_path / "f", "--dry-run"))


def test_a_file_that_is_no_tar_archive(tmp_path):
    (tmp_path / "cifar.tar.gz").write_bytes(b"\x00" * 300)
    assert "not a readable .tar.gz archive" in one_error(run("data", "info", "--data", tmp_path / "cifar.tar.gz"))


def test_export_of_a_directory_without_a_model_loads_no_data(tmp_path, monkeypatch):
    monkeypatch.delenv("SHALLOWMIMIC_DATA", raising=False)
    monkeypatch.setenv("SHALLOWMIMIC_CACHE", str(tmp_path / "cache"))  # an empty cache: loading would download
    (tmp_path / "empty").mkdir()
    assert "neither a model directory" in one_error(run("export", tmp_path / "empty"))
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("command", [["tune", "student", "--trials", "3"], ["student", "train"]])
def test_a_missing_transfer_set_is_refused_before_anything_is_written(tmp_path, command):
    r = run(*command, "--family", "conv1", "--budget", "100k", "--transfer", tmp_path / "nope",
            "--out", tmp_path / "out", "--data", tmp_path / "none.npz")
    assert "not a finished transfer set" in one_error(r)
    assert not (tmp_path / "out").exists()


def test_a_preset_file_extends_a_preset_and_overrides_only_what_it_lists(tmp_path):
    (tmp_path / "mine.toml").write_text('extends = "quick"\n[students]\nepochs = 12\n')
    (tmp_path / "deeper.toml").write_text('extends = "mine.toml"\n[students.widths]\n"conv2@100k" = [30, 30]\n')
    quick, mine, deeper = (load_study(p) for p in ("quick", str(tmp_path / "mine.toml"),
                                                     str(tmp_path / "deeper.toml")))
    assert mine.students.epochs == 12 and mine.name == "mine"
    from dataclasses import replace

    assert replace(mine, name="quick", students=replace(mine.students, epochs=quick.students.epochs)) == quick
    assert deeper.students.epochs == 12 and deeper.students.widths["conv2@100k"] == (30, 30)
    assert deeper.students.widths["conv4@300k"] == quick.students.widths["conv4@300k"]  # tables merge


@pytest.mark.parametrize("text, message", [
    ('extends = "a.toml"\n', "goes round in a circle"), ('extends = "nope"\n', "unknown preset"),
    ('extends = "missing.toml"\n', "does not exist"), ("extends = 3\n", "expected a preset name"),
])
def test_bad_extends_is_one_line(tmp_path, text, message):
    (tmp_path / "a.toml").write_text(text)
    with pytest.raises(UserError, match=message):
        load_study(str(tmp_path / "a.toml"))


def test_print_config_is_toml_that_loads_back_the_same(tmp_path):
    r = run("run", "--preset", "quick", "--print-config", "--set", "students.epochs=9")
    assert r.exit_code == 0, r.output
    (tmp_path / "printed.toml").write_text(r.output)
    assert load_study(str(tmp_path / "printed.toml")) == load_study("quick", ["students.epochs=9"])
    assert list(tmp_path.iterdir()) == [tmp_path / "printed.toml"]


def test_one_seed_sets_every_seed_and_an_explicit_set_still_wins():
    import tomllib

    r = run("run", "--print-config", "--seed", "5", "--set", "students.seed=7")
    cfg = tomllib.loads(r.output)
    assert [cfg[t]["seed"] for t in ("data", "teachers", "transfer", "students", "search")] == [5, 5, 5, 7, 5]
    # every field named "seed" in the config is one of SEEDS (a new stage's seed is not forgotten)
    from dataclasses import asdict

    from shallowmimic.study.config import SEEDS, StudyConfig

    def seeds(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from seeds(v, f"{prefix}{k}.")
            elif k == "seed":
                yield prefix + k

    assert set(seeds(asdict(StudyConfig()))) == set(SEEDS)


def test_kd_temperature_and_weight_are_config_fields_that_reach_the_trainer():
    from shallowmimic.study.planning import student_train_config

    cfg = load_study("quick", ["students.kd_temperature=2.5", "students.kd_alpha=0.5"])
    train = student_train_config(cfg, "kd", 0)
    assert (train.kd_temperature, train.kd_alpha) == (2.5, 0.5)
    for bad in ("students.kd_temperature=0", "students.kd_alpha=1.5"):
        with pytest.raises(UserError, match="kd_"):
            load_study("quick", [bad])


def test_one_function_decides_the_default_clip_for_every_entry_point(tiny_npz, tmp_path, monkeypatch):
    """Issue 21 item 4: `tune student` clipped at 5 for every loss, `student train` used the
    per-loss default, `run` the preset's."""
    from shallowmimic.distill import students
    from shallowmimic.study import tuning
    from shallowmimic.study.config import LossClip
    from shallowmimic.study.planning import student_train_config
    from shallowmimic.training.losses import GRAD_CLIP, default_grad_clip

    seen = {}
    monkeypatch.setattr(students, "train_student", lambda ds, t, setting, cfg, *a, **k: seen.update(train=cfg))
    def tune(*args, **kwargs):
        seen["tune"] = args[7]  # the base TrainConfig
        raise SystemExit(0)  # nothing to print

    monkeypatch.setattr(tuning, "tune_students", tune)
    (tmp_path / "ts").mkdir()
    (tmp_path / "ts" / "manifest.json").write_text("{}")
    for loss in ("hard", "mimic", "kd"):
        seen.clear()
        common = ["--family", "conv1", "--budget", "20k", "--loss", loss, "--transfer", tmp_path / "ts",
                  "--data", tiny_npz]
        run("student", "train", *common, "--out", tmp_path / f"s-{loss}")
        run("tune", "student", *common, "--out", tmp_path / f"t-{loss}")
        unset = load_study("smoke", ["students.grad_clip={}"])
        assert seen["train"].grad_clip == seen["tune"].grad_clip == default_grad_clip(loss) == \
            student_train_config(unset, loss, 0).grad_clip == LossClip()[loss] == GRAD_CLIP[loss], loss


def test_a_search_has_one_definition_of_its_settings():
    """Issue 22 item 3: `run`'s [search] table and `tune`'s SearchConfig were two definitions
    whose defaults had drifted (heartbeat 60 against 30)."""
    from dataclasses import fields

    from shallowmimic.study.config import SearchSettings, SearchStageConfig
    from shallowmimic.study.tuning import SearchConfig

    shared = {f.name: f.default for f in fields(SearchSettings)}
    for cls in (SearchStageConfig, SearchConfig):
        assert issubclass(cls, SearchSettings)
        assert {f.name: f.default for f in fields(cls) if f.name in shared} == shared
    stage = SearchStageConfig(sampler="tpe", heartbeat=7, teacher_trials=3)
    assert SearchConfig(trials=3, **stage.settings()) == SearchConfig(trials=3, sampler="tpe", heartbeat=7)


def test_the_study_and_the_transfer_set_share_one_transfer_config():
    """Issue 22 item 3: one definition (the [transfer] table is distill's TransferConfig)."""
    from shallowmimic.distill.transfer import TransferConfig

    cfg = load_study("quick", ["transfer.tta=\"flip\""])
    assert type(cfg.transfer) is TransferConfig and cfg.transfer.tta == "flip"
    with pytest.raises(UserError, match="transfer.tta"):
        load_study("quick", ["transfer.tta=\"spin\""])


EXTERNAL = 'teachers.external=[{path = "a.onnx", input = "uint8-nhwc"}, "b.pt", {factory = "m:f", weights = "w.st"}]'


def test_external_teachers_are_strings_or_tables_and_print_back_the_same(tmp_path):
    from shallowmimic.models.external import ExternalTeacher

    cfg = load_study("smoke", [EXTERNAL, "teachers.count=0", "ensemble.k=3"])
    assert cfg.teachers.external == (ExternalTeacher(path="a.onnx", input="uint8-nhwc"), ExternalTeacher(path="b.pt"),
                                     ExternalTeacher(factory="m:f", weights="w.st"))
    r = run("run", "--preset", "smoke", "--print-config", "--set", EXTERNAL)
    assert r.exit_code == 0, r.output
    (tmp_path / "printed.toml").write_text(r.output)
    assert load_study(str(tmp_path / "printed.toml")) == load_study("smoke", [EXTERNAL])


@pytest.mark.parametrize("override, message", [
    ('teachers.external=[{path = "a.onnx", input = "bgr"}]', "input 'bgr' is not one of uint8-nhwc"),
    ('teachers.external=[{path = "a.onnx", size = 32}]', r"teachers.external: unknown key\(s\) size"),
    ('teachers.external=["a.h5"]', "not an ONNX"),
    ('teachers.external=[3]', "teachers.external: expected a table"),
    ('teachers.external=["a.pt", {path = "./a.pt", input = "standardized-nchw"}]',
     r"lists a teacher more than once \(a.pt, ./a.pt\)"),
    ("teachers.count=0", r"teachers.count must be at least 1 \(0 only with teachers.external\)"),
])
def test_a_bad_external_teacher_entry_is_refused_when_loaded(override, message):
    with pytest.raises(UserError, match=message):
        load_study("smoke", [override])


def test_the_ensemble_may_choose_among_trained_and_external_teachers():
    assert load_study("smoke", ['teachers.external=["a.pt"]', "ensemble.k=3"]).ensemble.k == 3
    with pytest.raises(UserError, match="ensemble.k = 4 must be between 1 and the number of teachers .3"):
        load_study("smoke", ['teachers.external=["a.pt"]', "ensemble.k=4"])


def test_an_external_teachers_job_is_keyed_by_its_place_and_input_not_its_path(tmp_path):
    from shallowmimic.study.planning import plan

    def jobs(entry):
        cfg = load_study("smoke", [f"teachers.external=[{entry}]"])
        return [j for j in plan(cfg, tmp_path, {"content": "d"})["teachers"] if j.stage == "external"]

    here, moved = jobs('"a.pt"'), jobs('"elsewhere/a.pt"')
    assert len(here) == 1 and here[0].dir == moved[0].dir and here[0].params["entry"]["path"] == "a.pt"
    assert jobs('{path = "a.pt", input = "uint8-nhwc"}')[0].dir != here[0].dir
    assert here[0].dir.name.startswith("x00-")
