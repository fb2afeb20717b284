"""A physical model of fast-scanned volume EM, to make fast/slow pairs from a slow stack.

Scanning EM (SBEM, FIB-SEM, STEM of serial sections) counts electrons per pixel: a dwell time
``f`` times shorter collects ``f`` times fewer, so shot (Poisson) noise grows by sqrt(f). The
model, per section, from a slow-scan image ``s`` in [0, 1] (8-bit / 255) treated as noise-free:

1. scan blur: a Gaussian of ``blur_px`` pixels along the fast-scan axis x (detector and
   amplifier bandwidth; 0 = none);
2. shot noise: ``counts ~ Poisson(n_slow / speedup * s_blurred)``, rescaled by the mean count
   at full scale, where ``n_slow`` is the electrons detected at full scale at the slow dwell;
3. read noise: Gaussian of ``read_sigma`` (fraction of the full scale);
4. 8-bit quantisation (clipped to [0, 255]).

Deterministic for a seed: each section draws from a generator seeded by (seed, section index), so
a stack made in slabs equals one made whole.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d

__all__ = ["fast_scan"]


def fast_scan(
    slow: np.ndarray,
    speedup: float,
    n_slow: float = 64.0,
    read_sigma: float = 0.02,
    blur_px: float = 0.5,
    seed: int = 0,
    z0: int = 0,
) -> np.ndarray:
    """A fast-scan (noisy) uint8 stack from a slow-scan stack.

    Parameters
    ----------
    slow
        (z, y, x) slow-scan sections, uint8 (or floats in [0, 255]).
    speedup
        How many times shorter the fast dwell is (4, 8, ...; >= 1).
    n_slow
        Electrons detected at full scale (255) at the slow dwell.
    read_sigma
        Read-noise σ as a fraction of the full scale.
    blur_px
        Gaussian σ in pixels along x (the fast-scan axis); 0: no blur.
    seed, z0
        Seed, and the index of ``slow[0]`` in the whole stack (sections draw from
        ``(seed, z0 + i)``).

    Returns
    -------
    numpy.ndarray
        (z, y, x) uint8.

    """
    if slow.ndim != 3:
        raise ValueError(f"expected a (z, y, x) stack, got shape {slow.shape}")
    if speedup < 1 or n_slow <= 0 or read_sigma < 0 or blur_px < 0:
        raise ValueError(
            f"need speedup >= 1, n_slow > 0, read_sigma >= 0, blur_px >= 0, got {speedup}, "
            f"{n_slow}, {read_sigma}, {blur_px}"
        )
    n = n_slow / speedup
    out = np.empty(slow.shape, dtype=np.uint8)
    for i, section in enumerate(slow):
        rng = np.random.default_rng([seed, z0 + i])
        s = np.clip(section.astype(np.float64) / 255.0, 0, 1)
        if blur_px > 0:
            s = gaussian_filter1d(s, blur_px, axis=-1, mode="reflect")
        v = rng.poisson(n * s) / n + rng.normal(0.0, read_sigma, s.shape)
        out[i] = np.clip(np.round(v * 255.0), 0, 255).astype(np.uint8)
    return out
