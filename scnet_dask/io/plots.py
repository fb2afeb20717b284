"""Training plots: loss curves and mid-slices of a validation patch (inputs | output).

Figures are drawn with :class:`matplotlib.figure.Figure` directly (no ``pyplot``, no global
backend switch), so importing or calling this never changes the user's matplotlib state.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

__all__ = ["training_curves", "validation_slices"]


def training_curves(log_csv: Path, out_png: Path, terms: Sequence[str] = ("total",)) -> None:
    """Plot the loss ``terms`` of ``log.csv`` against the step (log scale)."""
    with open(log_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    steps = np.array([int(r["step"]) for r in rows])
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    for key in terms:
        if key == "ramp" or key not in rows[0]:
            continue
        vals = np.array([float(r[key]) for r in rows])
        ax.plot(steps, np.maximum(vals, 1e-12), label=key, lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend(ncols=5, fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)


def validation_slices(volumes: Mapping[str, np.ndarray], out_png: Path) -> None:
    """Save the middle z-slice of each (z, y, x) volume side by side, titled by its name."""
    fig = Figure(figsize=(3 * len(volumes), 3.2))
    axes = np.atleast_1d(fig.subplots(1, len(volumes)))
    for ax, (title, vol) in zip(axes, volumes.items(), strict=True):
        img = np.asarray(vol)[vol.shape[0] // 2]
        lo, hi = np.percentile(img, [1, 99])
        ax.imshow(img, cmap="gray", vmin=lo, vmax=hi)
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
