"""Whole-volume real FFTs out of core, and the Fourier-sampling pool of ``fourier-n2n``.

Dask's FFTs need the transformed axis in one chunk, so a 3-D transform is three 1-D transforms
with a rechunk between them; each stage is written to a Zarr scratch store and read back with
the next stage's chunks, so no step holds more than a few slabs, never the volume.

The pool (the cryo-ET thesis's "F2Fd", ``singleCET_FourierDataset``): K volumes
``irfftn(F · mask_k)`` where ``F = rfftn(volume)`` and each mask is the union of a low-frequency
ball (always kept; its radius drawn between the radii of balls holding 5 % and 10 % of the
voxels, in frequency-index units) and a Bernoulli keep-mask drawn on blocks of 8³ frequencies
(keep probability 0.5), times a sign flip of a fraction 0.1 of the coefficients. Every random
draw comes from a seed per member (and per chunk for the sign flips), so the pool is
reproducible and a member can be rebuilt alone.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import zarr

from scnet_dask.errors import OutputError

__all__ = [
    "rfftn_zarr",
    "irfftn_zarr",
    "PoolSpec",
    "ball_radii",
    "pool_mask_block",
    "pool_disk_bytes",
]

log = logging.getLogger(__name__)


def _stage(arr: da.Array, path: Path, edge: int) -> zarr.Array:
    """Write ``arr`` to a Zarr scratch array of ``edge``³ chunks at ``path``.

    Cubic storage chunks let the next stage read slabs whole along *another* axis straight from
    the store (``da.from_zarr(..., chunks=...)``), without a rechunk graph holding many input
    blocks at once: memory stays at a few slabs whatever the volume's size.
    """
    chunks = tuple(min(edge, int(s)) for s in arr.shape)
    z = zarr.create_array(
        str(path), shape=arr.shape, chunks=chunks, dtype=arr.dtype, overwrite=True,
        compressors=None,
    )  # fmt: skip
    da.store(arr, z, lock=False)  # type: ignore[arg-type]
    return z


def _read(z: zarr.Array, axis: int, edge: int) -> da.Array:
    """The stage store ``z`` as a dask array whose chunks are whole along ``axis``."""
    return da.from_zarr(z, chunks=_slab(z.shape, axis, edge))


def _slab(shape: Sequence[int], axis: int, edge: int) -> tuple[int, ...]:
    """Chunks with ``axis`` whole and ``edge`` voxels along the others."""
    return tuple(int(s) if k == axis else min(edge, int(s)) for k, s in enumerate(shape))


def rfftn_zarr(volume: da.Array, scratch: Path, edge: int = 64) -> da.Array:
    """``numpy.fft.rfftn`` of a (z, y, x) dask array, out of core, as complex64.

    Parameters
    ----------
    volume
        (z, y, x) real volume (any chunks).
    scratch
        Folder for the stage stores (created; the caller removes it).
    edge
        Chunk edge (voxels) along the axes not being transformed.

    Returns
    -------
    dask.array.Array
        (z, y, x // 2 + 1) complex64, read lazily from ``scratch`` with chunks whole along z.

    """
    scratch.mkdir(parents=True, exist_ok=True)
    v = volume.astype(np.float32)
    a = da.fft.rfft(v.rechunk(_slab(v.shape, 2, edge)), axis=2).astype(np.complex64)
    za = _stage(a, scratch / "fx.zarr", edge)
    b = da.fft.fft(_read(za, 1, edge), axis=1).astype(np.complex64)
    zb = _stage(b, scratch / "fy.zarr", edge)
    c = da.fft.fft(_read(zb, 0, edge), axis=0).astype(np.complex64)
    return _read(_stage(c, scratch / "fz.zarr", edge), 0, edge)


def irfftn_zarr(
    spectrum: da.Array, shape: Sequence[int], scratch: Path, edge: int = 64
) -> da.Array:
    """``numpy.fft.irfftn(spectrum, shape)`` out of core, as float32 (lazy, last stage not stored).

    ``spectrum`` is (z, y, x // 2 + 1); the inverse runs along z, then y (each stored in
    ``scratch``), then x; the result has chunks whole along x.
    """
    scratch.mkdir(parents=True, exist_ok=True)
    a = da.fft.ifft(spectrum.rechunk(_slab(spectrum.shape, 0, edge)), axis=0)
    za = _stage(a.astype(np.complex64), scratch / "iz.zarr", edge)
    b = da.fft.ifft(_read(za, 1, edge), axis=1)
    zb = _stage(b.astype(np.complex64), scratch / "iy.zarr", edge)
    c = da.fft.irfft(_read(zb, 2, edge), n=int(shape[2]), axis=2)
    return c.astype(np.float32)


def ball_radii(shape: Sequence[int]) -> tuple[float, float]:
    """Radii (frequency-index units) of balls holding 5 % and 10 % of the voxel count."""
    n = float(np.prod([int(s) for s in shape]))
    r = [(f * n * 3.0 / (4.0 * np.pi)) ** (1.0 / 3.0) for f in (0.05, 0.10)]
    return r[0], r[1]


@dataclass(frozen=True)
class PoolSpec:
    """The random draws of one pool member (all derived from ``seed``).

    Attributes
    ----------
    shape
        Real-space volume shape (z, y, x).
    seed
        The member's seed.
    block
        Edge of the Bernoulli blocks, in frequencies.
    keep
        Keep probability of a block.
    flip
        Fraction of coefficients whose sign is flipped.

    """

    shape: tuple[int, int, int]
    seed: int
    block: int = 8
    keep: float = 0.5
    flip: float = 0.1

    def radius(self) -> float:
        """The member's low-frequency ball radius, uniform between the 5 % and 10 % radii."""
        lo, hi = ball_radii(self.shape)
        return float(np.random.default_rng([self.seed, 1]).uniform(lo, hi))

    def block_grid(self) -> np.ndarray:
        """The Bernoulli keep decisions on the grid of ``block``³ frequency blocks."""
        z, y, x = self.shape
        coarse = (-(-z // self.block), -(-y // self.block), -(-(x // 2 + 1) // self.block))
        return np.random.default_rng([self.seed, 2]).random(coarse) < self.keep


def _signed_index(start: int, stop: int, n: int) -> np.ndarray:
    """Signed frequency indices (as ``fftfreq * n``) of array positions ``[start, stop)``."""
    i = np.arange(start, stop)
    return np.where(i <= (n - 1) // 2, i, i - n).astype(np.float64)


def pool_mask_block(
    spec: PoolSpec, grid: np.ndarray, radius: float, box: Sequence[tuple[int, int]]
) -> np.ndarray:
    """The mask (values -1, 0, +1, float32) of ``spec`` over the rfft-grid box ``box``.

    ``box`` is ``(start, stop)`` per axis of the (z, y, x // 2 + 1) spectrum; ``grid`` and
    ``radius`` come from :meth:`PoolSpec.block_grid` and :meth:`PoolSpec.radius`.
    """
    z, y, x = spec.shape
    (z0, z1), (y0, y1), (x0, x1) = box
    kz = _signed_index(z0, z1, z)[:, None, None]
    ky = _signed_index(y0, y1, y)[None, :, None]
    kx = np.arange(x0, x1, dtype=np.float64)[None, None, :]
    ball = kz**2 + ky**2 + kx**2 <= radius**2
    b = spec.block
    blocks = grid[
        np.arange(z0, z1)[:, None, None] // b,
        np.arange(y0, y1)[None, :, None] // b,
        np.arange(x0, x1)[None, None, :] // b,
    ]
    keep = (ball | blocks).astype(np.float32)
    rng = np.random.default_rng([spec.seed, 3, z0, y0, x0])
    sign = np.where(rng.random(keep.shape) < spec.flip, -1.0, 1.0).astype(np.float32)
    return keep * sign


def _mask_block(
    block: np.ndarray, spec: PoolSpec, grid: np.ndarray, radius: float, block_info: Any = None
) -> np.ndarray:
    loc = block_info[0]["array-location"]
    return block * pool_mask_block(spec, grid, radius, loc)


def masked_inverse(spectrum: da.Array, spec: PoolSpec, scratch: Path, edge: int = 64) -> da.Array:
    """One pool member: ``irfftn(spectrum · mask(spec))``, float32, lazy (see module doc)."""
    grid, radius = spec.block_grid(), spec.radius()
    masked = da.map_blocks(
        _mask_block, spectrum, spec=spec, grid=grid, radius=radius, dtype=np.complex64
    )
    return irfftn_zarr(masked, spec.shape, scratch, edge)


def pool_disk_bytes(shape: Sequence[int], members: int, float16: bool) -> tuple[int, int]:
    """(pool bytes, peak scratch bytes) before compression: members x volume, 5 spectra."""
    n = int(np.prod([int(s) for s in shape]))
    spec = int(shape[0]) * int(shape[1]) * (int(shape[2]) // 2 + 1) * 8
    return members * n * (2 if float16 else 4), 5 * spec


def check_disk(folder: Path, need: int) -> None:
    """Refuse (one line) when the file system of ``folder`` has less than ``need`` bytes free."""
    probe = folder if folder.exists() else folder.parent
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < need:
        raise OutputError(
            f"{folder}: the Fourier pool needs {need / 2**30:.2f} GiB but only "
            f"{free / 2**30:.2f} GiB are free; use fewer --pool-size members, --pool-float16, "
            "or another --out"
        )
