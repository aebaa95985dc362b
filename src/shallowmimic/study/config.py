"""The study's configuration: typed, frozen, loaded from TOML presets plus overrides."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from shallowmimic.core.config import apply_overrides, from_dict, load_toml, merged
from shallowmimic.core.device import PRECISIONS, check_device
from shallowmimic.core.errors import UserError
from shallowmimic.data.folders import ImagesConfig
from shallowmimic.data.split import SplitConfig
from shallowmimic.distill.transfer import TransferConfig
from shallowmimic.models.budget import parse_budget
from shallowmimic.models.external import ExternalTeacher
from shallowmimic.models.layers import TTA_MODES
from shallowmimic.models.solve import solve_student
from shallowmimic.models.spaces import SAMPLERS
from shallowmimic.models.students import get_student
from shallowmimic.models.teachers import get_teacher
from shallowmimic.training.losses import GRAD_CLIP, KD_ALPHA, KD_TEMPERATURE, LOSSES
from shallowmimic.training.schedule import SCHEDULES


@dataclass(frozen=True)
class TeachersConfig:
    variant: str = "fast"
    count: int = 3
    specs: tuple[str, ...] = ()  # cycled over the teachers; empty: the variant's default
    epochs: int = 10
    batch_size: int = 0  # 0: the variant's default (likewise lr, schedule)
    lr: float = 0.0
    schedule: str = ""
    label_smoothing: float = -1.0  # < 0: the variant's
    seed: int = 0  # teacher i uses seed + i
    # Teachers this study does not train: "file.onnx" / "file.pt", or tables {path = ..., input =
    # ...} / {factory = "pkg.mod:fn", weights = "w.safetensors", input = ...}; they join the trained
    # ones as candidates for the ensemble.
    external: tuple[ExternalTeacher, ...] = ()

    def __post_init__(self):
        if self.count < (0 if self.external else 1):
            raise UserError(f"teachers.count must be at least 1 (0 only with teachers.external), got {self.count}")
        places = [e.resolved() for e in self.external]
        twice = [e.name for e, place in zip(self.external, places, strict=True) if places.count(place) > 1]
        if twice:  # the ensemble could choose one teacher twice
            raise UserError(f"teachers.external lists a teacher more than once ({', '.join(twice)})")


@dataclass(frozen=True)
class EnsembleConfig:
    k: int = 3


@dataclass(frozen=True)
class LossLR:
    """Each student loss gets its own learning rate: the L2 logit loss and cross-entropy have
    gradients of different scales, so one shared rate would favour one of them."""

    mimic: float = 0.01
    hard: float = 0.01
    kd: float = 0.01

    def __getitem__(self, loss: str) -> float:
        return getattr(self, loss)


@dataclass(frozen=True)
class LossClip(LossLR):
    """Gradient-norm clipping per loss (0: none). L2 on logits has unbounded gradients and can
    diverge without it; cross-entropy's are bounded, so hard-label students are not clipped."""

    mimic: float = GRAD_CLIP["mimic"]
    hard: float = GRAD_CLIP["hard"]
    kd: float = GRAD_CLIP["kd"]


@dataclass(frozen=True)
class StudentsConfig:
    families: tuple[str, ...] = ("mlp1", "conv1", "conv2", "conv3", "conv4")
    budgets: tuple[str, ...] = ("1M",)
    losses: tuple[str, ...] = ("mimic",)
    hard_budgets: tuple[str, ...] = ()  # hard-label twins at these budgets ...
    hard_families: tuple[str, ...] = ()  # ... of these families (empty: every family)
    # Cells of the families x budgets grid not trained for `losses` ("conv2@300k"); hard-label
    # twins are chosen by hard_budgets and hard_families alone.
    omit: tuple[str, ...] = ()
    repeats: int = 1  # models per setting (seeds); the report averages the best 5
    hard_repeats: int = 0  # models per hard-label setting; 0: as many as `repeats`
    epochs: int = 30
    # Validate every N epochs (and always after the last): the model kept is the best validated
    # one, so N >= epochs keeps the last; the plateau schedule needs 1.
    val_every: int = 1
    batch_size: int = 128
    lr: LossLR = field(default_factory=LossLR)
    momentum: float = 0.9
    schedule: str = "plateau"
    init_scale: float = 1.0
    input_scale: float = 1.0
    grad_clip: LossClip = field(default_factory=LossClip)
    # the `kd` loss only: alpha * tau^2 * KL(soft targets at temperature tau) + (1 - alpha) * CE
    kd_temperature: float = KD_TEMPERATURE
    kd_alpha: float = KD_ALPHA
    # Free widths per "family@budget" (e.g. "conv2@100k" = [32, 32]), for mimic and hard-label
    # students alike; a setting not listed takes the middle of the paper's ranges.
    widths: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    seed: int = 0

    def models_per_setting(self, loss: str) -> int:
        return self.hard_repeats if loss == "hard" and self.hard_repeats else self.repeats

    def omitted(self, family: str, budget: str) -> bool:
        return any(k.partition("@")[0] == family and parse_budget(k.partition("@")[2]) == parse_budget(budget)
                   for k in self.omit)

    def free_widths(self, family: str, budget: int) -> tuple:
        for key, free in self.widths.items():
            fam, _, b = key.partition("@")
            if fam == family and parse_budget(b) == budget:
                return tuple(free)
        return ()


@dataclass(frozen=True)
class SearchSettings:
    """How a search runs, wherever it is started: `run`'s [search] table and `tune`'s options
    (one definition of each default; they had drifted apart)."""

    sampler: str = "gp"
    startup: int = 10  # random trials before the sampler takes over
    seed: int = 0
    storage: str = ""  # SQLAlchemy URL; empty: RUN/studies.db (SQLite)
    heartbeat: int = 60  # seconds between a worker's heartbeats; silent for 2x this, it counts as dead


@dataclass(frozen=True)
class SearchStageConfig(SearchSettings):
    """Bayesian search inside `run`. 0 trials: no search (fixed settings)."""

    teacher_trials: int = 0  # paper teachers, all 18 hyperparameters; replaces teachers.count
    student_trials: int = 0  # per family x budget x loss; replaces students.repeats

    def settings(self) -> dict:
        """The fields every search shares (what `tuning.SearchConfig` takes besides its trials)."""
        return {f.name: getattr(self, f.name) for f in fields(SearchSettings)}


@dataclass(frozen=True)
class InferenceConfig:
    """The inference-cost stage (needs onnxruntime): every model exported to ONNX and timed."""

    enabled: bool = True
    runs: int = 100  # timed batch-1 calls per model and runtime (after 10 warm-up calls)
    batch: int = 256  # throughput batch


@dataclass(frozen=True)
class StudyConfig:
    name: str = "study"
    device: str = "auto"
    precision: str = "auto"  # auto | fp32 | bf16 (auto: bf16 on CUDA and on CPUs with AMX)
    compile: bool = False  # train through torch.compile (pays on GPUs, for long runs)
    data: SplitConfig = field(default_factory=SplitConfig)
    images: ImagesConfig = field(default_factory=ImagesConfig)  # image-folder sources only
    teachers: TeachersConfig = field(default_factory=TeachersConfig)
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    students: StudentsConfig = field(default_factory=StudentsConfig)
    search: SearchStageConfig = field(default_factory=SearchStageConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)

    def validate(self) -> StudyConfig:
        if self.precision not in PRECISIONS:
            raise UserError(f"precision: {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        check_device(self.device, "device")
        for where, value, known in (("teachers.schedule", self.teachers.schedule, ("", *SCHEDULES)),
                                    ("students.schedule", self.students.schedule, SCHEDULES),
                                    ("search.sampler", self.search.sampler, SAMPLERS)):
            if value not in known:
                raise UserError(f"{where}: {value!r} is not one of {', '.join(k for k in known if k)}")
        get_teacher(self.teachers.variant)
        for f in self.students.families:
            get_student(f)
        for f in self.students.hard_families:
            if f not in self.students.families:
                raise UserError(f"students.hard_families: {f!r} is not one of students.families "
                                f"({', '.join(self.students.families)})")
        for b in self.students.budgets + self.students.hard_budgets:
            parse_budget(b)
        self._check_widths()
        self._check_omit()
        for loss in self.students.losses:
            if loss not in LOSSES:
                raise UserError(f"students.losses: unknown loss {loss!r} (known: {', '.join(LOSSES)})")
        if self.transfer.tta != "model" and self.transfer.tta not in TTA_MODES:
            raise UserError(f"transfer.tta: {self.transfer.tta!r} is not one of model, {', '.join(TTA_MODES)}")
        if self.inference.runs < 100 or self.inference.batch < 1:
            raise UserError(f"inference.runs must be at least 100 and inference.batch at least 1, got "
                            f"{self.inference.runs} and {self.inference.batch}")
        t, tr, st, se = self.teachers, self.transfer, self.students, self.search
        for where, value, low in (("teachers.epochs", t.epochs, 1),
                                  ("teachers.batch_size", t.batch_size, 0),
                                  ("transfer.epochs", tr.epochs, 1), ("transfer.images", tr.images, 0),
                                  ("students.repeats", st.repeats, 1), ("students.epochs", st.epochs, 1),
                                  ("students.batch_size", st.batch_size, 1),
                                  ("search.teacher_trials", se.teacher_trials, 0),
                                  ("search.student_trials", se.student_trials, 0),
                                  ("search.heartbeat", se.heartbeat, 1)):
            if value < low:
                raise UserError(f"{where} must be at least {low}, got {value}")
        pool = (self.search.teacher_trials or self.teachers.count) + len(self.teachers.external)
        if not 1 <= self.ensemble.k <= pool:
            raise UserError(f"ensemble.k = {self.ensemble.k} must be between 1 and the number of teachers "
                            f"({pool}: teachers.count, or search.teacher_trials when searching, plus "
                            "teachers.external)")
        if not self.students.kd_temperature > 0 or not 0 <= self.students.kd_alpha <= 1:
            raise UserError(f"students.kd_temperature must be positive and students.kd_alpha in [0, 1], got "
                            f"{self.students.kd_temperature} and {self.students.kd_alpha}")
        if self.students.val_every < 1:
            raise UserError(f"students.val_every must be at least 1, got {self.students.val_every}")
        if self.students.val_every != 1 and self.students.schedule == "plateau":
            raise UserError("students.val_every must be 1 with the plateau schedule (it reads every epoch's "
                            "validation error)")
        if self.students.hard_repeats < 0:
            raise UserError("students.hard_repeats must be 0 (as many as students.repeats) or more")
        if self.students.hard_repeats and self.search.student_trials:
            raise UserError("students.hard_repeats sets the models per hard-label setting without a search; "
                            "the student search (search.student_trials) chooses its own")
        return self


    def _check_omit(self) -> None:
        s = self.students
        budgets = {parse_budget(b) for b in s.budgets}
        for key in s.omit:
            fam, at, b = key.partition("@")
            if not at or fam not in s.families or parse_budget(b) not in budgets:
                raise UserError(f"students.omit: {key!r} is not FAMILY@BUDGET of students.families "
                                f"({', '.join(s.families)}) and students.budgets ({', '.join(s.budgets)})")
        if not any(not s.omitted(f, b) for f in s.families for b in s.budgets):
            raise UserError("students.omit leaves no mimic student to train")

    def _check_widths(self) -> None:
        s = self.students
        if s.widths and self.search.student_trials:
            raise UserError("students.widths fixes the widths that the student search (search.student_trials) "
                            "chooses; set one of them")
        budgets = {parse_budget(b) for b in s.budgets + s.hard_budgets}
        for key, free in s.widths.items():
            fam, at, b = key.partition("@")
            where = f"students.widths.{key}"
            if not at or fam not in s.families:
                raise UserError(f"{where}: expected FAMILY@BUDGET with a family of students.families "
                                f"({', '.join(s.families)}), e.g. conv2@100k")
            if parse_budget(b) not in budgets:
                raise UserError(f"{where}: {b} is not one of the students' budgets "
                                f"({', '.join(dict.fromkeys(s.budgets + s.hard_budgets))})")
            family = get_student(fam)
            kinds = (float, int) if family.ratios else (int,)
            if not all(isinstance(w, kinds) and not isinstance(w, bool) for w in free):
                raise UserError(f"{where}: widths must be {'numbers' if family.ratios else 'integers'}, "
                                f"got {list(free)}")
            try:
                solve_student(family, parse_budget(b), free)
            except UserError as e:
                raise UserError(f"{where}: {e}") from None


def deviations(cfg: StudyConfig) -> list[str]:
    """Every way this configuration departs from the paper's protocol (PROTOCOL.md), in words,
    for the report: a reader must not have to diff configs to know what was not reproduced."""
    from shallowmimic.models.budget import PAPER_BUDGETS

    t, s, tr, search = cfg.teachers, cfg.students, cfg.transfer, cfg.search
    out = list(get_teacher(t.variant).deviations)
    if t.label_smoothing >= 0:
        out = [d.replace(f"label smoothing {get_teacher(t.variant).recipe.label_smoothing:g}",
                         f"label smoothing {t.label_smoothing:g}") for d in out]
    if not search.teacher_trials:
        teachers = "1 teacher" if t.count == 1 else f"{t.count} teachers"
        out.append(f"no teacher search: {teachers} with fixed settings, {t.epochs} epochs each "
                   "(paper: 129 searched teachers)")
    if t.external:
        out.append(f"{len(t.external)} external teacher(s) ({', '.join(Path(e.name).name for e in t.external)}) "
                   "join the candidates for the ensemble, not trained by this study under the paper's protocol")
    if cfg.ensemble.k != 16:
        out.append(f"the ensemble has {cfg.ensemble.k} teachers (paper: 16)")
    if cfg.data.train_limit or cfg.data.val_limit:
        out.append(f"reduced data: {cfg.data.train_limit or 'all'} training and {cfg.data.val_limit or 'all'} "
                   "validation images of the 40k/10k split")
    if tr.epochs != 160 or tr.images:
        out.append(f"the transfer set has {tr.epochs} epochs of {tr.images or 'all'} images "
                   "(paper: 160 epochs of the 40k training images)")
    labelling = get_teacher(t.variant).options.tta if tr.tta == "model" else tr.tta
    if labelling != "none":
        out.append(f"the ensemble's logits on the transfer set are averaged over test-time augmentations "
                   f"({labelling}); the paper labels each image once")
    if s.epochs > tr.epochs:
        out.append(f"students train {s.epochs} epochs over {tr.epochs} stored transfer epochs, so they see "
                   "each stored epoch more than once")
    if not search.student_trials:
        lrs = ", ".join(f"{loss} {s.lr[loss]:g}" for loss in s.losses + ("hard",) * bool(s.hard_budgets))
        widths = "the middle of the paper's width ranges"
        if s.widths:
            widths = f"the widths set in students.widths for {', '.join(s.widths)} and {widths} elsewhere"
        hard_models = ""
        if s.hard_budgets and s.models_per_setting("hard") != s.repeats:
            hard_models = f" ({s.models_per_setting('hard')} per hard-label setting)"
        out.append(f"no student search: fixed learning rates ({lrs}), momentum {s.momentum:g}, {widths}, "
                   f"{s.repeats} model(s) per setting{hard_models} (paper: 20 searched, best 5)")
    if s.schedule != "plateau":
        kept = "; the model kept is the last epoch's" if s.val_every >= s.epochs else \
            (f"; validated every {s.val_every} epochs" if s.val_every > 1 else "")
        out.append(f"students use the {s.schedule} schedule for {s.epochs} epochs, not the plateau schedule{kept}")
    clipped = [loss for loss in dict.fromkeys(s.losses + ("hard",)) if s.grad_clip[loss] > 0]
    if clipped:
        out.append("gradient-norm clipping for " + ", ".join(f"{loss} students at {s.grad_clip[loss]:g}"
                                                             for loss in clipped) + " (not in the paper)")
    if s.omit:
        out.append(f"students {', '.join(s.omit)} are not trained (students.omit; the paper trains every "
                   "family at every budget)")
    if s.hard_budgets and s.hard_families and set(s.hard_families) != {"conv1", "conv2", "conv3", "conv4"}:
        out.append(f"hard-label twins of {', '.join(s.hard_families)} only (the paper: 1-4 conv, Table 1)")
    off = [b for b in s.budgets + s.hard_budgets if parse_budget(b) not in PAPER_BUDGETS.values()]
    if off:
        out.append(f"budgets {', '.join(dict.fromkeys(off))} are not the paper's (1M, 3.16M, 10M, 31.6M)")
    return out


PRESETS = ("smoke", "quick", "paper")


def preset_path(name: str) -> Path:
    if name in PRESETS:
        return Path(str(resources.files("shallowmimic.study") / "presets" / f"{name}.toml"))
    path = Path(name)
    if path.suffix == ".toml":
        return path
    raise UserError(f"unknown preset {name!r} (known: {', '.join(PRESETS)}, or a path to a .toml file)")


# Every seed of a study, set together by `run --seed N`.
SEEDS = ("data.seed", "teachers.seed", "transfer.seed", "students.seed", "search.seed")


def seed_overrides(seed: int) -> list[str]:
    return [f"{key}={seed}" for key in SEEDS]


def load_study(preset: str, overrides: list[str] = ()) -> StudyConfig:
    path = preset_path(preset)
    data = apply_overrides(_layered(path, ()), list(overrides))
    return from_dict(StudyConfig, data, where=path.name).validate()


def _layered(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    """A preset file with what it `extends` (a preset name or another file, relative to this
    one) underneath: its tables merge key by key over the base's, its other values replace."""
    if path.resolve() in seen:
        chain = " -> ".join(p.name for p in (*seen, path))
        raise UserError(f"{path}: `extends` goes round in a circle ({chain})")
    data = load_toml(path)
    base = data.pop("extends", None)
    if base is None:
        return data
    if not isinstance(base, str) or not base:
        raise UserError(f"{path}: extends = {base!r}: expected a preset name ({', '.join(PRESETS)}) or a .toml file")
    under = preset_path(base) if base in PRESETS else preset_path(str(path.parent / base))
    if not under.exists():
        raise UserError(f"{path}: extends {base!r}, which does not exist ({under})")
    layered = merged(_layered(under, (*seen, path.resolve())), data)
    if "name" not in data:
        layered["name"] = path.stem  # not the base's name: this is another study
    return layered
