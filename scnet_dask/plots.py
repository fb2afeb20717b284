"""Training plots: loss curves and noisy | prior | output mid-slices."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

__all__ = ["training_curves", "validation_slices"]


def training_curves(log_csv: Path, out_png: Path) -> None:
    """Plot every loss term of ``log.csv`` against the step (log scale)."""
    with open(log_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    steps = np.array([int(r["step"]) for r in rows])
    fig, ax = plt.subplots(figsize=(7, 4))
    for key in ("total", "rec", "smooth", "exp", "reg"):
        vals = np.array([float(r[key]) for r in rows])
        ax.plot(steps, np.maximum(vals, 1e-12), label=key, lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend(ncols=5, fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


def validation_slices(run: Any, out_png: Path) -> None:
    """Save the middle z-slice of the first validation patch: noisy | prior | output."""
    noisy, prior = run.val_set[0]
    run.model.eval()
    with torch.no_grad():
        x = torch.from_numpy(noisy[None, None]).to(run.device)
        out = run.model(x).float().cpu().numpy()[0, 0]
    run.model.train()
    mid = noisy.shape[0] // 2
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.2))
    for ax, img, title in zip(
        axes, (noisy[mid], prior[mid], out[mid]), ("noisy", "prior", "output"), strict=True
    ):
        lo, hi = np.percentile(img, [1, 99])
        ax.imshow(img, cmap="gray", vmin=lo, vmax=hi)
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
