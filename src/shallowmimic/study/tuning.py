"""The searches of the study: teacher trials and student trials as Optuna objectives.

Each trial trains through the ordinary trainer into `RUN/trials/<study>/trial_NNNN/` and
records its parameters (Optuna's) and artifact directory (a user attribute). The objective is
validation error; trials never evaluate on the test set."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import optuna
import torch

from shallowmimic.core.errors import UserError
from shallowmimic.data.sources import Dataset
from shallowmimic.data.split import SplitConfig, SplitData, split_tensors
from shallowmimic.distill.students import StudentSetting, train_student
from shallowmimic.models.budget import format_budget
from shallowmimic.models.spaces import SAMPLERS, TEACHER_SPACE, student_free, student_space, teacher_from_params
from shallowmimic.models.students import get_student
from shallowmimic.search.attrs import FAIL_REASON, SPEC, TRIAL_DIR
from shallowmimic.search.storage import make_storage, storage_url
from shallowmimic.search.studies import open_study, run_worker, suggest, trial_dir
from shallowmimic.study.config import SearchSettings
from shallowmimic.training.loop import Diverged, TrainConfig
from shallowmimic.training.teachers import teacher_config, train_teacher

#: Errors that fail one trial and let the worker go on: a diverged run, an out-of-memory
#: model, or a UserError raised by the trial's own parameters (e.g. widths that cannot meet the
#: budget). Divergence and memory are properties of the sampled point (a high learning rate, a
#: wide model) and may repeat; any other UserError three times in a row means the study's own
#: settings are wrong, and the worker stops rather than loop forever.
FAILURES: tuple[type[BaseException], ...] = (UserError, torch.cuda.OutOfMemoryError)


def _settings_error(e: BaseException) -> bool:
    return not isinstance(e, (Diverged, torch.cuda.OutOfMemoryError))


@dataclass(frozen=True)
class SearchConfig(SearchSettings):
    """One search: its trials and the settings every search shares (`study.config.SearchSettings`)."""

    trials: int = 6
    grace: int = 0  # seconds before a silent worker's trial is failed (0: 2 x heartbeat)

    def __post_init__(self):
        if self.trials < 1:
            raise UserError(f"search trials must be at least 1, got {self.trials}")
        if self.startup < 0:
            raise UserError(f"search startup trials must be 0 or more, got {self.startup}")
        if self.heartbeat < 1:
            raise UserError(f"search heartbeat must be at least 1 second, got {self.heartbeat}")
        if self.sampler not in SAMPLERS:
            raise UserError(f"search sampler {self.sampler!r} is not one of {', '.join(SAMPLERS)}")


def teacher_study_name(epochs: int) -> str:
    return f"teachers-e{epochs}"


def student_study_name(family: str, budget: int, loss: str) -> str:
    return f"students-{family}-{format_budget(budget)}-{loss}"


def _open(search: SearchConfig, run_dir: Path, name: str) -> tuple[optuna.Study, optuna.storages.RDBStorage]:
    storage = make_storage(storage_url(search.storage or None, run_dir), search.heartbeat, search.grace or None)
    return open_study(name, storage, search.sampler, search.startup, search.seed), storage


def tune_teachers(ds: Dataset, run_dir: Path, search: SearchConfig, epochs: int, device, split: SplitConfig,
                  progress: bool = False, log=print, name: str = "", data: SplitData | None = None) -> optuna.Study:
    """Run (or join) the teacher study: paper teachers, all 18 hyperparameters searched."""
    run_dir = Path(run_dir)
    name = name or teacher_study_name(epochs)
    study, storage = _open(search, run_dir, name)
    data = data or split_tensors(ds, split, device)

    def objective(trial: optuna.Trial) -> float:
        p = suggest(trial, TEACHER_SPACE)
        spec, options, hsv = teacher_from_params(p)
        out = trial_dir(run_dir, name, trial.number)
        trial.set_user_attr(TRIAL_DIR, str(out))
        trial.set_user_attr(SPEC, spec)
        cfg = teacher_config("paper", epochs=epochs, lr=p["lr"], momentum=p["momentum"],
                             weight_decay=p["weight_decay"], seed=search.seed + trial.number)
        r = train_teacher(ds, out, "paper", spec, cfg, device, split, hsv=hsv, progress=progress,
                          options_override=asdict(options),
                          evaluate_test=False, data=data)
        log(f"teacher trial {trial.number}: {spec} val error {1 - r['val_acc']:.4f}")
        return 1.0 - r["val_acc"]

    run_worker(study, storage, objective, search.trials, FAILURES, log=log, counts_toward_stop=_settings_error)
    return study


def study_summary(study: optuna.Study) -> dict:
    """What the pipeline and the report need of a finished study (also its done-marker)."""
    trials = [{"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
               "dir": t.user_attrs.get(TRIAL_DIR), "spec": t.user_attrs.get(SPEC),
               "fail_reason": t.user_attrs.get(FAIL_REASON)} for t in study.get_trials(deepcopy=False)]
    done = [t for t in trials if t["state"] == "COMPLETE"]
    best = min(done, key=lambda t: (t["value"], t["number"])) if done else None
    return {"study": study.study_name, "sampler": study.user_attrs.get("sampler_class"), "trials": trials,
            "completed": len(done), "best": best}


def tune_students(ds: Dataset, run_dir: Path, search: SearchConfig, transfer_dir: Path, family: str, budget: int,
                  loss: str, base: TrainConfig, device, split: SplitConfig, progress: bool = False,
                  log=print, name: str = "", data: SplitData | None = None, wait: bool = True) -> optuna.Study:
    """Run (or join) one student study (a family at a budget with a loss). `wait=False`
    returns once every remaining trial is running somewhere, without waiting for them."""
    run_dir = Path(run_dir)
    fam = get_student(family)
    name = name or student_study_name(family, budget, loss)
    study, storage = _open(search, run_dir, name)
    data = data or split_tensors(ds, split, device)
    space = student_space(fam, budget)

    def objective(trial: optuna.Trial) -> float:
        p = suggest(trial, space)
        setting = StudentSetting(family, budget, loss, student_free(fam, p), p["init_scale"], p["input_scale"])
        out = trial_dir(run_dir, name, trial.number)
        trial.set_user_attr(TRIAL_DIR, str(out))
        cfg = replace(base, lr=p["lr"], momentum=p["momentum"], loss=loss, seed=search.seed + trial.number)
        r = train_student(ds, transfer_dir, setting, cfg, out, device, split, progress=progress, data=data,
                          evaluate_test=False)
        trial.set_user_attr(SPEC, r["spec"])
        log(f"student trial {trial.number}: {r['spec']} val error {1 - r['val_acc']:.4f}")
        return 1.0 - r["val_acc"]

    run_worker(study, storage, objective, search.trials, FAILURES, log=log, counts_toward_stop=_settings_error,
               wait=wait)
    return study

