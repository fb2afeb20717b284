from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from scnet_dask.science.metrics import (
    fit_scale_offset,
    fsc,
    fsc_eo,
    psnr,
    resolution_angstrom,
    soft_box_mask,
    ssim,
)


def _pair(seed=0, shape=(24, 40, 36), noise=0.3):
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[0 : shape[0], 0 : shape[1], 0 : shape[2]].astype(np.float64)
    ref = np.sin(x / 4) * np.cos(y / 5) + 0.5 * np.sin(z / 3)
    return ref + noise * rng.standard_normal(shape), ref


def test_fit_recovers_scale_offset_and_sign():
    out, ref = _pair()
    a, b = fit_scale_offset(-3.0 * ref + 7.0, ref)
    assert a == pytest.approx(-1 / 3) and b == pytest.approx(7 / 3)
    # a flipped, rescaled copy scores as well as the original
    assert psnr(-2.0 * out + 5.0, ref) == pytest.approx(psnr(out, ref), abs=1e-9)


def test_psnr_and_ssim_match_scikit_image_on_fitted_output():
    out, ref = _pair(1)
    a, b = fit_scale_offset(out, ref)
    fitted = a * out + b
    rng = ref.max() - ref.min()
    want_psnr = peak_signal_noise_ratio(ref, fitted, data_range=rng)
    lazy = da.from_array(out, chunks=(7, 11, 13))  # awkward chunks
    assert psnr(lazy, ref) == pytest.approx(want_psnr, rel=1e-9)
    want_ssim = structural_similarity(fitted, ref, data_range=rng, win_size=7)
    assert ssim(lazy, da.from_array(ref, chunks=16)) == pytest.approx(want_ssim, rel=1e-6)
    assert ssim(ref, ref) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="one shape"):
        psnr(out[:-1], ref)


def test_fsc_identical_and_independent():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((32, 32, 32))
    f, c = fsc(a, a, 10.0)
    np.testing.assert_allclose(c, 1.0, atol=1e-12)
    assert f[-1] == pytest.approx(0.05, abs=0.01)  # up to Nyquist = 1 / (2 * 10 Å)
    b = rng.standard_normal((32, 32, 32))
    _, c = fsc(a, b, 10.0)
    # the soft mask couples neighbouring Fourier samples: fewer independent ones per shell
    assert np.abs(c[3:]).max() < 0.2 and abs(c[3:].mean()) < 0.05
    assert resolution_angstrom(*fsc(a, b, 10.0), 0.5) > 100.0  # no shared signal: no resolution


def test_fsc_band_limited_signal_crosses_at_the_cut_off():
    """Shared signal below 1/40 Å⁻¹, independent noise everywhere: the crossing is at 40 Å."""
    rng = np.random.default_rng(3)
    n, vox, cut = 64, 5.0, 1 / 40.0
    k = np.sqrt(sum(g**2 for g in np.meshgrid(*[np.fft.fftfreq(n, vox)] * 3, indexing="ij")))
    spec = np.fft.fftn(rng.standard_normal((n, n, n))) * (k < cut)
    signal = np.real(np.fft.ifftn(spec))
    signal /= signal.std()
    a = signal + 0.05 * rng.standard_normal(signal.shape)
    b = signal + 0.05 * rng.standard_normal(signal.shape)
    # a periodic signal has no box edges: the hard box is exact here (a soft mask would leak
    # this nearly noise-free signal's power past the cut-off)
    f, c = fsc(a, b, vox, region=(slice(None),) * 3, mask_edge=0)
    res = resolution_angstrom(f, c, 0.5)
    assert res == pytest.approx(40.0, rel=0.06)
    assert resolution_angstrom(f, fsc_eo(c), 0.143) == pytest.approx(40.0, rel=0.06)
    # FSC_e/o: the full-data curve lies above the half-data one
    assert np.all(fsc_eo(c[c > 0]) >= c[c > 0])


def test_resolution_interpolates():
    f = np.array([0.01, 0.02, 0.03, 0.04])
    c = np.array([1.0, 0.8, 0.2, 0.0])
    assert resolution_angstrom(f, c, 0.5) == pytest.approx(1 / 0.025)
    assert resolution_angstrom(f, np.ones(4), 0.5) == pytest.approx(25.0)


def test_fsc_shells_on_a_thin_box_follow_the_coarsest_axis():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((16, 64, 64))
    freq, curve = fsc(a, a + 0.1 * rng.standard_normal(a.shape), 10.0)
    # shells one z-step (1 / 160 Å) wide up to Nyquist (1 / 20 Å): 8 of them, all populated
    assert len(freq) == 8
    np.testing.assert_allclose(np.diff(freq), 1 / 160)
    assert (curve > 0.95).all()


def test_fsc_soft_mask_removes_the_box_edge_correlation() -> None:
    """A shared ramp has a jump at the box faces (periodic FFT): with a hard box it correlates
    two independent noises at every frequency; the soft mask removes it."""
    rng = np.random.default_rng(0)
    z, y, x = np.meshgrid(*[np.arange(32)] * 3, indexing="ij")
    ramp = 0.5 * (x + 0.5 * y + 0.3 * z).astype(np.float64)
    a = ramp + rng.standard_normal(ramp.shape)
    b = ramp + rng.standard_normal(ramp.shape)
    _, hard = fsc(a, b, 10.0, mask_edge=0)
    _, soft = fsc(a, b, 10.0)
    high = slice(len(soft) // 2, None)
    assert hard[high].mean() > 0.5
    assert abs(soft[high].mean()) < 0.05
    m = soft_box_mask((8, 20, 20), 4)
    assert m.shape == (8, 20, 20) and m.max() == 1.0 and m[0].max() < 0.2
