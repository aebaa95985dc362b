"""A picture of what the augmentation does: originals next to several augmented copies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from shallowmimic.augment.transforms import HSVConstants, augment
from shallowmimic.core.errors import UserError
from shallowmimic.core.files import atomic_path
from shallowmimic.data.sources import Dataset
from shallowmimic.data.split import to_float


def save_preview(
    ds: Dataset,
    out: str | Path,
    hsv: HSVConstants,
    n_images: int = 8,
    n_augmented: int = 7,
    seed: int = 0,
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    if out.suffix.lower() not in (".png", ".svg", ".pdf", ".jpg"):
        raise UserError(f"{out}: unsupported image format (use .png, .svg, .pdf or .jpg)")
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(ds.x_train), size=min(n_images, len(ds.x_train)), replace=False)
    originals = to_float(torch.from_numpy(ds.x_train[idx]))
    g = torch.Generator().manual_seed(seed)
    columns = [originals]
    for _ in range(n_augmented):
        columns.append(augment(originals, hsv, g)[0])
    fig, axes = plt.subplots(
        len(idx), 1 + n_augmented, figsize=(1.3 * (1 + n_augmented), 1.3 * len(idx)), squeeze=False
    )
    for r in range(len(idx)):
        for c, col in enumerate(columns):
            ax = axes[r][c]
            ax.imshow(col[r].permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title("original" if c == 0 else f"aug {c}", fontsize=8)
        axes[r][0].set_ylabel(ds.class_names[int(ds.y_train[idx[r]])], fontsize=8)
    fig.suptitle(
        f"HSV dh={hsv.dh} ds={hsv.ds} dv={hsv.dv} as={hsv.as_} av={hsv.av}, flip p=0.5, "
        f"crop {round(0.75 * ds.image_size)}-{ds.image_size}px (bicubic)",
        fontsize=8,
    )
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format=out.suffix.lstrip(".").replace("jpg", "jpeg"), dpi=100)
    plt.close(fig)
    return out
