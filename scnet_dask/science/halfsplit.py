"""The half-split error and its extrapolation to the full volume's noise level.

For a denoiser ``f`` that never saw the other half's noise, ``E|f(even) - odd|²`` is
``E|f(even) - s|²`` plus the odd half's noise variance ``v``: the error of ``f`` against the
clean signal ``s`` *at a half's noise level*. The full volume (the halves' mean) has noise of
variance ``v / 2``, and what a user delivers is ``f`` applied to it. Candidates gain unequally
from the lower noise (a light filter's noise term halves, a strong filter's bias stays), so the
score measures each candidate at a second, higher level — the half plus noise of a second half
(:func:`noisier_half`) — and extrapolates linearly in the noise variance
(:func:`full_level_mse`). For a linear filter the error is exactly ``bias² + c·variance``, so
the extrapolation is exact in expectation; for a non-linear one it is a first-order estimate.
"""

from __future__ import annotations

import dask.array as da
import numpy as np

__all__ = ["half_moments", "noisier_half", "full_level_mse"]


def half_moments(f: da.Array, o: da.Array) -> dict[str, float]:
    """The moments of an output ``f`` against the other half ``o`` that the score needs; one pass.

    Parameters
    ----------
    f, o
        (z, y, x) arrays of one shape (``o`` is rechunked to ``f``'s chunks).

    Returns
    -------
    dict
        ``raw``: the mean squared error; ``var_f``, ``var_o``, ``cov``: variances and
        covariance; ``fitted``: ``var(o) - cov(f, o)² / var(f)``, the error after the best
        ``a·f + b`` — what the quality benchmark's PSNR measures (a candidate that rescales
        its output is neither rewarded nor penalised for the scale alone); ``o``'s units².

    """
    if tuple(f.shape) != tuple(o.shape):
        raise ValueError(f"arrays of one shape needed, got {tuple(f.shape)} and {tuple(o.shape)}")
    a = f.astype(np.float64)
    b = o.rechunk(f.chunks).astype(np.float64)
    n = float(np.prod(f.shape))
    sa, sb, saa, sbb, sab = (float(v) / n for v in da.compute(
        a.sum(), b.sum(), (a * a).sum(), (b * b).sum(), (a * b).sum()))  # fmt: skip
    m = {"raw": saa + sbb - 2 * sab, "var_f": saa - sa * sa, "var_o": sbb - sb * sb,
         "cov": sab - sa * sb}  # fmt: skip
    m["fitted"] = _fitted(m["var_o"], m["cov"], m["var_f"])
    return m


def _fitted(var_o: float, cov: float, var_f: float) -> float:
    return max(var_o - cov * cov / var_f if var_f > 0 else var_o, 0.0)


def noisier_half(half: da.Array, other: da.Array) -> tuple[da.Array, int]:
    """``half`` plus noise of a second half, independent of ``other``'s noise at every voxel.

    The halves' difference ``d = (half - other) / 2`` is pure noise of variance ``v / 2`` (for
    frame-split halves; tilt-split halves add their small signal difference), with the real
    noise's spectrum, anisotropy and histogram. Shifted by half the grid along the longer
    in-plane axis (circularly) and scaled by √2, it is noise of variance ``v`` whose value at a
    voxel comes from voxels far away: independent of the noise of ``half`` and ``other`` there,
    for noise correlated over fewer voxels than the shift and a denoiser whose reach is shorter.

    Parameters
    ----------
    half, other
        (z, y, x) lazy arrays of one shape: the half to make noisier, the other half.

    Returns
    -------
    tuple
        The lazy (z, y, x) float32 array of noise variance ``2 v``, and the shift's axis.

    """
    if tuple(half.shape) != tuple(other.shape) or half.ndim != 3:
        raise ValueError(f"two (z, y, x) halves of one shape needed, got {tuple(half.shape)} "
                         f"and {tuple(other.shape)}")  # fmt: skip
    axis = 1 if half.shape[1] >= half.shape[2] else 2
    h = half.astype(np.float32)
    d = (h - other.rechunk(half.chunks).astype(np.float32)) * np.float32(0.5)
    shifted = da.roll(d, int(half.shape[axis]) // 2, axis=axis).rechunk(half.chunks)
    return h + np.float32(np.sqrt(2.0)) * shifted, axis


def full_level_mse(
    half: dict[str, float], same: dict[str, float], noisier: dict[str, float], noise: float
) -> tuple[float, float]:
    """The errors at the full volume's noise (``v / 2``) from moments at ``v`` and ``2 v``.

    Each moment (:func:`half_moments`) is extrapolated linearly in the noise variance,
    ``m(v/2) = m(v) - (m(2v) - m(v)) / 2``, the slope from the direction measured at both
    levels; the fitted error is formed from the extrapolated moments (for a linear filter
    ``var f`` is linear in ``v`` and ``cov(f, o)`` constant, so this is exact in expectation,
    where extrapolating the fitted error itself is not).

    Parameters
    ----------
    half
        Moments at a half's noise level, averaged over the scored directions.
    same, noisier
        Moments of one direction at a half's noise level, and of it at twice that level.
    noise
        The noise variance ``v`` of a half (of ``o``), subtracted from the errors.

    Returns
    -------
    tuple of float
        (fitted, raw) mean squared errors against the clean signal at the full volume's level.

    """
    ext = {k: half[k] - (noisier[k] - same[k]) / 2.0 for k in ("raw", "var_f", "cov")}
    return _fitted(half["var_o"], ext["cov"], ext["var_f"]) - noise, ext["raw"] - noise
