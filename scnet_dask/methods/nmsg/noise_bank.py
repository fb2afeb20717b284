"""A tomogram's noise, sampled: smooth-patch noise cubes (GCBD's rule) and their statistics.

NMSG (:mod:`scnet_dask.methods.nmsg`) learns the noise of one tomogram from cubes of it that hold
no structure. :func:`extract_noise_bank` finds them out of core: a coarse pyramid level ranks the
candidate cubes by how much structure they hold (variance of the coarse level over the cube's
footprint, where the noise is averaged away), then level 0 is read at the smoothest candidates
only and each is tested with GCBD's rule (Chen et al., CVPR 2018): every sub-cube's mean and
variance must be close to the cube's. A passing cube minus its mean is a noise cube.

GCBD states the rule relative to the patch mean (``|mean(q) - mean(p)| <= mu * mean(p)``),
which has no meaning for tomograms, whose offset is arbitrary (often ~0). Ours measures the
mean deviation in units of the cube's standard deviation: ``|mean(q) - mean(p)| <= mu *
std(p)`` and ``|var(q) - var(p)| <= gamma * var(p)``; and by default it calibrates the
thresholds on the tested cubes, because correlated noise fails GCBD's white-noise constants
(see :func:`extract_noise_bank`). These are our adaptations.

:func:`noise_diagnostics` compares two sets of noise cubes (held-back real vs generated): the
radially averaged power spectrum per frequency band, the histogram (Wasserstein distance) and
the autocorrelation at short lags along each axis.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import dask
import dask.array as da
import numpy as np
import zarr

from scnet_dask.errors import InputError
from scnet_dask.io.omezarr import pyramid_levels
from scnet_dask.io.output import atomic_output

__all__ = [
    "NoiseBankSpec",
    "gcbd_scores",
    "screen_candidates",
    "extract_noise_bank",
    "open_noise_bank",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NoiseBankSpec:
    """How noise cubes are found.

    Attributes
    ----------
    cube
        Edge of a noise cube (voxels, even, >= 8).
    rule
        ``"calibrated"`` (thresholds ``tolerance`` x the median scores of the tested cubes) or
        ``"gcbd"`` (the absolute thresholds ``mu`` and ``gamma``).
    mu, gamma
        GCBD thresholds: sub-cube mean deviation in units of the cube's std, and relative
        sub-cube variance deviation (GCBD's 0.1 and 0.25 suit white noise).
    tolerance
        ``"calibrated"``: multiple of the median scores a cube may reach.
    max_cubes
        Stop after this many passing cubes (the smoothest candidates are tested first).
    min_cubes
        Fewer passing cubes than this is an error.
    screen_tolerance
        Candidates whose coarse-level score exceeds ``(1 + screen_tolerance)`` x the 25th
        percentile of the scores hold structure and are skipped; the others are all noise
        candidates alike (a seeded random ``4 x max_cubes`` of them are read at level 0).

    """

    cube: int = 16
    rule: str = "calibrated"
    mu: float = 0.1
    gamma: float = 0.25
    tolerance: float = 1.5
    max_cubes: int = 2000
    min_cubes: int = 64
    screen_tolerance: float = 1.0

    def __post_init__(self) -> None:
        if self.cube < 8 or self.cube % 2:
            raise ValueError(f"noise cube edge must be even and >= 8, got {self.cube}")
        if self.rule not in ("calibrated", "gcbd"):
            raise ValueError(f"rule must be 'calibrated' or 'gcbd', got {self.rule!r}")
        if not self.screen_tolerance > 0:
            raise ValueError(f"screen_tolerance must be > 0, got {self.screen_tolerance}")
        if self.min_cubes < 2 or self.max_cubes < self.min_cubes:
            raise ValueError(
                f"need 2 <= min_cubes <= max_cubes, got {self.min_cubes} and {self.max_cubes}"
            )


def gcbd_scores(cubes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """GCBD smoothness scores of (N, c, c, c) cubes over their 27 half-size sub-cubes.

    Sub-cubes have edge ``c/2`` at strides of ``c/4`` along each axis.

    Returns
    -------
    mean_dev, var_dev
        (N,) arrays: ``max_q |mean(q) - mean(p)| / std(p)`` and ``max_q |var(q) - var(p)| /
        var(p)``; ``inf`` for a constant cube.

    """
    x = np.asarray(cubes, np.float64)
    if x.ndim != 4 or len(set(x.shape[1:])) != 1:
        raise ValueError(f"cubes must be (N, c, c, c), got {x.shape}")
    c = x.shape[1]
    h, s = c // 2, max(1, c // 4)
    m = x.mean(axis=(1, 2, 3))
    v = x.var(axis=(1, 2, 3))
    sd = np.sqrt(v)
    mean_dev = np.zeros(len(x))
    var_dev = np.zeros(len(x))
    starts = range(0, c - h + 1, s)
    for a in starts:
        for b in starts:
            for d in starts:
                q = x[:, a : a + h, b : b + h, d : d + h]
                with np.errstate(divide="ignore", invalid="ignore"):
                    md = np.abs(q.mean(axis=(1, 2, 3)) - m) / sd
                    vd = np.abs(q.var(axis=(1, 2, 3)) - v) / v
                mean_dev = np.maximum(mean_dev, np.nan_to_num(md, nan=np.inf))
                var_dev = np.maximum(var_dev, np.nan_to_num(vd, nan=np.inf))
    return mean_dev, var_dev


def _levels(path: Path) -> list[zarr.Array]:

    try:
        levels = pyramid_levels(path)
    except Exception as e:  # zarr raises several types for a non-group
        raise InputError(f"{path}: not an OME-Zarr volume ({type(e).__name__})") from None
    if not levels:
        raise InputError(f"{path}: no pyramid levels in this OME-Zarr")
    return levels


def screen_candidates(path: Path, cube: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Origins of level-0 cubes at a stride of half a cube, smoothest first on a coarse level.

    The level used is the coarsest one whose factor is at most ``cube / 4`` (so a cube covers
    at least 4³ of its voxels); the score of a cube is the variance of that level over the
    cube's footprint (one Dask pass over the level, in half-cube blocks).

    Returns
    -------
    origins
        (M, 3) int array of level-0 (z, y, x) cube origins, sorted by score.
    scores
        (M,) the scores, ascending.
    level
        The pyramid level used.

    """
    levels = _levels(path)
    shape0 = tuple(int(s) for s in levels[0].shape)
    if any(s < cube for s in shape0):
        raise InputError(
            f"{path}: volume {'x'.join(map(str, shape0))} is smaller than one {cube}³ noise cube"
        )
    level = 0
    for i, arr in enumerate(levels):
        f = max(round(s0 / max(1, s)) for s0, s in zip(shape0, arr.shape, strict=True))
        if f <= cube // 4:
            level = i
    arr = levels[level]
    half = cube // 2
    factors = [max(1, round(s0 / s)) for s0, s in zip(shape0, arr.shape, strict=True)]
    foot = [max(1, half // f) for f in factors]
    grid = [s0 // half for s0 in shape0]
    x = da.from_zarr(arr).astype(np.float64)
    x = x[tuple(slice(0, g * b) for g, b in zip(grid, foot, strict=True))]
    axes = dict(enumerate(foot))
    m1, m2 = dask.compute(
        da.coarsen(np.mean, x, axes, trim_excess=True),
        da.coarsen(np.mean, x * x, axes, trim_excess=True),
    )
    windows = [np.lib.stride_tricks.sliding_window_view(m, (2, 2, 2)) for m in (m1, m2)]
    mean, mean_sq = (w.mean(axis=(3, 4, 5)) for w in windows)
    var = np.maximum(mean_sq - mean * mean, 0.0)
    idx = np.stack(np.unravel_index(np.argsort(var, axis=None, kind="stable"), var.shape), 1)
    origins = idx * half
    inside = np.all(origins + cube <= np.asarray(shape0), axis=1)
    return origins[inside], np.sort(var, axis=None)[inside], level


def _read_cubes(path: str, origins: np.ndarray, cube: int) -> np.ndarray:
    """The level-0 (N, c, c, c) float32 cubes of ``path`` at ``origins``."""
    arr = _levels(Path(path))[0]
    return np.stack(
        [
            np.asarray(arr[z : z + cube, y : y + cube, x : x + cube], np.float32)
            for z, y, x in origins
        ]
    )


def _existing_report(out: Path, identity: dict[str, Any]) -> dict[str, Any]:
    """The report of the bank in ``out`` if it was made from the same source and settings."""
    try:
        old = zarr.open_array(str(out), mode="r")
        same = {k: old.attrs.get(k) for k in identity} == identity
    except Exception:  # not an array: refuse below
        same = False
    if not same:
        raise InputError(
            f"{out}: holds noise cubes of another volume or other settings; remove it or "
            "choose another noise_bank.path"
        )
    return dict(cast(dict[str, Any], old.attrs["report"]))


def _candidate_cubes(
    source: Path, spec: NoiseBankSpec, origins: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Origins (N, 3) and level-0 cubes (N, c, c, c) of up to ``4 x max_cubes`` candidates.

    Drawn at random (seeded) among those whose coarse score is not an outlier: not the
    smoothest first, since the coarse score is also the noise's low-frequency power and ranking
    by it would bias the bank against low frequencies; structure is the outlier.
    """
    limit = (1 + spec.screen_tolerance) * float(np.quantile(scores, 0.25)) if len(scores) else 0
    eligible = np.flatnonzero(scores <= limit)
    n_test = min(len(eligible), 4 * spec.max_cubes)
    pick = np.sort(np.random.default_rng(0).permutation(eligible)[:n_test])
    tested = origins[pick]
    batch = 64
    parts = [tested[i : i + batch] for i in range(0, len(tested), batch)]
    read = dask.compute(*[dask.delayed(_read_cubes)(str(source), p, spec.cube) for p in parts])
    cubes = np.concatenate(read) if read else np.zeros((0,) + (spec.cube,) * 3, np.float32)
    return tested, cubes


def _thresholds(spec: NoiseBankSpec, md: np.ndarray, vd: np.ndarray) -> tuple[float, float]:
    """GCBD's (mu, gamma): absolute (``rule="gcbd"``) or ``tolerance`` x the median scores."""
    if spec.rule == "gcbd":
        return spec.mu, spec.gamma
    finite = np.isfinite(md) & np.isfinite(vd)
    mu = float(spec.tolerance * np.median(md[finite])) if finite.any() else 0.0
    gamma = float(spec.tolerance * np.median(vd[finite])) if finite.any() else 0.0
    return mu, gamma


def _store_bank(out: Path, cubes: np.ndarray, attrs: dict[str, Any]) -> None:
    """Write (N, c, c, c) float32 ``cubes`` with ``attrs`` to the Zarr array ``out``, atomically."""
    with atomic_output(out, overwrite=True) as tmp:
        arr = zarr.create_array(
            str(tmp),
            shape=cubes.shape,
            chunks=(min(256, len(cubes)),) + tuple(cubes.shape[1:]),
            dtype="float32",
        )
        arr[...] = cubes
        arr.attrs.update(cast(Any, attrs))


def extract_noise_bank(
    source: Path,
    out: Path,
    spec: NoiseBankSpec,
    scale: float,
    resume: bool = True,
) -> dict[str, Any]:
    """Find noise cubes in ``source`` (an OME-Zarr) and store them in ``out`` (a Zarr array).

    Candidates are screened and drawn by :func:`_candidate_cubes`, scored with GCBD's rule
    (:func:`gcbd_scores`) against the thresholds of :func:`_thresholds` (absolute with
    ``rule="gcbd"``, which suits white noise only: measured on 16³ cubes, median mean score
    0.09 for white noise, 0.39 for noise smoothed by σ (1.2, 0.8, 0.8) voxels; else
    ``tolerance`` x the median scores). At most ``max_cubes`` passing cubes are kept, shuffled
    (seeded), mean removed, divided by ``scale`` (the volume's std: the engine's normalised
    units), as an (N, c, c, c) float32 array whose attributes hold the settings, counts,
    thresholds and origins. A bank of the same source and settings in ``out`` is reused.

    Returns
    -------
    dict
        ``found``, ``tested``, ``candidates``, ``level`` (the screening level), ``mu`` and
        ``gamma`` (the thresholds applied), ``spec``.

    Raises
    ------
    InputError
        The volume is smaller than one cube, is not an OME-Zarr, or fewer than
        ``spec.min_cubes`` cubes pass; ``out`` holds a bank of other settings.

    """
    source, out = Path(source), Path(out)
    identity = {"source": str(source.resolve()), "spec": asdict(spec), "scale": float(scale)}
    if out.exists() and resume:
        return _existing_report(out, identity)
    if not scale > 0:
        raise InputError(f"{source}: constant volume (std {scale}), no noise to model")
    origins, scores, level = screen_candidates(source, spec.cube)
    tested, cubes = _candidate_cubes(source, spec, origins, scores)
    n_test = len(tested)
    md, vd = gcbd_scores(cubes)
    mu, gamma = _thresholds(spec, md, vd)
    ok = np.flatnonzero((md <= mu) & (vd <= gamma))[: spec.max_cubes]  # in random order
    report = {
        "found": int(len(ok)),
        "tested": int(n_test),
        "candidates": int(len(origins)),
        "level": level,
        "mu": mu,
        "gamma": gamma,
        "spec": asdict(spec),
    }
    if len(ok) < spec.min_cubes:
        if n_test < spec.min_cubes:  # no threshold can help: too few candidates at all
            raise InputError(
                f"{source}: the volume offers only {n_test} candidate {spec.cube}³ noise cubes "
                f"(of {len(origins)} places, after screening out structure); NMSG needs at "
                f"least {spec.min_cubes}: lower noise_bank.min_cubes or noise_bank.cube, or "
                "train on a larger volume"
            )
        hint = (
            "raise noise_bank.mu / gamma, use noise_bank.rule calibrated"
            if spec.rule == "gcbd"
            else "raise noise_bank.tolerance"
        )
        raise InputError(
            f"{source}: only {len(ok)} smooth {spec.cube}³ cubes of {n_test} tested pass the "
            f"GCBD rule (mu {mu:.3g}, gamma {gamma:.3g}); NMSG needs at least "
            f"{spec.min_cubes}: {hint} or lower noise_bank.cube (YAML section of --config)"
        )
    ok = ok[np.random.default_rng(0).permutation(len(ok))]
    keep = cubes[ok] - cubes[ok].mean(axis=(1, 2, 3), keepdims=True)
    attrs = {**identity, "report": report, "origins": tested[ok].tolist()}
    _store_bank(out, (keep / scale).astype(np.float32), attrs)
    log.info(
        "noise cubes: %d of %d tested candidates pass (mu %.3g, gamma %.3g; screened on "
        "level %d) -> %s",
        len(ok), n_test, mu, gamma, level, out,
    )  # fmt: skip
    return report


def open_noise_bank(path: Path) -> np.ndarray:
    """The (N, c, c, c) float32 noise cubes of a bank written by :func:`extract_noise_bank`."""
    try:
        arr = zarr.open_array(str(path), mode="r")
    except Exception as e:  # zarr raises several types
        raise InputError(f"{path}: not a noise-cube store ({type(e).__name__})") from None
    if arr.ndim != 4:
        raise InputError(f"{path}: noise cubes must be (N, c, c, c), got {arr.shape}")
    return np.asarray(arr[...], np.float32)


