"""Weighted back-projection (WBP) of single-axis tilt series, slab by slab.

Geometry: tilt images are (n_tilts, Y, X) with the tilt axis along image X (``tilt_axis="x"``)
or Y; every slice perpendicular to the tilt axis is an independent 2-D parallel-beam problem.
The tomogram is (Z, Y, X) with Z the beam direction at zero tilt. A voxel at centred
coordinates (z, y) projects onto detector coordinate ``t = y cos θ + s z sin θ``, s = ±1
(``angle_sign``; -1, the default, is the convention of IMOD-style tilt series and of the
project's TEM-Simulator data).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import dask.array as da
import numpy as np
from scipy.sparse import csr_matrix

from scnet_dask.errors import InputError

__all__ = ["ramp_filter", "wbp_slab", "wbp", "read_tilt_angles", "project_slab", "project"]


def read_tilt_angles(path: str) -> np.ndarray:
    """Read an IMOD ``.tlt``/``.rawtlt`` file: one tilt angle in degrees per line."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such tilt-angle file")
    try:
        angles = np.array([float(v) for v in p.read_text().split()], dtype=np.float64)
    except ValueError as e:
        raise InputError(f"{p}: tilt angles must be numbers, one per line ({e})") from e
    if angles.size == 0:
        raise InputError(f"{p}: no tilt angles")
    return angles


def ramp_filter(proj: np.ndarray, axis: int = 1) -> np.ndarray:
    """Ram-Lak filter projections along the detector ``axis`` (zero-padded to 2x)."""
    n = proj.shape[axis]
    size = int(2 ** np.ceil(np.log2(2 * n)))
    freq = np.abs(np.fft.rfftfreq(size)).astype(np.float32)
    f = np.fft.rfft(proj, n=size, axis=axis)
    shape = [1] * proj.ndim
    shape[axis] = freq.size
    out = np.fft.irfft(f * freq.reshape(shape), n=size, axis=axis)
    return np.take(out, np.arange(n), axis=axis).astype(np.float32)


def wbp_slab(
    tilts: np.ndarray,
    angles_deg: np.ndarray,
    nz: int,
    angle_sign: int = -1,
    z_offset: float = 0.0,
    width: int | None = None,
    offset: float = 0.0,
) -> np.ndarray:
    """Reconstruct a slab of a tomogram from the matching slab of a tilt series.

    Parameters
    ----------
    tilts
        (n_tilts, Y, W): projections with the detector coordinate along Y and W independent
        slices along the tilt axis.
    angles_deg
        (n_tilts,) tilt angles in degrees.
    nz
        Thickness of the reconstruction in voxels.
    z_offset
        Shift of the reconstructed slab along z, in voxels.
    width, offset
        A sub-area (IMOD's WIDTH): ``width`` voxels along Y (default: the detector's ``Y``)
        whose centre lies ``offset`` detector pixels from the detector's centre.

    Returns
    -------
    np.ndarray
        (nz, width, W) float32.

    """
    n, ny, w = tilts.shape
    width = ny if width is None else int(width)
    if angles_deg.shape != (n,):
        raise ValueError(f"expected {n} tilt angles, got {angles_deg.shape[0]}")
    # remove each projection row's mean: the ramp filter removes the DC term anyway, and a
    # large offset on a truncated detector row otherwise leaves strong streaks
    p = tilts.astype(np.float32)
    q = ramp_filter(p - p.mean(axis=1, keepdims=True), axis=1)
    zc = np.arange(nz, dtype=np.float32) - (nz - 1) / 2 + z_offset
    yc = np.arange(width, dtype=np.float32) - (width - 1) / 2 + offset
    out = np.zeros((nz, width, w), dtype=np.float32)
    for i, a in enumerate(np.deg2rad(angles_deg)):
        t = yc[None, :] * np.cos(a) + angle_sign * zc[:, None] * np.sin(a) + (ny - 1) / 2
        t0 = np.floor(t).astype(np.int64)
        frac = (t - t0).astype(np.float32)[..., None]
        valid = ((t0 >= 0) & (t0 + 1 < ny))[..., None]
        t0c = np.clip(t0, 0, ny - 2)
        row = q[i]
        out += valid * ((1 - frac) * row[t0c] + frac * row[t0c + 1])
    return out * np.float32(np.pi / (2 * n))


def wbp(
    tilt_series: da.Array,
    angles_deg: np.ndarray,
    nz: int,
    tilt_axis: Literal["x", "y"] = "x",
    angle_sign: int = -1,
    z_offset: float = 0.0,
    slab: int = 64,
    width: int | None = None,
    offset: float = 0.0,
) -> da.Array:
    """Lazy WBP of a (n_tilts, Y, X) tilt series into a (nz, Y, X) tomogram, slab by slab.

    Each task reconstructs ``slab`` slices along the tilt axis from the matching columns of
    the tilt series, so memory is bounded by ``n_tilts x Y x slab`` whatever the size.
    ``width`` and ``offset`` reconstruct a sub-area perpendicular to the tilt axis (see
    :func:`wbp_slab`); the output then has ``width`` voxels along that axis.
    """
    if tilt_axis == "y":
        tilt_series = tilt_series.transpose(0, 2, 1)
    ts = tilt_series.astype(np.float32).rechunk((-1, -1, slab))
    out_width = int(ts.shape[1]) if width is None else int(width)
    rec = ts.map_blocks(
        wbp_slab,
        np.asarray(angles_deg, dtype=np.float64),
        nz,
        angle_sign,
        z_offset,
        out_width,
        offset,
        chunks=(nz, out_width, ts.chunks[2]),
        dtype=np.float32,
        meta=np.empty((0, 0, 0), np.float32),
    )
    return rec.transpose(0, 2, 1) if tilt_axis == "y" else rec


def _projection_matrix(angle_rad: float, nz: int, ny: int, angle_sign: int, z_offset: float) -> Any:
    """Sparse (ny, nz * ny) matrix: linear-interpolation splatting of a (z, y) slice onto t."""
    zc = np.arange(nz, dtype=np.float64) - (nz - 1) / 2 + z_offset
    yc = np.arange(ny, dtype=np.float64) - (ny - 1) / 2
    t = yc[None, :] * np.cos(angle_rad) + angle_sign * zc[:, None] * np.sin(angle_rad)
    t = (t + (ny - 1) / 2).ravel()
    t0 = np.floor(t).astype(np.int64)
    frac = t - t0
    col = np.arange(nz * ny)
    rows = np.concatenate([t0, t0 + 1])
    vals = np.concatenate([1 - frac, frac])
    cols = np.concatenate([col, col])
    ok = (rows >= 0) & (rows < ny)
    return csr_matrix((vals[ok], (rows[ok], cols[ok])), shape=(ny, nz * ny))


def project_slab(
    vol: np.ndarray, angles_deg: np.ndarray, angle_sign: int = -1, z_offset: float = 0.0
) -> np.ndarray:
    """Parallel-beam projections of a (nz, Y, W) slab: the forward model that WBP inverts.

    Returns
    -------
    np.ndarray
        (n_tilts, Y, W) float32; ray sums in voxel units, same geometry as :func:`wbp_slab`.

    """
    nz, ny, w = vol.shape
    flat = np.asarray(vol, dtype=np.float64).reshape(nz * ny, w)
    out = np.empty((len(angles_deg), ny, w), dtype=np.float32)
    for i, a in enumerate(np.deg2rad(np.asarray(angles_deg, dtype=np.float64))):
        out[i] = _projection_matrix(float(a), nz, ny, angle_sign, z_offset) @ flat
    return out


def project(
    volume: da.Array,
    angles_deg: np.ndarray,
    tilt_axis: Literal["x", "y"] = "x",
    angle_sign: int = -1,
    slab: int = 64,
) -> da.Array:
    """Lazy tilt series (n_tilts, Y, X) of a (Z, Y, X) volume, slab by slab along the tilt axis."""
    if tilt_axis == "y":
        volume = volume.transpose(0, 2, 1)
    v = volume.astype(np.float32).rechunk((-1, -1, slab))
    ang = np.asarray(angles_deg, dtype=np.float64)
    ts = v.map_blocks(
        project_slab,
        ang,
        angle_sign,
        chunks=(len(ang), v.shape[1], v.chunks[2]),
        dtype=np.float32,
        meta=np.empty((0, 0, 0), np.float32),
    )
    return ts.transpose(0, 2, 1) if tilt_axis == "y" else ts
