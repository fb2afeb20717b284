"""How well NMSG's noise model learns a known noise spectrum (moved here from the unit tests).

A 40 x 96 x 96 volume of four smooth spheres plus correlated Gaussian noise of known spectrum
(white noise through a Gaussian of σ 1 voxel); ``train --method nmsg`` runs ``--gan-steps``
noise-model steps on its 16³ noise cubes (8 features, batch 16), once per noise model
(``--models spectral3d,wgan2d``: ours, and the authors' 2-D WGAN-GP). Reported: the generator's
per-band power error against the held-back real cubes (from ``noise_model.json``) and against
fresh noise of the true process (256 cubes), the histogram Wasserstein distance, and whether the
targets hold (max band error < 0.25 vs the held-back cubes, < 0.10 vs the true process over the
bands holding 90 % of the power, W1 < 0.1), and the lag-1 autocorrelation per axis against the
true process's (what a 2-D model, blind to z, misses). CPU, a few minutes at 300 steps.

``--runs RUN ...`` only tabulates the diagnostics that ``train --method nmsg`` wrote in those
run directories (``noise_model.json``: generated against the held-back real cubes), e.g. the
quality benchmark's runs on rec15.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import mrcfile
import numpy as np
import torch
import yaml
from scipy import ndimage as ndi

from scnet_dask.methods.loading import load_trained
from scnet_dask.methods.nmsg.diagnostics import noise_diagnostics

SIGMA = 1.0
#: Noise cube edge (a power of two, as the 2-D model needs).
CUBE = 16


def _noise(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    n = ndi.gaussian_filter(np.random.default_rng(seed).standard_normal(shape), SIGMA)
    return (n / 0.176).astype(np.float32)


def _clean(shape: tuple[int, int, int]) -> np.ndarray:
    z, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]].astype(np.float32)
    c = np.zeros(shape, np.float32)
    for cz, cy, cx in ((12, 14, 14), (20, 30, 70), (30, 70, 20), (16, 75, 75)):
        c += 2.5 * (((z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2) < 30)
    return ndi.gaussian_filter(c, 1.0)


def _run(t: Path, model: str, steps: int) -> tuple[dict, np.ndarray]:
    """Train one noise model on ``t/n.zarr``; its diagnostics and 256 generated cubes."""
    cli = [sys.executable, "-m", "scnet_dask.cli"]
    cfg = t / f"{model}.yaml"
    sections = {"noise_bank": {"cube": CUBE, "min_cubes": 32},
                "gan": {"features": 8, "batch": 16, "steps": steps}}  # fmt: skip
    cfg.write_text(yaml.safe_dump(sections))
    run = t / f"run_{model}"
    subprocess.run(
        [*cli, "train", str(t / "n.zarr"), "--method", "nmsg", "--out", str(run),
         "--patch-size", "16", "--features", "8", "--val-patches", "1", "--device", "cpu",
         "--no-plots", "--epochs", "1", "--steps-per-epoch", str(steps + 2),
         "--noise-model", model, "--config", str(cfg)],
        check=True,
    )  # fmt: skip
    held = json.loads((run / "noise_model.json").read_text())
    gen = load_trained(str(run / "last.pt"), "", "cpu").networks["generator"]
    with torch.no_grad():
        fake = gen.sample(256, (CUBE,) * 3, torch.Generator().manual_seed(5))[:, 0].numpy()
    return held, fake


def tabulate_runs(runs: list[Path]) -> None:
    """The noise diagnostics that training wrote (``RUN/noise_model.json``), one row per run."""
    print("| run | model | max band error (bands of 90 % power) | per band | histogram W1 (σ) "
          "| std generated / real | autocorrelation lags 1-3, generated (real): z; y; x |")
    print("|---|---|---|---|---|---|---|")
    for run in runs:
        d = json.loads((run / "noise_model.json").read_text())
        bands = " ".join(f"{e:.2f}" for e in d["band_error"])
        ac = "; ".join(
            " ".join(f"{g:.2f}" for g in d["autocorr_generated"][a])
            + " (" + " ".join(f"{r:.2f}" for r in d["autocorr_real"][a]) + ")"
            for a in "zyx"
        )
        print(f"| {run.name} | {d.get('noise_model', 'spectral3d')} | "
              f"{d['max_band_error']:.3f} (to {d['k_power']:.3f} cycles/voxel) | {bands} | "
              f"{d['wasserstein']:.4f} | {d['std_generated'] / d['std_real']:.3f} | {ac} |")


def main() -> None:
    """Train each noise model, print the figures and whether the targets hold."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--gan-steps", type=int, default=300)
    ap.add_argument("--models", default="spectral3d,wgan2d")
    ap.add_argument("--runs", type=Path, nargs="*", default=[],
                    help="only tabulate the noise_model.json of these training runs")
    args = ap.parse_args()
    if args.runs:
        tabulate_runs(args.runs)
        return
    shape = (40, 96, 96)
    noisy = _clean(shape) + _noise(shape, 1) + 3.0
    truth = np.stack([_noise((48, 48, 48), 100 + i)[16:32, 16:32, 16:32] for i in range(256)])
    truth = truth / float(noisy.std())
    print(f"NMSG noise models, {args.gan_steps} steps, {CUBE}³ cubes, noise: white through a "
          f"Gaussian of σ {SIGMA} voxel\n")  # fmt: skip
    print("| model | max band error vs held-back cubes (< 0.25) | vs the true process (< 0.10) "
          "| histogram W1 (< 0.10) | lag-1 autocorrelation z / y / x (true process) |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as d:
        t = Path(d)
        with mrcfile.new(t / "n.mrc") as m:
            m.set_data(noisy)
            m.voxel_size = 8.0
        cli = [sys.executable, "-m", "scnet_dask.cli"]
        subprocess.run([*cli, "convert", str(t / "n.mrc"), str(t / "n.zarr"), "--chunks", "16"],
                       check=True, capture_output=True)  # fmt: skip
        for model in args.models.split(","):
            held, fake = _run(t, model, args.gan_steps)
            dg = noise_diagnostics(truth, fake)
            ac_t, ac_g = dg["autocorr_real"], dg["autocorr_generated"]
            lag = " / ".join(f"{ac_g[a][0]:.2f}" for a in "zyx")
            true = " / ".join(f"{ac_t[a][0]:.2f}" for a in "zyx")
            print(f"| {model} | {held['max_band_error']:.3f} | {dg['max_band_error']:.3f} | "
                  f"{dg['wasserstein']:.3f} | {lag} ({true}) |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
