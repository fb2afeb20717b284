"""``score``'s report: ``score.csv``, ``score.md`` and ``slices.png`` of the ranked rows."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from scnet_dask.config import ScoreConfig

__all__ = ["COLUMNS", "SCORE_DIR", "candidate_slug", "write_report"]

#: The work folder inside ``--out``: each candidate's row, slice and (kept) volumes.
SCORE_DIR = ".score"


def candidate_slug(name: str) -> str:
    """The file-name form of a candidate's name (its files in ``.score/``)."""
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower() or "candidate"

COLUMNS = ["rank", "candidate", "method", "mse_estimate", "psnr_estimate", "half_error_fit",
           "noisier_error_fit", "half_mse_estimate", "psnr_half_estimate", "half_error",
           "error_even", "error_odd", "fsc_0143_angstrom", "fsc_05_angstrom", "scored",
           "seconds"]  # fmt: skip


def write_report(
    rows: list[dict[str, Any]], out: Path, cfg: ScoreConfig, noise: float, rng: float
) -> None:
    """Write the report of ``rows`` (ranked) into ``out``; slices from ``out/.score/``."""
    with open(out / "score.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)

    def fmt(v: Any, d: int) -> str:
        return "–" if v is None or v != v else ("none" if v == math.inf else f"{v:.{d}f}")

    lines = [
        f"Halves: {cfg.even} / {cfg.odd}; noise variance of a half {noise:.5g}, signal range "
        f"R {rng:.5g} (0.1-99.9 % of the halves' mean, σ 1 voxel).",
        "",
        "| rank | candidate | PSNR estimate, full (dB) | MSE estimate, full | PSNR estimate, "
        "half (dB) | half error (fitted) | at 2x noise (fitted) | half error | "
        "FSC_e/o 0.143 (Å) | FSC_e/o 0.5 (Å) | scored | s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['rank']} | {r['candidate']} | {fmt(r['psnr_estimate'], 2)} | "
            f"{r['mse_estimate']:.4g} | {fmt(r['psnr_half_estimate'], 2)} | "
            f"{r['half_error_fit']:.5g} | {r['noisier_error_fit']:.5g} | {r['half_error']:.5g} | "
            f"{fmt(r['fsc_0143_angstrom'], 1)} | {fmt(r['fsc_05_angstrom'], 1)} | "
            f"{r['scored']} | {r['seconds']:.0f} |"
        )
    lines += ["", "Ranked by the estimated error of the candidate applied to the full volume "
              "(lower is better). Each candidate denoised one half and was compared with the "
              "other, whose noise it never saw, after the best scale and offset (as the PSNR of "
              "the quality benchmark): minus the noise variance of a half, its error at a half's "
              "noise level. It denoised the half once more with a second half's noise added "
              "(the halves' difference, shifted by half the grid): its error at twice that "
              "level. The full volume has half a half's noise variance; its error is "
              "extrapolated linearly in the noise variance (exact for linear filters; "
              "docs/measurements.md, 'The half-split score')."]
    (out / "score.md").write_text("\n".join(lines) + "\n")
    top = rows[: cfg.top]
    fig = Figure(figsize=(2.6 * len(top), 2.9))
    axes = np.atleast_1d(fig.subplots(1, len(top)))
    for ax, r in zip(axes, top, strict=True):
        img = np.load(out / SCORE_DIR / f"{candidate_slug(r['candidate'])}.npy")
        lo, hi = np.percentile(img, (1, 99))
        ax.imshow(img, cmap="gray", vmin=lo, vmax=hi)
        ax.set_title(f"{r['rank']}. {r['candidate']}", fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out / "slices.png", dpi=110)

