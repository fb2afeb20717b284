"""Runtime shared by every method's tile predictor: device locks, forward timing, file hashes.

Predictors (see :mod:`scnet_dask.methods`) are small picklable objects (a checkpoint path, a
device name); networks are loaded once per process by a cached loader, never pickled into
tasks. Forward calls on one device are serialised by a per-process lock, so that the threaded
scheduler overlaps reading, blending and writing with the network instead of running two
forwards that fight for the same cores (or GPU), and so that the time spent inside the network
can be measured.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "file_sha256",
    "forward_normalised",
    "infer",
    "per_tile",
    "device_lock",
    "record_forward",
    "forward_stats",
    "reset_forward_stats",
]

_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()
_STATS: dict[str, float] = {"seconds": 0.0, "calls": 0.0, "voxels": 0.0}


def device_lock(device: str) -> threading.Lock:
    """The per-process lock serialising forwards on ``device`` (or any named resource)."""
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(device, threading.Lock())


def forward_stats() -> dict[str, float]:
    """Seconds spent inside network forwards in this process, calls and voxels predicted."""
    return dict(_STATS)


def record_forward(seconds: float, voxels: int) -> None:
    """Add one forward of ``seconds`` over ``voxels`` to :func:`forward_stats`."""
    _STATS["seconds"] += seconds
    _STATS["calls"] += 1
    _STATS["voxels"] += float(voxels)


def reset_forward_stats() -> None:
    """Zero the counters of :func:`forward_stats`."""
    for k in _STATS:
        _STATS[k] = 0.0


def per_tile(
    fn: Callable[[np.ndarray], np.ndarray], tiles: np.ndarray, lock: str | None = None
) -> np.ndarray:
    """Apply ``fn`` to each (z, y, x) tile of a (B, z, y, x) batch; float32, time recorded.

    ``lock``: hold that named per-process lock (:func:`device_lock`) meanwhile, for tools that
    use every core for one tile.
    """
    with device_lock(lock) if lock else contextlib.nullcontext():
        t0 = time.perf_counter()
        out = np.stack([np.asarray(fn(np.asarray(t, np.float32))) for t in tiles])
        out = out.astype(np.float32, copy=False)
        record_forward(time.perf_counter() - t0, out.size)
    return out


def forward_normalised(
    net: torch.nn.Module, tiles: np.ndarray, mean: float, std: float, device: str, amp: bool,
    out: tuple[float, float] | None = None,
) -> np.ndarray:  # fmt: skip
    """Normalise (B, z, y, x) tiles, run ``net`` on ``device`` under its lock, de-normalise.

    ``amp``: bfloat16 autocast, on CUDA only. ``out``: (mean, std) of the output's units when
    they differ from the input's (a supervised network's target), else ``(mean, std)``. The
    time inside the network is recorded.
    """
    x = torch.from_numpy((np.asarray(tiles, np.float32) - mean) / std)[:, None]
    with device_lock(device):
        t0 = time.perf_counter()
        res = infer(net, x, device, amp)
        record_forward(time.perf_counter() - t0, res.size)
    o_mean, o_std = out if out is not None else (mean, std)
    return res * o_std + o_mean


def infer(net: torch.nn.Module, x: torch.Tensor, device: str, amp: bool) -> np.ndarray:
    """``net`` on a (B, 1, z, y, x) batch: (B, z, y, x) float32 on the CPU.

    Inference mode; bfloat16 autocast when ``amp`` and ``device`` is CUDA. The caller holds the
    device lock.
    """
    cuda = device.startswith("cuda")
    with (
        torch.inference_mode(),
        torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and amp),
    ):
        return np.asarray(net(x.to(device, non_blocking=True))[:, 0].float().cpu().numpy())


def file_sha256(path: str | Path) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
