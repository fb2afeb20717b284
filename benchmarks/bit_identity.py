"""Hashes of trained weights and denoised outputs on a fixed seed: a refactor must not move them.

Trains scnet, n2v and n2n for a few steps on a small synthetic volume (threaded scheduler, CPU,
seed 0), denoises with each and with gaussian, and prints one SHA-256 per network state and per
denoised array. Run it before and after a change that must not alter behaviour and compare
(``python benchmarks/bit_identity.py > before.txt``; the same after; ``diff``).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

import mrcfile
import numpy as np
import torch
import zarr


def _cli(*args: str) -> None:
    cmd = [sys.executable, "-m", "scnet_dask.cli", *args]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"failed: {' '.join(args)}\n{r.stderr[-2000:]}")


def _write(path: Path, data: np.ndarray) -> Path:
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(data.astype(np.float32))
        m.voxel_size = 8.0
    return path


def _weights(run: Path) -> str:
    data = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    h = hashlib.sha256()
    for net in sorted(data["networks"]):
        for k, v in sorted(data["networks"][net].items()):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _array(store: Path) -> str:
    arr = zarr.open_group(str(store), mode="r")["0"][...]
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()[:16]


def main() -> None:
    """Print ``name sha256`` lines for weights and outputs of scnet, n2v, n2n and gaussian."""
    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[0:48, 0:64, 0:64].astype(np.float32)
    clean = np.sin(x / 5) * np.cos(y / 6) + 0.3 * np.sin(z / 4)
    with tempfile.TemporaryDirectory() as d:
        t = Path(d)
        for name, sd in (("noisy", 0.5), ("even", 0.7), ("odd", 0.7)):
            _write(t / f"{name}.mrc", clean + sd * rng.standard_normal(clean.shape))
            _cli("convert", str(t / f"{name}.mrc"), str(t / f"{name}.zarr"), "--chunks", "32")
        common = ["--epochs", "1", "--steps-per-epoch", "3", "--patch-size", "32",
                  "--val-patches", "1", "--val-fraction", "0.3", "--features", "8", "--no-plots",
                  "--seed", "0"]
        _cli("prior", str(t / "noisy.zarr"), str(t / "prior.zarr"), "--method", "gaussian")
        runs = {
            "scnet": ["train", str(t / "noisy.zarr"), "--method", "scnet", "--prior",
                      str(t / "prior.zarr")],
            "n2v": ["train", str(t / "noisy.zarr"), "--method", "n2v"],
            "n2n": ["train", str(t / "even.zarr"), "--method", "n2n", "--odd", str(t / "odd.zarr")],
        }
        for name, args in runs.items():
            _cli(*args, "--out", str(t / f"run_{name}"), *common)
            print(f"weights/{name} {_weights(t / f'run_{name}')}")
            src = "even.zarr" if name == "n2n" else "noisy.zarr"
            extra: list[str] = []
            _cli("denoise", str(t / src), str(t / f"run_{name}" / "last.pt"),
                 str(t / f"out_{name}.zarr"), "--method", name, "--tile", "32", *extra)
            print(f"denoised/{name} {_array(t / f'out_{name}.zarr')}")
        _cli("denoise", str(t / "noisy.zarr"), str(t / "out_gauss.zarr"), "--method", "gaussian",
             "--sigma", "1.5")
        print(f"denoised/gaussian {_array(t / 'out_gauss.zarr')}")


if __name__ == "__main__":
    main()
