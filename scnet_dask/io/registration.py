"""Are two volumes registered? A check on the coarsest common pyramid level.

Supervised training needs an input and a target of the same place, voxel for voxel. The check
compares the two volumes' coarsest pyramid levels (cheap: 1/64 of the voxels at level 2): their
correlation at zero shift, and the shift that phase correlation finds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from skimage.registration import phase_cross_correlation

from scnet_dask.errors import InputError
from scnet_dask.io.omezarr import coarsest_level, pyramid_levels

__all__ = ["check_registered", "measure_registration", "misregistered"]


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else 0.0


def measure_registration(a_path: str | Path, b_path: str | Path) -> dict[str, Any]:
    """How well two OME-Zarr volumes on one grid line up, on their coarsest common level.

    Returns
    -------
    dict
        ``correlation`` at zero shift, ``shift_voxels`` (z, y, x, level-0 voxels: phase
        correlation's shift that best maps ``b`` onto ``a``), ``best_correlation`` (at that
        shift) and the pyramid ``factor`` used.

    Raises
    ------
    InputError
        The volumes (or their coarsest levels) differ in shape.

    """
    sa = tuple(pyramid_levels(a_path)[0].shape)
    sb = tuple(pyramid_levels(b_path)[0].shape)
    if sa != sb:
        raise InputError(
            f"{b_path}: shape {sb} differs from {sa} of {a_path}; the volumes must be on one grid"
        )
    a, factor = coarsest_level(a_path)
    b, _ = coarsest_level(b_path)
    if a.shape != b.shape:
        raise InputError(
            f"{b_path}: grid differs from {a_path} (coarsest levels {b.shape} vs {a.shape})"
        )
    r0 = _corr(a, b)
    shift, _, _ = phase_cross_correlation(a, b, normalization=None)
    shift = np.round(np.asarray(shift)).astype(int)
    r_best = _corr(a, np.roll(b, tuple(shift), axis=(0, 1, 2))) if np.any(shift) else r0
    return {
        "correlation": r0,
        "best_correlation": r_best,
        "shift_voxels": [int(v) * factor for v in shift],
        "factor": factor,
    }


def misregistered(m: dict[str, Any], margin: float = 0.05) -> bool:
    """Whether a :func:`measure_registration` result matches clearly better shifted."""
    return any(m["shift_voxels"]) and m["best_correlation"] > m["correlation"] + margin


def check_registered(
    input_path: str | Path, target_path: str | Path, min_correlation: float = 0.2
) -> dict[str, Any]:
    """Refuse a target that is not registered with the input.

    Parameters
    ----------
    input_path, target_path
        OME-Zarr volumes on one (z, y, x) grid.
    min_correlation
        Least correlation of the two coarsest levels at zero shift.

    Returns
    -------
    dict
        ``correlation`` (zero shift), ``shift_voxels`` (z, y, x, level-0 voxels, from phase
        correlation) and the pyramid ``factor`` used.

    Raises
    ------
    InputError
        One line naming the target: the volumes differ in shape, their coarsest levels
        correlate below ``min_correlation``, or correlate clearly better (by 0.05) at a
        non-zero shift.

    """
    try:
        m = measure_registration(input_path, target_path)
    except InputError as e:
        raise InputError(f"{e}; input and target must be registered stacks on one grid") from None
    r0 = m["correlation"]
    out = {k: m[k] for k in ("correlation", "shift_voxels", "factor")}
    if misregistered(m):
        raise InputError(
            f"{target_path}: target is not registered with {input_path}: it matches best "
            f"shifted by {tuple(m['shift_voxels'])} voxels (z, y, x) (correlation "
            f"{m['best_correlation']:.2f} vs {r0:.2f} in place); register the stacks first"
        )
    if r0 < min_correlation:
        raise InputError(
            f"{target_path}: target is not registered with {input_path}: correlation "
            f"{r0:.2f} of the coarsest pyramid levels (below {min_correlation}); is it the "
            "same specimen and region?"
        )
    return out
