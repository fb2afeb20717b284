"""Volume statistics from Dask reductions (never a whole volume in memory)."""

from __future__ import annotations

import logging
from typing import Any

import dask
import dask.array as da
import numpy as np
from skimage.restoration import estimate_sigma

__all__ = [
    "central_box",
    "sample_step",
    "combine_statistics",
    "lazy_statistics",
    "finalise_statistics",
    "compute_statistics",
    "volume_statistics",
    "estimate_noise_sigma",
    "affine_fit",
]

_MAX_SAMPLE = 8_000_000


def central_box(shape: tuple[int, ...], edge: int) -> tuple[slice, ...]:
    """Slices of the central box of at most ``edge`` voxels per axis of a grid of ``shape``."""
    return tuple(slice(max(0, (n - edge) // 2), max(0, (n - edge) // 2) + min(n, edge))
                 for n in shape)  # fmt: skip


def sample_step(shape: tuple[int, ...]) -> int:
    """Stride along each axis of the regular sub-sample (at most ~8 M voxels) of ``shape``."""
    n = int(np.prod(shape))
    return max(1, int(np.ceil((n / _MAX_SAMPLE) ** (1 / 3))))


#: Values summed in float32 before the partial sums are added in float64 (relative error of
#: the float32 row sums ~1e-8 on noisy data, at a quarter of the cost of a float64 copy).
_ROW = 4096


def _sums(b: np.ndarray) -> tuple[float, float]:
    """Sum and sum of squares of a 1-D float32 array, accumulated in float64."""
    n = b.size // _ROW * _ROW
    head, tail = b[:n].reshape(-1, _ROW), b[n:].astype(np.float64)
    total = float(head.sum(axis=1).astype(np.float64).sum()) + float(tail.sum())
    sq = float(np.einsum("ij,ij->i", head, head).astype(np.float64).sum()) + float(tail @ tail)
    return total, sq


def _moments(block: np.ndarray) -> np.ndarray:
    """(count, sum, sum of squares, min, max, non-finite count) of one block, float64 sums.

    One fused pass per block instead of separate Dask array operations with float64 copies
    (about 1.7 ms instead of 13 ms for a 128³ float32 block).
    """
    b = np.ascontiguousarray(block).ravel()
    if b.dtype != np.float32:
        b = b.astype(np.float32)
    finite = np.isfinite(b)
    n_bad = int(b.size - np.count_nonzero(finite))
    if n_bad:
        b = b[finite]
    if b.size == 0:
        return np.array([[[0.0, 0.0, 0.0, np.inf, -np.inf, float(n_bad)]]])
    total, sq = _sums(b)
    row = [float(b.size), total, sq, float(b.min()), float(b.max()), float(n_bad)]
    return np.array([[row]])


def lazy_statistics(arr: da.Array, step: int | None = None, offset: int = 0) -> dict[str, Any]:
    """Build lazy reductions for mean, std, min, max, non-finite count and percentiles.

    The percentiles (0.1 and 99.9) are computed on a regular sub-sample (every k-th voxel along
    each axis, at most about 8 million voxels), so they are approximate on large volumes.
    ``step`` and ``offset`` (along z) give a slab of a larger volume the volume's sample grid
    (see :func:`combine_statistics`).
    """
    moments = da.map_blocks(
        _moments,
        arr,
        dtype=np.float64,
        chunks=(
            (1,) * len(arr.chunks[0]),
            (1,) * len(arr.chunks[1]),
            (6,) * len(arr.chunks[2]),
        ),
    )
    k = sample_step(tuple(arr.shape)) if step is None else int(step)
    sample = arr[offset::k, ::k, ::k].ravel().astype(np.float64)
    return {"moments": moments, "sample": sample}


def combine_statistics(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Merge computed :func:`lazy_statistics` values of disjoint slabs of one volume."""
    if not parts:
        raise ValueError("no statistics to combine, got an empty list")
    return {
        "moments": np.concatenate([np.asarray(p["moments"]).reshape(-1, 6) for p in parts]),
        "sample": np.concatenate([np.asarray(p["sample"]) for p in parts]),
    }


def finalise_statistics(values: dict[str, Any]) -> dict[str, float | int]:
    """Turn computed :func:`lazy_statistics` values into the stored statistics."""
    m = np.asarray(values["moments"]).reshape(-1, 6)
    count = int(m[:, 0].sum())
    n_bad = int(m[:, 5].sum())
    mean = float(m[:, 1].sum()) / count if count else float("nan")
    var = float(m[:, 2].sum()) / count - mean * mean if count else float("nan")
    sample = np.asarray(values["sample"])
    sample = sample[np.isfinite(sample)]
    p_lo, p_hi = np.percentile(sample, [0.1, 99.9]) if sample.size else (np.nan, np.nan)
    return {
        "mean": mean,
        "std": float(np.sqrt(max(var, 0.0))),
        "min": float(m[:, 3].min()),
        "max": float(m[:, 4].max()),
        "p0.1": float(p_lo),
        "p99.9": float(p_hi),
        "n_nonfinite": n_bad,
        "n_voxels": count + n_bad,
    }


def volume_statistics(vol: Any) -> dict[str, Any]:
    """A volume's stored statistics (our OME-Zarr attributes), else computed in one Dask pass."""
    stored = vol.attrs.get("statistics")
    if stored:
        return dict(stored)
    logging.getLogger(__name__).info("%s: no stored statistics; computing them", vol.path)
    return dict(compute_statistics(vol.data))


def compute_statistics(arr: da.Array) -> dict[str, float | int]:
    """Compute :func:`lazy_statistics` of a (z, y, x) array in one pass and finalise them."""
    lazy = lazy_statistics(arr)
    keys = list(lazy)
    vals = dask.compute(*[lazy[k] for k in keys])
    return finalise_statistics(dict(zip(keys, vals, strict=True)))


def _block_sigma(block: np.ndarray) -> np.ndarray:

    b = np.asarray(block, np.float64)
    if min(b.shape) < 4 or not np.isfinite(b).all():
        return np.full((1, 1, 1), np.nan)
    return np.full((1, 1, 1), float(estimate_sigma(b, channel_axis=None)))


def estimate_noise_sigma(arr: da.Array, max_blocks: int = 64) -> float:
    """Noise σ of a (z, y, x) volume, in its units: the median of per-chunk wavelet estimates.

    Each chunk's σ is Donoho's robust estimate (median absolute finest-scale wavelet detail
    coefficient / 0.6745, :func:`skimage.restoration.estimate_sigma`); the median over chunks
    ignores chunks that are mostly structure. At most ``max_blocks`` chunks, spread evenly
    through the volume, are read. The estimate assumes white noise; the noise of a
    reconstructed tomogram is coloured, so treat it as a starting point.

    Raises
    ------
    ValueError
        If no chunk gives a finite estimate (e.g. all chunks thinner than 4 voxels).

    """
    if arr.ndim != 3:
        raise ValueError(f"expected a (z, y, x) array, got shape {arr.shape}")
    sig = da.map_blocks(_block_sigma, arr, chunks=(1, 1, 1), dtype=np.float64)
    flat = sig.ravel()
    n = int(flat.shape[0])
    if n > max_blocks:
        flat = flat[np.linspace(0, n - 1, max_blocks).round().astype(int)]
    vals = np.asarray(flat.compute())
    vals = vals[np.isfinite(vals)]
    if not vals.size:
        raise ValueError(f"no chunk of the {arr.shape} volume gives a noise estimate")
    return float(np.median(vals))


def affine_fit(x: da.Array, y: da.Array) -> tuple[float, float]:
    """Least-squares ``scale`` and ``offset`` of ``y ≈ scale * x + offset``, one Dask pass.

    Parameters
    ----------
    x, y
        (z, y, x) arrays of one shape, finite.

    Returns
    -------
    scale, offset
        ``cov(x, y) / var(x)`` and ``mean(y) - scale * mean(x)``, in ``y``'s units.

    Raises
    ------
    ValueError
        Different shapes, or ``x`` constant.

    """
    if tuple(x.shape) != tuple(y.shape):
        raise ValueError(f"arrays must have one shape, got {x.shape} and {y.shape}")
    a = x.astype(np.float64)
    b = y.rechunk(x.chunks).astype(np.float64)
    n = float(np.prod(x.shape))
    sa, sb, saa, sab = dask.compute(a.sum(), b.sum(), (a * a).sum(), (a * b).sum())
    ma, mb = float(sa) / n, float(sb) / n
    var = float(saa) / n - ma * ma
    if not var > 0:
        raise ValueError(f"cannot fit a constant volume, got variance {var}")
    scale = (float(sab) / n - ma * mb) / var
    return scale, mb - scale * ma
