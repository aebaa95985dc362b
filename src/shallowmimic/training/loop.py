"""One training loop for every model of the study (teachers and students).

SGD with Nesterov momentum; the paper's plateau schedule on validation error (or a short
linear-decay schedule); validation every epoch; best-by-validation weights kept; a checkpoint
after every epoch that resumes to exactly the weights of an uninterrupted run (on CPU).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from safetensors import SafetensorError, safe_open
from tqdm import tqdm

from shallowmimic.core.config import to_dict
from shallowmimic.core.device import autocast, compiled, memory_format
from shallowmimic.core.errors import UserError
from shallowmimic.core.files import atomic_path, provenance
from shallowmimic.core.layout import PROGRESS
from shallowmimic.models.checkpoint import (
    BEST,
    BEST_PENDING,
    CHECKPOINT,
    load_checkpoint,
    load_weights,
    read_checkpoint_state,
    save_checkpoint,
    save_weights,
)
from shallowmimic.training.batches import evaluate, seed_for
from shallowmimic.training.curves import TensorBoard, write_curves
from shallowmimic.training.losses import KD_ALPHA, KD_TEMPERATURE, LOSSES, make_loss
from shallowmimic.training.schedule import SCHEDULES, Plateau, scheduled_lr

PROGRESS_EVERY_S = 15.0  # how often a training notes where it is (layout.PROGRESS), for `status`


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30  # the cap; the plateau schedule may stop earlier
    batch_size: int = 128
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: Literal["plateau", "linear", "triangle"] = "plateau"
    warmup: float = 0.1  # linear schedule: fraction of steps spent warming up
    bias_lr_scale: float = 1.0  # biases (1-d parameters) train at lr x this, with weight decay / this
    lookahead: bool = False  # airbench's lookahead: every 5 steps, pull weights toward a slow EMA
    val_every: int = 1  # validate every N epochs (and always after the last); plateau needs 1
    loss: Literal["hard", "mimic", "kd"] = "hard"
    label_smoothing: float = 0.0
    kd_temperature: float = KD_TEMPERATURE
    kd_alpha: float = KD_ALPHA
    seed: int = 0
    eval_batch_size: int = 1000
    max_loss: float = 1e4  # a loss above this (or NaN/inf) means the run diverged
    grad_clip: float = 0.0  # > 0: clip the gradient's global L2 norm to this (stabilizes L2 mimic training)

    def __post_init__(self):
        for name in ("epochs", "batch_size", "eval_batch_size", "val_every"):
            if getattr(self, name) < 1:
                raise UserError(f"train.{name} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise UserError(f"train.lr must be positive, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise UserError(f"train.momentum must be in [0, 1), got {self.momentum}")
        for name, known in (("schedule", SCHEDULES), ("loss", LOSSES)):
            if getattr(self, name) not in known:
                raise UserError(f"train.{name}: {getattr(self, name)!r} is not one of {', '.join(known)}")
        if not self.kd_temperature > 0 or not 0 <= self.kd_alpha <= 1:
            raise UserError(f"the KD temperature must be positive and its weight in [0, 1], got "
                            f"{self.kd_temperature} and {self.kd_alpha}")
        if self.schedule == "plateau" and self.val_every != 1:
            raise UserError("train.val_every must be 1 with the plateau schedule (it reads every epoch's error)")


class Diverged(UserError):
    """The loss became NaN, infinite or absurdly large."""


@dataclass(frozen=True)
class TrainResult:
    best_val_acc: float
    best_epoch: int
    epochs: int
    stopped: str
    wall_s: float
    images_per_s: float
    history: list


def fit(model: torch.nn.Module, batches, val_images: torch.Tensor, val_labels: torch.Tensor,
        cfg: TrainConfig, out: Path, resume: bool = True, desc: str = "train",
        progress: bool = True, extra_state: dict | None = None) -> TrainResult:
    """Train `model` on `batches` (an object with `len()` and `epoch(e)` yielding (x, y, z)),
    validating on uint8 `val_images` each epoch; checkpoint into `out`. With `resume`, an
    existing checkpoint in `out` is continued (a finished one returns at once)."""
    run = _Run.start(model, batches, cfg, Path(out), resume, desc)
    if run.state["finished"]:
        return _finish(model, run.out, run.state, run.device)
    # Fixed for the whole call: computed once rather than (with a git subprocess) every epoch.
    record = dict(config=to_dict(cfg), rng=f"reseeded each epoch from seed {cfg.seed} and the epoch",
                  provenance=provenance(), **(extra_state or {}))
    bar = tqdm(total=cfg.epochs, initial=run.state["epoch"], desc=desc, unit="ep", disable=not progress,
               dynamic_ncols=True)
    board = TensorBoard(run.out, run.state["epoch"])
    try:
        for epoch in range(run.state["epoch"], cfg.epochs):
            t0 = time.perf_counter()
            trained = run.train_epoch(epoch, progress)
            val_acc = run.end_epoch(epoch, trained, val_images, val_labels, t0, record)
            board.epoch(run.state["history"][-1])
            bar.update(1)
            bar.set_postfix(loss=f"{run.state['history'][-1]['train_loss']:.3f}",
                            val="-" if val_acc is None else f"{val_acc:.4f}", best=f"{run.state['best_val_acc']:.4f}")
            if run.plateau.stopped:
                break
    finally:
        board.close()
        bar.close()
    return _finish(model, run.out, run.state, run.device)


@dataclass
class _Epoch:
    """What one epoch of training measured."""

    loss_sum: torch.Tensor
    clipped: torch.Tensor  # steps whose gradient norm exceeded grad_clip
    images: int
    lr: float
    train_s: float


@dataclass
class _Run:
    """One `fit` call: the model and everything that trains it, and the state a checkpoint keeps."""

    model: torch.nn.Module
    forward: torch.nn.Module  # the compiled model where compiling is on; shares model's parameters
    batches: object
    cfg: TrainConfig
    out: Path
    desc: str
    device: torch.device
    opt: torch.optim.Optimizer
    lookahead: Lookahead | None
    loss_fn: torch.nn.Module
    plateau: Plateau
    state: dict

    @classmethod
    def start(cls, model, batches, cfg: TrainConfig, out: Path, resume: bool, desc: str) -> _Run:
        """A fresh run, or the checkpoint in `out` continued (under the config it recorded)."""
        device = next(model.parameters()).device
        model.to(memory_format=memory_format(device))
        opt = make_optimizer(model, cfg)
        lookahead = Lookahead(model) if cfg.lookahead else None
        plateau = Plateau()
        state: dict = {"epoch": 0, "history": [], "best_val_acc": -1.0, "best_epoch": -1,
                       "wall_s": 0.0, "images": 0, "finished": False, "stopped": ""}
        if (out / CHECKPOINT).exists():
            if not resume:
                raise UserError(f"{out}: already holds a training run; pass --resume to continue it "
                                "or choose another --out")
            _check_same_config(out, read_checkpoint_state(out).get("config", {}), to_dict(cfg))
            state = load_checkpoint(out, model, opt, device, lookahead.tensors if lookahead else None)
            plateau = Plateau.from_state(state["plateau"])
            _settle_best(out, state)
        out.mkdir(parents=True, exist_ok=True)
        loss_fn = make_loss(cfg.loss, cfg.label_smoothing, cfg.kd_temperature, cfg.kd_alpha)
        return cls(model, compiled(model), batches, cfg, out, desc, device, opt, lookahead, loss_fn, plateau, state)

    def train_epoch(self, epoch: int, progress: bool) -> _Epoch:
        cfg, device = self.cfg, self.device
        steps = len(self.batches)
        total_steps = cfg.epochs * steps
        torch.manual_seed(seed_for(cfg.seed, "dropout", epoch))
        self.model.train()
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        clipped = torch.zeros((), device=device)
        n_images, lr = 0, cfg.lr
        last_note = _note_progress(self.out, epoch, 0, steps, cfg.epochs)
        inner = tqdm(self.batches.epoch(epoch), total=steps, leave=False, disable=not progress,
                     desc=f"epoch {epoch + 1}", dynamic_ncols=True)
        for i, (x, y, z) in enumerate(inner):
            step = epoch * steps + i
            lr = cfg.lr * scheduled_lr(cfg.schedule, step / total_steps, cfg.warmup, self.plateau.scale)
            for group in self.opt.param_groups:
                group["lr"] = lr * group["lr_scale"]
            with autocast(device):
                out_logits = self.forward(x)
            loss = self.loss_fn(out_logits, y, z)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                clipped += norm > cfg.grad_clip
            self.opt.step()
            if self.lookahead is not None and (step + 1) % Lookahead.EVERY == 0:
                self.lookahead.step((step + 1) / total_steps)
            loss_sum += loss.detach()
            n_images += len(x)
            if time.perf_counter() - last_note > PROGRESS_EVERY_S:
                last_note = _note_progress(self.out, epoch, i, steps, cfg.epochs)
            if i % 50 == 0 or i == steps - 1:
                value = loss.item()
                if not math.isfinite(value) or value > cfg.max_loss:
                    raise Diverged(f"{self.desc}: training diverged at epoch {epoch + 1}, step {i + 1} "
                                   f"(loss {value:g}); lower the learning rate")
                inner.set_postfix(loss=f"{value:.3f}", lr=f"{lr:.3g}")
        return _Epoch(loss_sum, clipped, n_images, lr, time.perf_counter() - t0)

    def end_epoch(self, epoch: int, e: _Epoch, val_images, val_labels, t0: float, record: dict) -> float | None:
        """Validate (when due), keep the best weights, and checkpoint; returns the validation accuracy."""
        cfg, state, out = self.cfg, self.state, self.out
        steps = len(self.batches)
        if not math.isfinite(e.loss_sum.item()):
            raise Diverged(f"{self.desc}: training diverged in epoch {epoch + 1} (non-finite loss); "
                           "lower the learning rate")
        last = epoch + 1 == cfg.epochs
        if self.lookahead is not None and last:
            self.lookahead.finish()
        validate = last or (epoch + 1) % cfg.val_every == 0
        val_acc = evaluate(self.model, val_images, val_labels, cfg.eval_batch_size) if validate else None
        if cfg.schedule == "plateau":
            self.plateau.step(1.0 - val_acc)
        if val_acc is not None and val_acc > state["best_val_acc"]:
            state["best_val_acc"], state["best_epoch"] = val_acc, epoch + 1
            # pending until the checkpoint that records its score is written (see _settle_best)
            save_weights(out / BEST_PENDING, self.model, {"epoch": epoch + 1, "val_acc": val_acc})
        state["history"].append({
            "epoch": epoch + 1, "train_loss": e.loss_sum.item() / steps, "val_acc": val_acc,
            "lr": e.lr, "train_s": round(e.train_s, 3), "images_per_s": round(e.images / e.train_s, 1),
            "clipped": round(e.clipped.item() / steps, 4) if cfg.grad_clip > 0 else None,
        })
        state["epoch"] = epoch + 1
        state["wall_s"] += time.perf_counter() - t0
        state["images"] += e.images
        state["plateau"] = self.plateau.state()
        state["stopped"] = self.plateau.stopped
        state["finished"] = bool(self.plateau.stopped) or epoch + 1 == cfg.epochs
        state.update(record)
        save_checkpoint(out, self.model, self.opt, state, self.lookahead.tensors if self.lookahead else None)
        _settle_best(out, state)
        write_curves(out, state["history"])
        return val_acc


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.SGD:
    """Nesterov SGD over the trainable parameters; biases (1-d) in their own group at
    lr x bias_lr_scale and weight decay / bias_lr_scale (airbench trains BN shifts 64x faster)."""
    params = [p for p in model.parameters() if p.requires_grad]
    biases = [p for p in params if p.ndim <= 1]
    weights = [p for p in params if p.ndim > 1]
    s = cfg.bias_lr_scale
    groups = [{"params": weights, "weight_decay": cfg.weight_decay, "lr_scale": 1.0},
              {"params": biases, "weight_decay": cfg.weight_decay / s, "lr_scale": s}]
    return torch.optim.SGD([g for g in groups if g["params"]], lr=cfg.lr, momentum=cfg.momentum,
                           nesterov=cfg.momentum > 0)


class Lookahead:
    """airbench's lookahead: a slow copy of the weights (and BN statistics); every EVERY steps
    slow <- decay * slow + (1 - decay) * fast and then fast <- slow, with decay = 0.95^5 *
    progress^3, so it does nothing early and smooths strongly at the end, where the final
    weights become the slow ones."""

    EVERY = 5

    def __init__(self, model: torch.nn.Module):
        self.live = {k: v for k, v in model.state_dict().items() if v.dtype.is_floating_point}
        self.tensors = {k: v.detach().clone() for k, v in self.live.items()}

    @torch.no_grad()
    def step(self, progress: float, decay: float | None = None) -> None:
        decay = 0.95 ** self.EVERY * progress ** 3 if decay is None else decay
        for k, fast in self.live.items():
            slow = self.tensors[k]
            slow.lerp_(fast, 1.0 - decay)
            fast.copy_(slow)

    def finish(self) -> None:
        self.step(1.0, decay=1.0)


#: Config fields a resumed run may change: they do not alter what is trained.
RESUMABLE_CHANGES = frozenset({"eval_batch_size", "max_loss"})


def _check_same_config(out: Path, recorded: dict, now: dict) -> None:
    """A checkpoint continues only under the settings it was trained with: otherwise the model
    would mix two configs while its record named one."""
    changed = [f"{k} {recorded[k]!r} -> {now[k]!r}" for k in now
               if k in recorded and k not in RESUMABLE_CHANGES and recorded[k] != now[k]]
    if changed:
        raise UserError(f"{out}: holds a run with other settings ({'; '.join(changed)}); resume it with "
                        "the recorded settings (checkpoint.json) or choose another output directory")


def _settle_best(out: Path, state: dict) -> None:
    """Make best.safetensors agree with the last checkpoint. New best weights are written as
    best-pending.safetensors, the checkpoint recording their score follows, and only then are
    they renamed into place; a crash between the two leaves a pending file that this resolves:
    kept if the checkpoint names its epoch, dropped if not."""
    pending = out / BEST_PENDING
    if not pending.exists():
        return
    try:
        with safe_open(str(pending), framework="pt") as f:
            epoch = json.loads((f.metadata() or {}).get("epoch", "-1"))
    except (OSError, ValueError, SafetensorError):
        epoch = None  # torn by a crash mid-write (atomic writes make this unlikely): not committed
    if epoch == state["best_epoch"]:
        os.replace(pending, out / BEST)
    else:
        pending.unlink()


def _finish(model, out: Path, state: dict, device) -> TrainResult:
    if (out / BEST).exists():
        load_weights(out / BEST, model, device)
    wall = state["wall_s"]
    return TrainResult(
        best_val_acc=state["best_val_acc"], best_epoch=state["best_epoch"], epochs=state["epoch"],
        stopped=state["stopped"] or "epoch cap", wall_s=wall,
        images_per_s=state["images"] / wall if wall else 0.0, history=state["history"],
    )


def _note_progress(out: Path, epoch: int, step: int, steps: int, epochs: int) -> float:
    """Record where training is (read by `status` from another process); returns the time."""
    with atomic_path(out / PROGRESS) as tmp:
        tmp.write_text(json.dumps({"epoch": epoch + 1, "epochs": epochs, "step": step, "steps": steps,
                                   "time": time.time()}))
    return time.perf_counter()

