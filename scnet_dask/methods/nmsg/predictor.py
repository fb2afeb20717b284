"""NMSG's tile predictor and the per-process caches of its noise bank and generator."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from scnet_dask.errors import InputError
from scnet_dask.methods._unet import (
    tile_statistics,
)
from scnet_dask.methods.base import (
    Geometry,
)
from scnet_dask.methods.loading import load_trained
from scnet_dask.methods.nmsg.noise_bank import open_noise_bank
from scnet_dask.methods.runtime import device_lock, record_forward
from scnet_dask.model.gan import (
    NoiseGenerator,
    cube_spectrum,
)
from scnet_dask.model.gan2d import NoiseGenerator2D

__all__ = [
    "NmsgPredictor",
]


@dataclass(frozen=True)
class _Bank:
    train: np.ndarray
    held: np.ndarray
    spectrum: np.ndarray


@lru_cache(maxsize=2)
def _bank(path: str) -> _Bank:
    """The noise cubes of ``path``: 90 % to train on, 10 % (>= 8) held back; their spectrum."""
    cubes = open_noise_bank(Path(path))
    held = max(8, len(cubes) // 10)
    train = cubes[:-held]
    spec = cube_spectrum(torch.from_numpy(train[:, None])).numpy()
    return _Bank(train, cubes[-held:], spec)


def _gen(networks: Mapping[str, torch.nn.Module]) -> NoiseGenerator | NoiseGenerator2D:
    """The ``generator`` network (3-D spectral or 2-D WGAN-GP), typed."""
    g = networks["generator"]
    if not isinstance(g, NoiseGenerator | NoiseGenerator2D):
        raise InputError(f"the generator is a {type(g).__name__}, not a noise generator")
    return g


@dataclass(frozen=True)
class NmsgPredictor:
    """NMSG's Noisier2Noise denoiser on (B, z, y, x) tiles in the input's units.

    Per tile, ``passes`` draws of generated noise ``m`` (seeded by the tile's seed), each
    corrected as ``((1 + α²) f(y + α m) − y − α m) / α²``, averaged.
    """

    checkpoint: str
    sha256: str
    device: str
    amp: bool
    geometry: Geometry
    alpha: float
    passes: int
    mean: float | None = None
    std: float | None = None

    def __call__(self, tiles: np.ndarray, seeds: Sequence[int] | None = None) -> np.ndarray:
        """Return the denoised tiles, same shape, float32, in the input's units."""
        tr = load_trained(self.checkpoint, self.sha256, self.device)
        mean, std = tile_statistics(tr, "noisy", self.mean, self.std)
        net, gen = tr.networks["model"], _gen(tr.networks)
        x = torch.from_numpy((np.asarray(tiles, np.float32) - mean) / std)[:, None]
        cuda = self.device.startswith("cuda")
        a2 = self.alpha**2
        with (
            device_lock(self.device),
            torch.inference_mode(),
            torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and self.amp),
        ):
            t0 = time.perf_counter()
            x = x.to(self.device)
            shape = tuple(int(s) for s in x.shape[2:])
            out = torch.zeros_like(x)
            for k in range(self.passes):
                m = torch.cat(
                    [
                        gen.sample(
                            1, shape,
                            torch.Generator().manual_seed(
                                (int(seeds[b]) if seeds is not None else b) * 64 + k
                            ),
                            self.device,
                        ).float()
                        for b in range(x.shape[0])
                    ]
                )  # fmt: skip
                z = x + self.alpha * m
                out += ((1 + a2) * net(z).float() - z) / a2
            out /= self.passes
            res = out[:, 0].float().cpu().numpy()
            record_forward(time.perf_counter() - t0, res.size * self.passes)
        return res * std + mean
