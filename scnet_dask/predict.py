"""Tile predictors for :func:`scnet_dask.tiling.overlap_add`: SC-Net and the Gaussian baseline.

A predictor is a small picklable object (a checkpoint path, a device name); the network is
loaded once per process by a cached loader, never pickled into the tasks. Forward calls on one
device are serialised by a per-process lock, so that the threaded scheduler overlaps reading,
blending and writing with the network instead of running two forwards that fight for the same
cores (or GPU), and so that the time spent inside the network can be measured.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from scnet_dask.errors import InputError
from scnet_dask.model.checkpoint import load_checkpoint
from scnet_dask.model.unet import SCNetUNet

__all__ = [
    "ScnetPredictor",
    "GaussianPredictor",
    "TopazPredictor",
    "Bm4dPredictor",
    "BM4D_REACH",
    "file_sha256",
    "load_denoiser",
    "forward_stats",
    "reset_forward_stats",
]

_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()
#: Voxels BM4D's result at one voxel depends on, roughly: its 7³ block-matching search window
#: and 5³ blocks in each of its two stages. Tiles are blended over this reach, not exact.
BM4D_REACH = 12
_STATS: dict[str, float] = {"seconds": 0.0, "calls": 0.0, "voxels": 0.0}


def _device_lock(device: str) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(device, threading.Lock())


def forward_stats() -> dict[str, float]:
    """Seconds spent inside network forwards in this process, calls and voxels predicted."""
    return dict(_STATS)


def _record_forward(seconds: float, voxels: int) -> None:
    _STATS["seconds"] += seconds
    _STATS["calls"] += 1
    _STATS["voxels"] += float(voxels)


def reset_forward_stats() -> None:
    """Zero the counters of :func:`forward_stats`."""
    for k in _STATS:
        _STATS[k] = 0.0


def _forward(
    net: torch.nn.Module, tiles: np.ndarray, mean: float, std: float, device: str, amp: bool
) -> np.ndarray:
    """Normalise (B, z, y, x) tiles, run ``net`` on ``device`` under its lock, de-normalise.

    ``amp``: bfloat16 autocast, on CUDA only. The time inside the network is recorded.
    """
    x = torch.from_numpy((np.asarray(tiles, np.float32) - mean) / std)[:, None]
    cuda = device.startswith("cuda")
    with _device_lock(device):
        t0 = time.perf_counter()
        with (
            torch.inference_mode(),
            torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and amp),
        ):
            out = net(x.to(device, non_blocking=True))[:, 0].float().cpu().numpy()
        _record_forward(time.perf_counter() - t0, out.size)
    return out * std + mean


def file_sha256(path: str | Path) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Denoiser:
    """A loaded SC-Net checkpoint: network (eval mode) and the noisy volume's statistics."""

    model: SCNetUNet
    mean: float
    std: float
    config: dict[str, Any]
    voxel_size_angstrom: tuple[float, float, float] | None


@lru_cache(maxsize=4)
def load_denoiser(path: str, sha256: str = "", device: str = "cpu") -> Denoiser:
    """Load an SC-Net training checkpoint once per process (cached by path, hash and device).

    Raises
    ------
    InputError
        If the checkpoint is not a scnet-dask SC-Net checkpoint or its weights do not fit.

    """
    from scnet_dask.train import build_model

    data = load_checkpoint(path, map_location="cpu")
    missing = [k for k in ("model", "config", "normalisation") if k not in data]
    if missing:
        raise InputError(f"{path}: not an SC-Net training checkpoint (no {', '.join(missing)})")
    cfg = dict(data["config"])
    try:
        model = build_model(cfg)
        model.load_state_dict(data["model"])
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        raise InputError(f"{path}: weights do not fit the network in its config ({e})") from e
    norm = dict(data["normalisation"].get("noisy", {}))
    mean, std = float(norm.get("mean", 0.0)), float(norm.get("std", 1.0)) or 1.0
    voxel = norm.get("voxel_size_angstrom")
    vox = (float(voxel[0]), float(voxel[1]), float(voxel[2])) if voxel else None
    return Denoiser(model.eval().to(device), mean, std, cfg, vox)


@dataclass(frozen=True)
class ScnetPredictor:
    """Predict (B, z, y, x) float32 tiles with a trained SC-Net checkpoint.

    Input tiles are in the volume's units; they are normalised with the training statistics,
    passed through the network (its 2x up-sampling block included), and de-normalised.

    Parameters
    ----------
    checkpoint
        Path of ``best.pt``/``last.pt`` from ``scnet-dask train``.
    sha256
        The checkpoint's hash (part of the cache key, so a changed file is reloaded).
    device
        ``cpu``, ``cuda`` or ``cuda:N`` (already resolved).
    amp
        bfloat16 autocast on CUDA (ignored on the CPU).

    """

    checkpoint: str
    sha256: str = ""
    device: str = "cpu"
    amp: bool = True

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        """Return the denoised tiles, same shape, float32, in the input's units."""
        den = load_denoiser(self.checkpoint, self.sha256, self.device)
        return _forward(den.model, tiles, den.mean, den.std, self.device, self.amp)


@dataclass(frozen=True)
class GaussianPredictor:
    """Gaussian low-pass of σ voxels (one, or per axis z, y, x) on each tile.

    The ``--method gaussian`` and ``--method lowpass`` baselines.
    """

    sigma: float | tuple[float, float, float] = 1.0

    @property
    def receptive_margin(self) -> int:
        """Voxels the filter reaches (scipy truncates at 4 σ)."""
        return int(4.0 * float(np.max(self.sigma)) + 0.5)

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        """Filter each (z, y, x) tile of the (B, z, y, x) batch; float32."""
        t0 = time.perf_counter()
        out = np.stack(
            [gaussian_filter(np.asarray(t, np.float32), self.sigma, mode="reflect") for t in tiles]
        )
        _record_forward(time.perf_counter() - t0, out.size)
        return out


@dataclass(frozen=True)
class TopazPredictor:
    """Topaz's pretrained 3-D denoiser on (B, z, y, x) tiles, with one global normalisation.

    Topaz normalises each input by its own mean and std; on tiles that would give every tile
    a different scale, so the volume's statistics (``mean``, ``std``) are used instead.
    """

    model: str = "unet-3d-10a"
    device: str = "cpu"
    mean: float = 0.0
    std: float = 1.0

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        """Return the denoised tiles, same shape, float32, in the input's units."""
        from scnet_dask.prior import topaz_3d_model

        net = topaz_3d_model(self.model, self.device)
        return _forward(net, tiles, self.mean, self.std, self.device, amp=False)


@dataclass(frozen=True)
class Bm4dPredictor:
    """BM4D (the ``bm4d`` package, Mäkinen, Azzari & Foi) on each (z, y, x) tile.

    Parameters
    ----------
    noise_sigma
        Standard deviation of the (assumed white) noise, in the input's units.
    profile
        ``"np"`` (normal) or ``"refilter"``; see :class:`bm4d.BM4DProfile`.

    Notes
    -----
    Slow: about 25 µs per voxel per core-set on a workstation CPU, so a 512 x 1024² tile set
    takes hours. The library uses every core for one tile; tiles run one at a time.

    """

    noise_sigma: float
    profile: str = "np"

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        """Denoise each tile of the (B, z, y, x) batch; float32, same units."""
        import bm4d

        with _device_lock("bm4d"):
            t0 = time.perf_counter()
            out = np.stack(
                [
                    np.asarray(bm4d.bm4d(np.asarray(t, np.float32), self.noise_sigma, self.profile))
                    for t in tiles
                ]
            ).astype(np.float32)
            _record_forward(time.perf_counter() - t0, out.size)
        return out
