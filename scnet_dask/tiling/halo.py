"""Halo planning of the tiled prediction: how far each tile reaches past its output chunk, per side.

The halo covers the predictor's receptive margin (possibly asymmetric), its Gaussian post-filter
and a blend zone; :mod:`scnet_dask.tiling.blend` lays the tiles out with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import numpy as np

__all__ = [
    "POST_FILTER_TRUNCATE",
    "DEFAULT_BLEND",
    "Triple",
    "post_filter_radius",
    "plan_halo",
    "HaloSides",
    "plan_halo_sides",
]


#: Gaussian post-filter kernels reach ``truncate * sigma`` voxels (scipy's default).
POST_FILTER_TRUNCATE = 4.0


#: Voxels of the halo reserved for the smooth blend when ``halo="auto"``.
DEFAULT_BLEND = 8


Triple = tuple[int, int, int]


def post_filter_radius(sigma: float) -> int:
    """Voxels a Gaussian post-filter of ``sigma`` (voxels) reaches, as scipy truncates it."""
    if sigma < 0:
        raise ValueError(f"post-filter sigma must be >= 0, got {sigma}")
    return int(POST_FILTER_TRUNCATE * sigma + 0.5) if sigma > 0 else 0


def _triple(value: int | Sequence[int], name: str) -> Triple:
    if isinstance(value, int | np.integer):
        t = (int(value),) * 3
    else:
        t = tuple(int(v) for v in value)  # type: ignore[assignment]
    if len(t) != 3 or min(t) < 0:
        raise ValueError(
            f"{name} must be a non-negative int or three of them (z, y, x), got {value}"
        )
    return (t[0], t[1], t[2])


def plan_halo(
    halo: int | Sequence[int] | Literal["auto"],
    receptive_margin: int | Sequence[int],
    post_sigma: float = 0.0,
    blend: int = DEFAULT_BLEND,
) -> tuple[Triple, Triple]:
    """Halo and margin per axis, in input voxels (z, y, x), the same on both sides of a tile.

    Parameters
    ----------
    halo, post_sigma, blend
        As for :func:`plan_halo_sides`.
    receptive_margin
        The reach (voxels, per axis) on both sides.

    Returns
    -------
    halo, margin
        ``margin`` is the part of the halo where the window is ~0.

    """
    sides = plan_halo_sides(halo, receptive_margin, receptive_margin, post_sigma, blend)
    return sides.halo_lo, sides.margin_lo


def _t(v: Sequence[int]) -> Triple:
    return (int(v[0]), int(v[1]), int(v[2]))


class HaloSides(NamedTuple):
    """Halo and margin (voxels, z/y/x) at the low and the high end of every tile."""

    halo_lo: Triple
    halo_hi: Triple
    margin_lo: Triple
    margin_hi: Triple


def plan_halo_sides(
    halo: int | Sequence[int] | Literal["auto"],
    reach_lo: int | Sequence[int],
    reach_hi: int | Sequence[int] | None = None,
    post_sigma: float = 0.0,
    blend: int = DEFAULT_BLEND,
) -> HaloSides:
    """Halo and margin per axis and per side of a tile, in input voxels (z, y, x).

    Parameters
    ----------
    halo
        ``"auto"`` (each side's margin + ``blend``) or the halo in voxels (one int or a
        (z, y, x) triple), the same on both sides.
    reach_lo, reach_hi
        How far below / above an output voxel the inputs it depends on lie (voxels, per
        axis): the margin a tile needs at its low / high end for exact outputs. SC-Net's
        U-Net reaches 48 voxels down and 33 up at its own resolution (strided convolutions
        are not symmetric). ``reach_hi`` ``None``: the same as ``reach_lo``.
    post_sigma
        Gaussian post-filter sigma in voxels (0: none); its radius adds to both margins.
    blend
        Width of the blend zone for ``halo="auto"``.

    Returns
    -------
    HaloSides
        With an explicit halo each margin is what is left after reserving up to ``blend``
        voxels for blending (at most the reach), so a halo smaller than the receptive field
        still blends (approximately) instead of cutting.

    """
    lo = _triple(reach_lo, "receptive_margin")
    hi = lo if reach_hi is None else _triple(reach_hi, "receptive_margin")
    if blend < 0:
        raise ValueError(f"blend must be >= 0, got {blend}")
    r = post_filter_radius(post_sigma)
    need_lo = tuple(v + r for v in lo)
    need_hi = tuple(v + r for v in hi)
    if isinstance(halo, str):
        if halo != "auto":
            raise ValueError(f"halo must be 'auto' or voxels, got {halo!r}")
        h_lo = tuple(n + blend for n in need_lo)
        h_hi = tuple(n + blend for n in need_hi)
        return HaloSides(_t(h_lo), _t(h_hi), _t(need_lo), _t(need_hi))
    h3 = _triple(halo, "halo")
    m_lo = tuple(min(n, max(0, hh - blend)) for n, hh in zip(need_lo, h3, strict=True))
    m_hi = tuple(min(n, max(0, hh - blend)) for n, hh in zip(need_hi, h3, strict=True))
    return HaloSides(h3, h3, _t(m_lo), _t(m_hi))
