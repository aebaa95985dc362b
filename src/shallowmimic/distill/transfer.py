"""The transfer set (PROTOCOL section 5): N epochs of augmented training images, labelled with
the ensemble's averaged logits, generated once so every student sees the same data in the
same order.

Stored compactly: not the images but, per epoch, one shard `epoch_NNNN.safetensors` with
- `order`  int32 (n,): which training image (index into the split's training part) comes next;
- `hsv`    float16 (n, 5) and `geom` int16 (n, 4): the augmentation record (see `augment`);
- `logits` float16 (n, classes): the ensemble's averaged logits on the rendered image.
Replaying renders exactly the stored images (`augment.apply` on the record). Shards are written
atomically and skipped when present, so a killed generation continues where it stopped. Each
shard's metadata names what made it (ensemble and its manifest digest, split fingerprint, seed,
images per epoch, augmentation constants): a shard made by anything else is an error, or with
`rebuild` is made again. `manifest.json`, written last, holds counts, per-shard SHA-256 and the
ensemble it came from; readers check the split and each shard's digest (once per process).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from shallowmimic.augment.transforms import STUDENT_HSV, AugParams, HSVConstants, apply, sample_params
from shallowmimic.core.device import autocast, memory_format, takes_compute
from shallowmimic.core.errors import UserError
from shallowmimic.core.files import atomic_path, file_digest, provenance, read_json, write_json
from shallowmimic.core.layout import TRANSFER_MANIFEST
from shallowmimic.data.split import standardize, to_float
from shallowmimic.distill.ensemble import MANIFEST as ENSEMBLE_MANIFEST
from shallowmimic.training.batches import seed_for

MANIFEST = TRANSFER_MANIFEST


def shard_name(epoch: int) -> str:
    return f"epoch_{epoch:04d}.safetensors"


def bytes_per_image(classes: int) -> int:
    """Stored bytes per transfer image: order int32, hsv 5 x float16, geom 4 x int16, logits
    classes x float16 (safetensors headers aside)."""
    return 4 + 5 * 2 + 4 * 2 + classes * 2


def render(images: torch.Tensor, record: AugParams) -> torch.Tensor:
    """uint8 NHWC images + augmentation record -> standardized float NCHW, on images' device."""
    x = standardize(apply(to_float(images), record))
    return x.contiguous(memory_format=memory_format(images.device))


@dataclass(frozen=True)
class TransferConfig:
    """What a transfer set is made of (a study's [transfer] table; its fields key the job)."""

    epochs: int = 160
    seed: int = 0
    materialize: bool = False  # also store the rendered images (for inspection; students re-render)
    images: int = 0  # images per epoch, a fresh random subset of the split each epoch; 0: all
    tta: str = "model"  # test-time augmentation of the ensemble's logits: model (the teachers' own) | none | flip | ...


#: Provenance entries kept as a record but not compared: the same ensemble may be reached by
#: another path (absolute vs relative, a moved study); its manifest digest identifies it.
RECORD_ONLY = frozenset({"ensemble"})


def shard_provenance(source: dict, cfg: TransferConfig, n: int, split_n: int, hsv: HSVConstants) -> dict:
    """What a shard's content depends on (stored in its metadata and compared on resume)."""
    digest = None
    if source.get("ensemble"):
        ensemble_manifest = Path(source["ensemble"]) / ENSEMBLE_MANIFEST
        digest = file_digest(ensemble_manifest) if ensemble_manifest.is_file() else None
    return {**source, "ensemble_digest": digest, "seed": cfg.seed, "images_per_epoch": n,
            "split_images": split_n, "hsv": asdict(hsv)}


def _check_shard(path: Path, wanted: dict) -> bool:
    """True if the shard at `path` was made with `wanted`; a clear error if not."""
    try:
        with safe_open(str(path), framework="pt") as f:
            made = json.loads((f.metadata() or {}).get("provenance", "null"))
    except (OSError, ValueError, SafetensorError) as e:
        raise UserError(f"{path}: unreadable transfer-set shard ({e}); delete it to regenerate") from None
    how = "use another output directory, delete this one, or pass `transfer --rebuild`"
    if made is None:
        raise UserError(f"{path}: this shard records no provenance (written by an older version); {how}")
    made = {k: v for k, v in made.items() if k != "epoch"}
    diff = sorted(k for k in (set(wanted) | set(made)) - RECORD_ONLY if made.get(k) != wanted.get(k))
    if diff:
        raise UserError(f"{path}: this shard was made by another ensemble or settings (differs in "
                        f"{', '.join(diff)}); {how}")
    return True


@takes_compute
def generate(ensemble: Callable[[torch.Tensor], torch.Tensor], train_images: torch.Tensor, cfg: TransferConfig,
             out: Path, source: dict, hsv: HSVConstants = STUDENT_HSV, progress: bool = True,
             stop_after: int | None = None, rebuild: bool = False, only: Sequence[int] | None = None,
             batch_size: int = 1000) -> dict | None:
    """Write the transfer set into `out`; resumes over existing shards made the same way (others
    are an error, or with `rebuild` are made again). `source` describes the ensemble and split
    (recorded in every shard and the manifest). `only` makes just those stored epochs and no
    manifest (workers label epochs in parallel; a last call without it writes the manifest).
    `batch_size`: the ensemble's inference batch. `stop_after` (tests) simulates a kill.
    `ensemble` takes the augmented images as float NCHW in [0, 1] (as `load_ensemble`'s does);
    `cfg.tta` is the caller's: `ensemble` is the ensemble with it applied."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    split_n, size = len(train_images), train_images.shape[1]
    if not 0 <= cfg.images <= split_n:
        raise UserError(f"transfer images per epoch must be between 1 and the split's {split_n} (0: all), "
                        f"got {cfg.images}")
    n = cfg.images or split_n
    made_by = shard_provenance(source, cfg, n, split_n, hsv)
    assert not (rebuild and only is not None), "a rebuild remakes every shard"
    if rebuild:  # everything made before goes, so nothing stale can be mixed in
        for stale in [out / MANIFEST, *out.glob("epoch_*.safetensors"), *out.glob("images_*.safetensors")]:
            stale.unlink(missing_ok=True)
    epochs = range(cfg.epochs) if only is None else only
    bar = tqdm(epochs, desc="transfer set", unit="ep", disable=not progress, dynamic_ncols=True)
    for e in bar:
        path = out / shard_name(e)
        if path.exists() and _check_shard(path, made_by) and \
                (not cfg.materialize or (out / f"images_{e:04d}.safetensors").exists()):
            continue
        if stop_after is not None and e >= stop_after:
            raise KeyboardInterrupt(f"stopped before epoch {e}")
        _label_epoch(ensemble, train_images, cfg, out, e, n, hsv, made_by, batch_size)
    bar.close()
    if only is not None:
        return None
    manifest = _manifest(out, cfg, n, split_n, size, hsv, source)
    write_json(out / MANIFEST, manifest)
    return manifest


def _label_epoch(ensemble, train_images: torch.Tensor, cfg: TransferConfig, out: Path, e: int, n: int,
                 hsv: HSVConstants, made_by: dict, batch_size: int) -> None:
    """Stored epoch `e`: its seeded order and augmentation records, and the ensemble's logits on
    the images they render, written as one shard (and, with `materialize`, the images)."""
    device = train_images.device
    split_n, size = len(train_images), train_images.shape[1]
    g = torch.Generator().manual_seed(seed_for(cfg.seed, "transfer", e))
    order = torch.randperm(split_n, generator=g)[:n]
    record = sample_params(n, size, hsv, g)
    logits, rendered = [], []
    for i in range(0, n, batch_size):
        idx = order[i : i + batch_size].to(device)
        x = apply(to_float(train_images[idx]), record[i : i + batch_size])  # each member standardizes it
        with autocast(device):
            logits.append(ensemble(x).float().cpu())
        if cfg.materialize:
            rendered.append(_to_uint8(x))
    tensors = {"order": order.to(torch.int32), "hsv": record.hsv, "geom": record.geom,
               "logits": torch.cat(logits).to(torch.float16)}
    if cfg.materialize:
        with atomic_path(out / f"images_{e:04d}.safetensors") as tmp:
            save_file({"images": torch.cat(rendered)}, str(tmp))
    with atomic_path(out / shard_name(e)) as tmp:
        # one metadata key: safetensors writes several in hash order, which would make
        # identical shards differ in bytes (and digest) from one write to the next
        save_file(tensors, str(tmp), metadata={"provenance": json.dumps({**made_by, "epoch": e})})


def _manifest(out: Path, cfg: TransferConfig, n: int, split_n: int, size: int, hsv: HSVConstants,
              source: dict) -> dict:
    shards = [shard_name(e) for e in range(cfg.epochs)]
    classes = load_file(str(out / shards[0]))["logits"].shape[1]
    stored = sum((out / s).stat().st_size for s in shards)
    return {
        "epochs": cfg.epochs, "images_per_epoch": n, "split_images": split_n, "image_size": size,
        "classes": classes,
        "seed": cfg.seed, "hsv": asdict(hsv),
        "shards": {s: file_digest(out / s) for s in shards},
        "bytes": stored, "bytes_per_image": bytes_per_image(classes),
        "materialized_bytes": cfg.epochs * n * size * size * 3,
        "materialized": cfg.materialize, **source, "provenance": provenance(),
    }


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x * 255.0).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu()


def read_manifest(directory: Path) -> dict:
    return read_json(Path(directory) / MANIFEST, "not a finished transfer set")


class TransferBatches:
    """Minibatches replayed from a transfer set: (rendered image, true label, ensemble logits).

    Student epoch e uses stored epoch e mod N, in its stored order, so every student sees
    identical data in identical order. Shards are loaded lazily, one at a time."""

    def __init__(self, directory: Path, train_images: torch.Tensor, train_labels: torch.Tensor,
                 batch_size: int, split_fingerprint: str | None = None):
        self.dir = Path(directory)
        self.manifest = read_manifest(self.dir)
        split_n = self.manifest.get("split_images", self.manifest["images_per_epoch"])
        if split_n != len(train_images):
            raise UserError(f"{directory}: transfer set was drawn from a training split of {split_n} images "
                            f"but this split has {len(train_images)}; regenerate it")
        made_on = self.manifest.get("split_fingerprint")
        if split_fingerprint and made_on and made_on != split_fingerprint:
            raise UserError(f"{directory}: transfer set was drawn from another train/validation split "
                            f"(fingerprint {made_on}, this one {split_fingerprint}); regenerate it")
        self.images, self.labels, self.batch_size = train_images, train_labels, batch_size

    def __len__(self) -> int:
        return max(1, self.manifest["images_per_epoch"] // self.batch_size)

    def shard(self, e: int) -> dict[str, torch.Tensor]:
        name = shard_name(e % self.manifest["epochs"])
        verify_shard(self.dir / name, self.manifest["shards"][name])
        return load_file(str(self.dir / name))

    def epoch(self, e: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        s = self.shard(e)
        device = self.images.device
        order = s["order"].long().to(device)
        logits = s["logits"].to(device)
        rendered = self._rendered(e % self.manifest["epochs"], order, AugParams(s["hsv"], s["geom"]))
        bs = min(self.batch_size, len(order))
        for i in range(len(self)):
            sl = slice(i * bs, (i + 1) * bs)
            yield rendered[sl], self.labels[order[sl]], logits[sl].float()

    def _rendered(self, e: int, order: torch.Tensor, record: AugParams) -> torch.Tensor:
        """Stored epoch `e`, rendered once per process and shared by every student trained in
        it (the students of a study replay the same epochs), within a memory budget."""
        key = (str(self.dir.resolve()), e, self.manifest["shards"][shard_name(e)], str(self.images.device))
        if key in _RENDERED:
            _RENDERED.move_to_end(key)
            return _RENDERED[key]
        x = render(self.images[order], record)
        if x.numel() * x.element_size() <= RENDER_CACHE_BYTES:
            _RENDERED[key] = x
            while sum(t.numel() * t.element_size() for t in _RENDERED.values()) > RENDER_CACHE_BYTES:
                _RENDERED.popitem(last=False)
        return x


_VERIFIED: set[tuple[str, str, int]] = set()  # (path, digest, mtime): shards checked in this process


def verify_shard(path: Path, digest: str) -> None:
    """The shard must be the one the manifest lists: a SHA-256 check, once per process per file."""
    if not path.is_file():
        raise UserError(f"{path}: shard listed in the manifest is missing; regenerate the transfer set")
    key = (str(path.resolve()), digest, path.stat().st_mtime_ns)
    if key in _VERIFIED:
        return
    if file_digest(path) != digest:
        raise UserError(f"{path}: does not match the digest in its manifest (changed or corrupt); "
                        "regenerate the transfer set")
    _VERIFIED.add(key)


#: Rendered transfer epochs kept in memory (least recently used dropped first). Rendering is
#: exact, so a cached epoch is bit-identical to a fresh one.
RENDER_CACHE_BYTES = 3 * 2**30
_RENDERED: OrderedDict[tuple, torch.Tensor] = OrderedDict()
