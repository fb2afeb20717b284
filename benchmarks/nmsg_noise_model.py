"""How well NMSG's noise model learns a known noise spectrum (moved here from the unit tests).

A 40 x 96 x 96 volume of four smooth spheres plus correlated Gaussian noise of known spectrum
(white noise through a Gaussian of σ 1 voxel); ``train --method nmsg`` runs ``--gan-steps``
noise-model steps on its 12³ noise cubes (8 features, batch 16). Reported: the generator's
per-band power error against the held-back real cubes (from ``noise_model.json``) and against
fresh noise of the true process (256 cubes), the histogram Wasserstein distance, and whether the
targets hold (max band error < 0.25 vs the held-back cubes, < 0.10 vs the true process over the
bands holding 90 % of the power, W1 < 0.1). CPU, about 2 minutes at 300 steps.
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


def _noise(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    n = ndi.gaussian_filter(np.random.default_rng(seed).standard_normal(shape), SIGMA)
    return (n / 0.176).astype(np.float32)


def _clean(shape: tuple[int, int, int]) -> np.ndarray:
    z, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]].astype(np.float32)
    c = np.zeros(shape, np.float32)
    for cz, cy, cx in ((12, 14, 14), (20, 30, 70), (30, 70, 20), (16, 75, 75)):
        c += 2.5 * (((z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2) < 30)
    return ndi.gaussian_filter(c, 1.0)


def main() -> None:
    """Train the noise model, print the figures and whether the targets hold."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--gan-steps", type=int, default=300)
    args = ap.parse_args()
    shape = (40, 96, 96)
    noisy = _clean(shape) + _noise(shape, 1) + 3.0
    with tempfile.TemporaryDirectory() as d:
        t = Path(d)
        with mrcfile.new(t / "n.mrc") as m:
            m.set_data(noisy)
            m.voxel_size = 8.0
        cli = [sys.executable, "-m", "scnet_dask.cli"]
        subprocess.run([*cli, "convert", str(t / "n.mrc"), str(t / "n.zarr"), "--chunks", "16"],
                       check=True)  # fmt: skip
        cfg = t / "c.yaml"
        cfg.write_text(yaml.safe_dump({"noise_bank": {"cube": 12, "min_cubes": 32},
                                       "gan": {"features": 8, "batch": 16,
                                               "steps": args.gan_steps}}))  # fmt: skip
        subprocess.run(
            [*cli, "train", str(t / "n.zarr"), "--method", "nmsg", "--out", str(t / "run"),
             "--patch-size", "16", "--features", "8", "--val-patches", "1", "--device", "cpu",
             "--no-plots", "--epochs", "1", "--steps-per-epoch", str(args.gan_steps + 2),
             "--config", str(cfg)],
            check=True,
        )  # fmt: skip
        held = json.loads((t / "run" / "noise_model.json").read_text())
        gen = load_trained(str(t / "run" / "last.pt"), "", "cpu").networks["generator"]
        with torch.no_grad():
            fake = gen.sample(256, (12, 12, 12), torch.Generator().manual_seed(5))[:, 0].numpy()
    truth = np.stack([_noise((36, 36, 36), 100 + i)[12:24, 12:24, 12:24] for i in range(256)])
    d = noise_diagnostics(truth / float(noisy.std()), fake)
    rows = [
        ("max band error vs held-back cubes", held["max_band_error"], 0.25),
        ("max band error vs the true process", d["max_band_error"], 0.10),
        ("histogram W1 vs the true process", d["wasserstein"], 0.10),
    ]
    print(f"NMSG noise model, {args.gan_steps} steps")
    print("| figure | value | target | met |\n|---|---|---|---|")
    for name, value, target in rows:
        print(f"| {name} | {value:.4f} | < {target} | {value < target} |")


if __name__ == "__main__":
    main()
