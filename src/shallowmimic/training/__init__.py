"""Training one model: schedules, losses (mimic, KD, hard labels), augmented batches, the training
loop, teachers and stored logits.

Its public names are imported on first use (`core.lazy`): importing the package costs nothing.
"""

from shallowmimic.core.lazy import lazy_exports

_EXPORTS = {
    "AugmentedBatches": "batches", "evaluate": "batches", "predict_logits": "batches",
    "Diverged": "loop", "TrainConfig": "loop", "fit": "loop",
    "stored_logits": "logits",
    "LOSSES": "losses", "DistillationLoss": "losses", "HardLabelLoss": "losses", "MimicLoss": "losses",
    "default_grad_clip": "losses",
    "SCHEDULES": "schedule", "scheduled_lr": "schedule",
    "teacher_config": "teachers", "read_curves": "curves", "write_curves": "curves",
    "train_teacher": "teachers", "evaluate_external": "external",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
