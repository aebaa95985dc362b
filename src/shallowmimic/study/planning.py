"""The study's plan: every job (a teacher, the ensemble, the transfer set, a student, a search)
with its directory, derived from the config alone, and the file names that mark a job done.
A job's directory is a hash of what it computes from, so a re-run finds finished work."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from shallowmimic.core.config import config_hash
from shallowmimic.core.layout import FAILED_JSON, RESULT_JSON, SEARCH_JSON
from shallowmimic.distill.ensemble import MANIFEST as ENSEMBLE_MANIFEST
from shallowmimic.distill.students import StudentSetting
from shallowmimic.distill.transfer import MANIFEST as TRANSFER_MANIFEST
from shallowmimic.models.budget import format_budget, parse_budget
from shallowmimic.study.config import StudyConfig
from shallowmimic.training.loop import TrainConfig

FAILED = FAILED_JSON


@dataclass(frozen=True)
class Job:
    """One job of the study: its key in the job queue (its directory's path inside the study),
    what it computes from, and the file that marks it done."""

    stage: str
    name: str
    dir: Path
    params: dict  # what the job depends on (hashed into dir)
    key: str  # the directory's path inside the study: the job queue's name for it
    marker: str = RESULT_JSON  # the file, in dir, that marks the job finished

    @classmethod
    def at(cls, out: Path, stage: str, name: str, where: str, params: dict, marker: str = RESULT_JSON) -> Job:
        """The job whose directory is `where` inside the study `out`."""
        return cls(stage, name, Path(out) / where, params, where, marker)

    def markers(self) -> tuple[Path, Path]:
        """The files of which either marks the job done: its result, or its failure."""
        return self.dir / self.marker, self.dir / FAILED

    def done(self) -> bool:
        """Finished, or failed in a way a re-run would only repeat (a diverged student)."""
        return any(m.exists() for m in self.markers())

    def started(self) -> bool:
        return self.dir.exists() and any(self.dir.iterdir())


def plan(cfg: StudyConfig, out: Path, data_id: dict) -> dict[str, list[Job]]:
    """Every job of the study with its directory, derived from the config alone."""
    t, search = cfg.teachers, cfg.search
    teachers = []
    if search.teacher_trials:
        p = {"data": data_id, "epochs": t.epochs, "trials": search.teacher_trials, "sampler": search.sampler,
             "startup": search.startup, "seed": search.seed}
        name = f"teachers-{config_hash(p)}"
        teachers.append(Job.at(out, "search", f"teacher study ({search.teacher_trials} trials)", f"trials/{name}", p,
                               SEARCH_JSON))
    for i in range(0 if search.teacher_trials else t.count):
        p = {"data": data_id, "variant": t.variant, "spec": t.specs[i % len(t.specs)] if t.specs else "",
             "epochs": t.epochs, "batch_size": t.batch_size, "lr": t.lr, "schedule": t.schedule, "seed": t.seed + i,
             **({"label_smoothing": t.label_smoothing} if t.label_smoothing >= 0 else {})}
        teachers.append(Job.at(out, "teacher", f"teacher {i}", f"teachers/t{i:02d}-{config_hash(p)}", p))
    teachers += external_jobs(cfg, out, data_id)
    ens_p = {"k": cfg.ensemble.k, "teachers": [j.dir.name for j in teachers]}
    ensemble = Job.at(out, "ensemble", f"ensemble of {cfg.ensemble.k}", f"ensemble/{config_hash(ens_p)}", ens_p,
                      ENSEMBLE_MANIFEST)
    tr_p = {**asdict(cfg.transfer), "ensemble": ensemble.dir.name}
    transfer = Job.at(out, "transfer", f"transfer set ({cfg.transfer.epochs} epochs)",
                      f"transfer/{config_hash(tr_p)}", tr_p, TRANSFER_MANIFEST)
    s = cfg.students
    settings = [(f, b, loss) for loss in s.losses for b in s.budgets for f in s.families if not s.omitted(f, b)]
    settings += [(f, b, "hard") for b in s.hard_budgets for f in s.hard_families or s.families
                 if (f, b, "hard") not in settings]
    students = []
    for fam, budget, loss in settings:
        if search.student_trials:
            p = {"transfer": transfer.dir.name, "family": fam, "budget": parse_budget(budget), "loss": loss,
                 "train": asdict(student_train_config(cfg, loss, 0)), "trials": search.student_trials,
                 "sampler": search.sampler, "startup": search.startup, "seed": search.seed}
            name = f"students-{fam}-{format_budget(parse_budget(budget))}-{loss}-{config_hash(p)}"
            students.append(Job.at(out, "search", f"{fam}@{budget} {loss} study", f"trials/{name}", p, SEARCH_JSON))
            continue
        for r in range(s.models_per_setting(loss)):
            free = s.free_widths(fam, parse_budget(budget))
            p = {"transfer": transfer.dir.name, "family": fam, "budget": parse_budget(budget), "loss": loss,
                 "train": asdict(student_train_config(cfg, loss, r)),
                 "init_scale": s.init_scale, "input_scale": s.input_scale,
                 **({"free": list(free)} if free else {})}  # absent when mid-range: keeps older runs' keys
            name = f"{fam}-{format_budget(parse_budget(budget))}-{loss}-r{r}"
            students.append(Job.at(out, "student", name, f"students/{name}-{config_hash(p)}", p))
    return {"teachers": teachers, "ensemble": [ensemble], "transfer": [transfer], "students": students}


def external_jobs(cfg: StudyConfig, out: Path, data_id: dict) -> list[Job]:
    """One job per external teacher: its evaluation on the split. Its key is its place in the
    list, its input convention and the data, not its file's digest: a file that changes under a
    study is then an error (the digest recorded at the job), not a silent new teacher."""
    jobs = []
    for i, entry in enumerate(cfg.teachers.external):
        p = {"data": data_id, "external": i, "input": entry.input}
        jobs.append(Job.at(out, "external", f"external teacher {i} ({Path(entry.name).name})",
                           f"teachers/x{i:02d}-{config_hash(p)}", {**p, "entry": asdict(entry)}))
    return jobs


def largest_first(students: list[Job], size: int, classes: int) -> list[Job]:
    """Fixed student jobs in the order workers take them: most training FLOPs first, so that
    the jobs left when workers run out are the short ones and none trains a big student alone
    at the end (longest first is the classic rule for dividing jobs between workers)."""
    return sorted(students, key=lambda j: -StudentSetting.from_params(j.params).train_flops(size, classes))


def student_train_config(cfg: StudyConfig, loss: str, repeat: int) -> TrainConfig:
    s = cfg.students
    return TrainConfig(epochs=s.epochs, batch_size=s.batch_size, lr=s.lr[loss], momentum=s.momentum,
                       schedule=s.schedule, loss=loss, seed=s.seed + repeat, weight_decay=0.0,
                       grad_clip=s.grad_clip[loss], val_every=s.val_every,
                       kd_temperature=s.kd_temperature, kd_alpha=s.kd_alpha)


def overview(jobs: dict[str, list[Job]]) -> str:
    lines = []
    for stage, js in jobs.items():
        done = sum(j.done() for j in js)
        partial = sum(j.started() and not j.done() for j in js)
        lines.append(f"  {stage:<9} {done:>3}/{len(js)} done" + (f", {partial} to resume" if partial else ""))
    return "\n".join(lines)


