"""How close generated noise is to the real noise cubes (NMSG's noise-model check).

Power spectra in radial bands, per-axis autocorrelation, and a diagnostic figure.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from scipy.stats import wasserstein_distance

__all__ = [
    "power_spectrum",
    "radial_bands",
    "noise_diagnostics",
    "plot_noise_diagnostics",
]


def power_spectrum(cubes: np.ndarray) -> np.ndarray:
    """Mean periodogram ``|rfftn(cube - mean)|² / voxels`` of (N, c, c, c) cubes, (c, c, c//2+1)."""
    x = np.asarray(cubes, np.float64)
    x = x - x.mean(axis=(1, 2, 3), keepdims=True)
    f = np.fft.rfftn(x, axes=(1, 2, 3))
    return np.mean(np.abs(f) ** 2, axis=0) / float(np.prod(x.shape[1:]))


def radial_bands(spectrum: np.ndarray, edge: int) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged power of an rfftn spectrum of a cube of ``edge``, DC left out.

    Returns
    -------
    k, power
        Band centres (cycles/voxel, bands of width ``1/edge`` up to 0.5) and mean power.

    """
    fz = np.fft.fftfreq(edge)[:, None, None]
    fy = np.fft.fftfreq(edge)[None, :, None]
    fx = np.fft.rfftfreq(edge)[None, None, :]
    r = np.sqrt(fz**2 + fy**2 + fx**2)
    band = np.round(r * edge).astype(int)
    nb = edge // 2
    k = np.arange(1, nb + 1) / edge
    power = np.array([spectrum[band == b].mean() for b in range(1, nb + 1)])
    return k, power


def _autocorr(cubes: np.ndarray, lags: int = 3) -> dict[str, list[float]]:
    x = np.asarray(cubes, np.float64)
    x = x - x.mean(axis=(1, 2, 3), keepdims=True)
    v = float(np.mean(x * x))
    out: dict[str, list[float]] = {}
    for ax, name in ((1, "z"), (2, "y"), (3, "x")):
        vals = []
        for lag in range(1, lags + 1):
            a = np.take(x, range(0, x.shape[ax] - lag), axis=ax)
            b = np.take(x, range(lag, x.shape[ax]), axis=ax)
            vals.append(float(np.mean(a * b)) / v if v > 0 else 0.0)
        out[name] = vals
    return out


def noise_diagnostics(real: np.ndarray, generated: np.ndarray, power_share: float = 0.9) -> dict:
    """Compare real and generated (N, c, c, c) noise cubes.

    Returns
    -------
    dict
        ``k`` and ``power_real``/``power_generated`` per radial band; ``band_error`` (relative
        error per band); ``k_power`` (the highest band of the lowest bands that hold
        ``power_share`` of the real power) and ``max_band_error`` over those bands;
        ``std_real``/``std_generated``; ``wasserstein`` between the voxel histograms (in units
        of the real std); ``autocorr_real``/``autocorr_generated`` at lags 1-3 per axis.

    """
    edge = real.shape[1]
    k, pr = radial_bands(power_spectrum(real), edge)
    _, pg = radial_bands(power_spectrum(generated), edge)
    err = np.abs(pg - pr) / pr
    share = np.cumsum(pr) / np.sum(pr)
    top = int(np.searchsorted(share, power_share)) + 1
    sr = float(np.std(real))
    rng = np.random.default_rng(0)
    a = rng.choice(real.ravel(), min(real.size, 200_000), replace=False)
    b = rng.choice(generated.ravel(), min(generated.size, 200_000), replace=False)
    return {
        "cubes_real": int(len(real)),
        "cubes_generated": int(len(generated)),
        "k": k.tolist(),
        "power_real": pr.tolist(),
        "power_generated": pg.tolist(),
        "band_error": err.tolist(),
        "k_power": float(k[top - 1]),
        "max_band_error": float(err[:top].max()),
        "std_real": sr,
        "std_generated": float(np.std(generated)),
        "wasserstein": float(wasserstein_distance(a, b)) / (sr or 1.0),
        "autocorr_real": _autocorr(real),
        "autocorr_generated": _autocorr(generated),
    }


def plot_noise_diagnostics(real: np.ndarray, generated: np.ndarray, diag: dict, path: Path) -> None:
    """Spectra, histograms and central slices of real and generated noise cubes, as a PNG."""
    matplotlib.use("Agg")

    fig, ax = plt.subplots(1, 4, figsize=(16, 3.8))
    ax[0].semilogy(diag["k"], diag["power_real"], "k-", label="real (held back)")
    ax[0].semilogy(diag["k"], diag["power_generated"], "r--", label="generated")
    ax[0].axvline(diag["k_power"], color="0.6", lw=0.8)
    ax[0].set_xlabel("spatial frequency (cycles/voxel)")
    ax[0].set_title(f"power spectrum (max err {diag['max_band_error']:.1%})")
    ax[0].legend()
    lim = 4 * diag["std_real"]
    bins = np.linspace(-lim, lim, 81)
    ax[1].hist(real.ravel(), bins, density=True, histtype="step", color="k", label="real")
    ax[1].hist(generated.ravel(), bins, density=True, histtype="step", color="r", label="gen.")
    ax[1].set_title(f"histogram (W1 {diag['wasserstein']:.3f} σ)")
    c = real.shape[1] // 2
    for a, cubes, title in ((ax[2], real, "real"), (ax[3], generated, "generated")):
        a.imshow(np.concatenate([cubes[i, c] for i in range(min(4, len(cubes)))], 1), cmap="gray")
        a.set_title(f"{title}: central z slices")
        a.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
