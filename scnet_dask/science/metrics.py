"""Quality metrics: PSNR and SSIM against a reference, FSC and FSC_e/o with resolutions in Å.

PSNR and SSIM are computed after a least-squares fit ``a * output + b`` of the output to the
reference: denoisers (and phase contrast) may rescale, offset or even flip the sign of the
contrast, which says nothing about how much noise was removed. Both work on dask arrays of any
size (the fit and the PSNR are Dask reductions; SSIM is a per-chunk local map with overlap).
FSC needs Fourier transforms, so it runs on a sub-volume that fits in memory (``region``), like
the paper's 512 x 512 x 100 crops.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dask.array as da
import numpy as np
from skimage.metrics import structural_similarity

__all__ = [
    "fit_scale_offset",
    "psnr",
    "ssim",
    "fsc",
    "soft_box_mask",
    "fsc_eo",
    "resolution_angstrom",
]


def _lazy(x: Any) -> da.Array:
    return (
        x.astype(np.float64)
        if isinstance(x, da.Array)
        else da.from_array(np.asarray(x, dtype=np.float64), chunks=64)
    )


def _check_pair(output: Any, reference: Any) -> None:
    if tuple(output.shape) != tuple(reference.shape) or len(output.shape) != 3:
        raise ValueError(
            f"output and reference must be (z, y, x) volumes of one shape, got "
            f"{tuple(output.shape)} and {tuple(reference.shape)}"
        )


def _fit(output: Any, reference: Any) -> tuple[float, float, float, float, float]:
    """One streamed pass: the fit ``a, b``, its mean squared residual, and the reference's range.

    Returns
    -------
    a, b, mse, lo, hi

    """
    _check_pair(output, reference)
    x, y = _lazy(output), _lazy(reference)
    n = float(np.prod(x.shape))
    sx, sy, sxx, sxy, syy, lo, hi = da.compute(
        x.sum(), y.sum(), (x * x).sum(), (x * y).sum(), (y * y).sum(), y.min(), y.max()
    )
    vxx, vxy, vyy = sxx - sx * sx / n, sxy - sx * sy / n, syy - sy * sy / n
    a = 0.0 if vxx <= 0 else vxy / vxx
    rss = vyy - a * vxy  # residual of the least-squares line
    # below 1e-12 of the variance the one-pass sums cannot tell the residual from zero
    mse = 0.0 if rss <= 1e-12 * vyy else rss / n
    return float(a), float((sy - a * sx) / n), float(mse), float(lo), float(hi)


def fit_scale_offset(output: Any, reference: Any) -> tuple[float, float]:
    """Least-squares ``a, b`` minimising ``sum((a * output + b - reference)^2)`` (streamed).

    Parameters
    ----------
    output, reference
        (z, y, x) numpy or dask arrays of one shape.

    """
    a, b, *_ = _fit(output, reference)
    return a, b


def psnr(output: Any, reference: Any, data_range: float | None = None) -> float:
    """PSNR (dB) of ``output`` against ``reference`` after the scale-and-offset fit.

    ``data_range`` defaults to ``reference.max() - reference.min()``. One pass over the data.
    """
    _, _, mse, lo, hi = _fit(output, reference)
    rng = float(hi - lo) if data_range is None else float(data_range)
    if mse <= 0:
        return float("inf")
    return float(10.0 * np.log10(rng * rng / mse))


def _ssim_block(x: np.ndarray, y: np.ndarray, data_range: float, win: int) -> np.ndarray:
    _, smap = structural_similarity(
        x, y, data_range=data_range, win_size=win, full=True, gaussian_weights=False
    )
    return np.asarray(smap, dtype=np.float64)


def ssim(output: Any, reference: Any, win_size: int = 7, data_range: float | None = None) -> float:
    """Mean 3-D SSIM (scikit-image's, uniform ``win_size`` window) after the scale-and-offset fit.

    Computed chunk by chunk with a halo of ``win_size // 2`` so that the local SSIM map equals
    the in-memory one; like scikit-image, the mean leaves out a border of ``win_size // 2``.
    """
    if win_size < 3 or win_size % 2 == 0:
        raise ValueError(f"win_size must be an odd number >= 3, got {win_size}")
    a, b, _, lo, hi = _fit(output, reference)
    x, y = _lazy(output) * a + b, _lazy(reference)
    if data_range is None:
        data_range = hi - lo
    h = win_size // 2
    if min(x.shape) <= 2 * h:
        raise ValueError(f"volume {x.shape} is too small for a {win_size}-voxel SSIM window")
    smap = da.map_overlap(
        _ssim_block,
        x,
        y.rechunk(x.chunks),
        depth=h,
        boundary="reflect",
        trim=True,
        dtype=np.float64,
        data_range=float(data_range),
        win=win_size,
    )
    inner = smap[h:-h, h:-h, h:-h]
    return float(inner.mean().compute())


def _crop(x: Any, region: Sequence[slice] | None) -> np.ndarray:
    sub = x[tuple(region)] if region is not None else x
    return np.asarray(sub.compute() if isinstance(sub, da.Array) else sub, dtype=np.float64)


def soft_box_mask(shape: Sequence[int], edge: int = 6) -> np.ndarray:
    """A box mask of ``shape`` (z, y, x) whose faces fall from 1 to 0 as a raised cosine.

    Each axis is weighted by ``0.5 - 0.5 cos(π t)`` over its first and last ``edge`` voxels
    (``t`` from 0 to 1), 1 between, and the three are multiplied; ``edge`` is clipped to a
    third of the axis. Multiplying both volumes by it before an FSC removes the sharp box
    edges, whose shared discontinuity otherwise adds correlation at every frequency.
    """
    if edge < 0:
        raise ValueError(f"edge must be >= 0 voxels, got {edge}")
    axes = []
    for n in shape:
        w = np.ones(int(n), dtype=np.float64)
        e = min(int(edge), int(n) // 3)
        if e > 0:
            ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(e) + 0.5) / e)
            w[:e], w[n - e :] = ramp, ramp[::-1]
        axes.append(w)
    return axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]


def fsc(
    a: Any,
    b: Any,
    voxel_size_angstrom: float | Sequence[float],
    region: Sequence[slice] | None = None,
    shell_width: int = 1,
    mask_edge: int = 6,
) -> tuple[np.ndarray, np.ndarray]:
    """Fourier shell correlation between two (z, y, x) volumes.

    Parameters
    ----------
    a, b
        Volumes (numpy or dask) of one shape, e.g. even/odd reconstructions or denoised halves.
    voxel_size_angstrom
        Voxel size in Å (one value or (z, y, x)); shells are spheres in physical frequency.
    region
        (z, y, x) slices of a sub-volume to use (it must fit in memory).
    shell_width
        Shell width in units of the coarsest frequency step ``1 / min(n_i * d_i)``, so that
        every shell holds Fourier samples along every axis: on a thin box (a tomogram's
        80 x 256² of 10 Å voxels) shells of the finest step would put only a handful of
        in-plane samples in the lowest shells and make the curve cross by chance there.
    mask_edge
        Width in voxels of the soft edge (:func:`soft_box_mask`) both volumes are multiplied
        by after removing their means; 0 = the hard box, whose edges add high-frequency
        correlation.

    Returns
    -------
    frequency, curve
        Shell centres in 1/Å (up to the Nyquist frequency of the coarsest axis) and the FSC.

    """
    _check_pair(a, b)
    x, y = _crop(a, region), _crop(b, region)
    vs = np.broadcast_to(np.asarray(voxel_size_angstrom, dtype=np.float64), (3,))
    if np.any(vs <= 0):
        raise ValueError(f"voxel_size_angstrom must be > 0, got {voxel_size_angstrom}")
    w = soft_box_mask(x.shape, mask_edge)
    fx, fy = np.fft.rfftn((x - x.mean()) * w), np.fft.rfftn((y - y.mean()) * w)
    freqs = [np.fft.fftfreq(n, d) for n, d in zip(x.shape[:2], vs[:2], strict=True)]
    freqs.append(np.fft.rfftfreq(x.shape[2], vs[2]))
    kz, ky, kx = np.meshgrid(*freqs, indexing="ij")
    k = np.sqrt(kz**2 + ky**2 + kx**2)
    step = shell_width / min(n * d for n, d in zip(x.shape, vs, strict=True))
    nyquist = 0.5 / float(vs.max())
    edges = np.arange(0.0, nyquist + step, step)
    idx = np.digitize(k.ravel(), edges) - 1
    nbins = len(edges) - 1
    keep = (idx >= 0) & (idx < nbins) & (k.ravel() > 0)  # the mean (DC) is not a shell
    i = idx[keep]
    cross = np.bincount(i, (fx * np.conj(fy)).real.ravel()[keep], nbins)
    pa = np.bincount(i, (np.abs(fx) ** 2).ravel()[keep], nbins)
    pb = np.bincount(i, (np.abs(fy) ** 2).ravel()[keep], nbins)
    with np.errstate(invalid="ignore", divide="ignore"):
        curve = cross / np.sqrt(pa * pb)
    centres = 0.5 * (edges[:-1] + edges[1:])
    ok = np.isfinite(curve)
    return centres[ok], curve[ok]


def fsc_eo(curve: np.ndarray) -> np.ndarray:
    """The FSC of the full data from the FSC of its even/odd halves: ``2 F / (1 + F)``."""
    c = np.asarray(curve, dtype=np.float64)
    return 2.0 * c / (1.0 + c)


def resolution_angstrom(
    frequency: np.ndarray, curve: np.ndarray, threshold: float = 0.143
) -> float:
    """Resolution (Å) where ``curve`` first falls below ``threshold``, linearly interpolated.

    Returns the Nyquist-limited resolution ``1 / frequency[-1]`` when it never falls below, and
    ``inf`` when it starts below.
    """
    f, c = np.asarray(frequency, np.float64), np.asarray(curve, np.float64)
    below = np.nonzero(c < threshold)[0]
    if below.size == 0:
        return float(1.0 / f[-1])
    j = int(below[0])
    if j == 0:
        return float("inf")
    f0, f1, c0, c1 = f[j - 1], f[j], c[j - 1], c[j]
    fc = f0 + (threshold - c0) * (f1 - f0) / (c1 - c0)
    return float(1.0 / fc)
