"""The half-split score's second noise level and its extrapolation (science.halfsplit)."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from scipy import ndimage

from scnet_dask.science.halfsplit import full_level_mse, half_moments, noisier_half


def _halves(shape=(24, 64, 40), sigma=0.7, seed=0):
    rng = np.random.default_rng(seed)
    s = ndimage.gaussian_filter(rng.standard_normal(shape), 2.0)
    s /= s.std()
    # correlated noise (a short blur, as after a reconstruction), independent per half
    n_e, n_o = (ndimage.gaussian_filter(rng.standard_normal(shape), 0.7) for _ in range(2))
    k = sigma / n_e.std()
    return s, s + k * n_e, s + k * n_o, k * n_e, k * n_o


def test_noisier_half_adds_a_halfs_noise_independent_of_both_halves():
    s, e, o, n_e, n_o = _halves()
    z, axis = noisier_half(da.from_array(e, chunks=16), da.from_array(o, chunks=16))
    assert axis == 1  # the longer in-plane axis (y: 64 > x: 40)
    added = np.asarray(z.compute(), dtype=np.float64) - e
    v = np.var(e - o) / 2  # a half's noise variance
    assert added.var() == pytest.approx(v, rel=0.02)
    # independent of the noise at each voxel of either half (and of the signal)
    for other in (n_e, n_o, s):
        assert abs(np.corrcoef(added.ravel(), other.ravel())[0, 1]) < 0.02
    # with the halves' noise spectrum: the same lag-1 correlation along every axis
    for ax in range(3):
        lag = [np.corrcoef(np.moveaxis(x, ax, 0)[1:].ravel(), np.moveaxis(x, ax, 0)[:-1].ravel())[
            0, 1] for x in (added, n_e)]  # fmt: skip
        assert lag[0] == pytest.approx(lag[1], abs=0.03)


def test_noisier_half_refuses_halves_of_other_shapes():
    with pytest.raises(ValueError, match=r"got \(4, 8, 8\) and \(4, 8, 9\)"):
        noisier_half(da.zeros((4, 8, 8)), da.zeros((4, 8, 9)))


def test_extrapolated_moments_give_the_full_volumes_error_of_a_linear_filter():
    s, e, o, _, _ = _halves(shape=(48, 96, 96), sigma=1.0, seed=3)
    z, _ = noisier_half(da.from_array(e, chunks=48), da.from_array(o, chunks=48))
    z = np.asarray(z.compute())
    v = np.var(e - o) / 2
    f = lambda x: ndimage.gaussian_filter(x, 1.0)  # noqa: E731
    lazy = lambda x: da.from_array(x, chunks=48)  # noqa: E731
    m_e, m_o = half_moments(lazy(f(e)), lazy(o)), half_moments(lazy(f(o)), lazy(e))
    mean = {k: (m_e[k] + m_o[k]) / 2 for k in m_e}
    fitted, raw = full_level_mse(mean, m_e, half_moments(lazy(f(z)), lazy(o)), v)
    full = f((e + o) / 2).ravel()
    ref = s.ravel()
    true_raw = np.mean((full - ref) ** 2)
    true_fit = ref.var() - np.cov(full, ref, bias=True)[0, 1] ** 2 / full.var()
    half_fit = mean["fitted"] - v  # at a half's level: clearly above the full volume's
    assert half_fit > 1.3 * true_fit
    assert raw == pytest.approx(true_raw, rel=0.05)
    assert fitted == pytest.approx(true_fit, rel=0.05)


def test_half_moments_refuse_other_shapes():
    with pytest.raises(ValueError, match="one shape"):
        half_moments(da.zeros((2, 3, 4)), da.zeros((2, 3, 5)))
