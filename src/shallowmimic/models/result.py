"""A trained model's record, `result.json` beside its weights: what marks its job done, and
what the ensemble, the export and the report read of it."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from shallowmimic.core.errors import UserError
from shallowmimic.core.files import read_json, write_json
from shallowmimic.core.layout import RESULT_JSON


@dataclass(frozen=True)
class ModelResult:
    """The fields every reader needs, typed; the rest of the record as written (`details`: its
    training config, provenance, a student's setting, per-image test correctness)."""

    role: str  # teacher | student
    family: str  # the teacher variant or the student family
    spec: str
    params: int
    val_acc: float
    test_acc: float | None  # None: not evaluated on test (a search trial before selection)
    epochs: int
    wall_s: float
    device: str
    details: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, record: dict, where: str = "a model's record") -> ModelResult:
        if not isinstance(record, dict):
            raise UserError(f"{where} is not a JSON object: not written by this package, or damaged")
        typed = {f.name for f in fields(cls)} - {"details"}
        missing = typed - set(record)
        if missing:
            raise UserError(f"{where} lacks {', '.join(sorted(missing))}: not written by this package, or damaged")
        return cls(**{k: record[k] for k in typed}, details={k: v for k, v in record.items() if k not in typed})

    def to_dict(self) -> dict:
        return {**self.details, **{f.name: getattr(self, f.name) for f in fields(self) if f.name != "details"}}

    def with_test(self, record: dict) -> ModelResult:
        """The record with a test evaluation added (`test_acc` and its per-image correctness)."""
        return replace(self, test_acc=record["test_acc"],
                       details={**self.details, **{k: v for k, v in record.items() if k != "test_acc"}})

    def save(self, directory: Path) -> None:
        write_json(Path(directory) / RESULT_JSON, self.to_dict())

    @staticmethod
    def exists(directory: Path) -> bool:
        return (Path(directory) / RESULT_JSON).is_file()

    @classmethod
    def load(cls, directory: Path) -> ModelResult:
        """The record of the model in `directory`; none (an unfinished model) is a one-line error."""
        path = Path(directory) / RESULT_JSON
        return cls.from_dict(read_json(path, "unfinished model (no result.json)"), str(path))
