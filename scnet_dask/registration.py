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

__all__ = ["check_registered"]


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else 0.0


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
        One line naming the target: the coarsest levels differ in shape, correlate below
        ``min_correlation``, or correlate clearly better (by 0.05) at a non-zero shift.

    """
    sa = tuple(pyramid_levels(input_path)[0].shape)
    sb = tuple(pyramid_levels(target_path)[0].shape)
    if sa != sb:
        raise InputError(
            f"{target_path}: target shape {sb} differs from the input's {sa} ({input_path}); "
            "input and target must be registered stacks on one grid"
        )
    a, factor = coarsest_level(input_path)
    b, _ = coarsest_level(target_path)
    if a.shape != b.shape:
        raise InputError(
            f"{target_path}: target grid differs from the input's {input_path} (coarsest "
            f"levels {b.shape} vs {a.shape})"
        )
    r0 = _corr(a, b)
    shift, _, _ = phase_cross_correlation(a, b, normalization=None)
    shift = np.round(np.asarray(shift)).astype(int)
    r_best = _corr(a, np.roll(b, tuple(shift), axis=(0, 1, 2))) if np.any(shift) else r0
    out: dict[str, Any] = {
        "correlation": r0,
        "shift_voxels": [int(s) * factor for s in shift],
        "factor": factor,
    }
    if np.any(shift) and r_best > r0 + 0.05:
        raise InputError(
            f"{target_path}: target is not registered with {input_path}: it matches best "
            f"shifted by {tuple(out['shift_voxels'])} voxels (z, y, x) (correlation "
            f"{r_best:.2f} vs {r0:.2f} in place); register the stacks first"
        )
    if r0 < min_correlation:
        raise InputError(
            f"{target_path}: target is not registered with {input_path}: correlation "
            f"{r0:.2f} of the coarsest pyramid levels (below {min_correlation}); is it the "
            "same specimen and region?"
        )
    return out
