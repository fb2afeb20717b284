"""Blend geometry of the tiled prediction: pure functions of a :class:`TilePlan`, no Dask.

Which tile covers which voxels, where a tile must be read (with reflection past the volume's
end), and which part of which tile lands in which output chunk with which window. The windows
travel as small tuples (:data:`WeightSpec`) and are computed where they are used
(:func:`axis_weights`), so a task graph never carries weight arrays. :mod:`scnet_dask.tiling`
builds the Dask graph from this.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, NamedTuple

import numpy as np

__all__ = [
    "POST_FILTER_TRUNCATE",
    "DEFAULT_BLEND",
    "WINDOW_FLOOR",
    "Window",
    "Triple",
    "TilePlan",
    "WeightSpec",
    "Contribution",
    "post_filter_radius",
    "plan_halo",
    "reflect_index",
    "window_profile",
    "axis_weights",
    "read_spans",
    "read_box",
    "contributions",
    "blend_pieces",
]

#: Gaussian post-filter kernels reach ``truncate * sigma`` voxels (scipy's default).
POST_FILTER_TRUNCATE = 4.0
#: Voxels of the halo reserved for the smooth blend when ``halo="auto"``.
DEFAULT_BLEND = 8
#: Smallest window weight (inside the margin); keeps every weight strictly positive.
WINDOW_FLOOR = 1e-6

Window = Literal["gaussian", "cosine"]
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
    """Halo and margin per axis, in input voxels (z, y, x).

    Parameters
    ----------
    halo
        ``"auto"`` (margin + ``blend``) or the halo in voxels (one int or a (z, y, x) triple).
    receptive_margin
        How far (voxels, per axis) an input voxel can influence the predictor's output; for
        SC-Net's U-Net it depends on the up-sampling factor (see
        :attr:`scnet_dask.model.unet.SCNetUNet.receptive_margin`).
    post_sigma
        Gaussian post-filter sigma in voxels (0: none); its radius adds to the margin.
    blend
        Width of the blend zone for ``halo="auto"``.

    Returns
    -------
    halo, margin
        ``margin`` is the part of the halo where the window is ~0. With an explicit halo the
        margin is what is left after reserving up to ``blend`` voxels for blending, so a halo
        smaller than the receptive field still blends (approximately) instead of cutting.

    """
    rf = _triple(receptive_margin, "receptive_margin")
    if blend < 0:
        raise ValueError(f"blend must be >= 0, got {blend}")
    need = tuple(r + post_filter_radius(post_sigma) for r in rf)
    if isinstance(halo, str):
        if halo != "auto":
            raise ValueError(f"halo must be 'auto' or voxels, got {halo!r}")
        h = tuple(n + blend for n in need)
        return (h[0], h[1], h[2]), (need[0], need[1], need[2])
    h3 = _triple(halo, "halo")
    m = tuple(min(n, max(0, hh - blend)) for n, hh in zip(need, h3, strict=True))
    return h3, (m[0], m[1], m[2])


def reflect_index(index: np.ndarray, n: int) -> np.ndarray:
    """Map indices past ``[0, n)`` back inside by mirror reflection (numpy's ``reflect``)."""
    if n < 1:
        raise ValueError(f"axis length must be >= 1, got {n}")
    if n == 1:
        return np.zeros_like(index)
    period = 2 * (n - 1)
    r = np.mod(index, period)
    return np.where(r < n, r, period - r)


def window_profile(
    length: int,
    ramp_lo: int | None,
    ramp_hi: int | None,
    margin: int,
    kind: Window = "gaussian",
) -> np.ndarray:
    """1-D blending weights over ``length`` voxels of a tile.

    Parameters
    ----------
    length
        Tile length along the axis (voxels).
    ramp_lo, ramp_hi
        Length of the blend zone after the margin at the low / high end, or ``None`` where the
        tile touches the volume border (weight 1 right up to it).
    margin
        Voxels at a non-border end whose weight is :data:`WINDOW_FLOOR`.
    kind
        ``"gaussian"`` (``exp(-(1-t)^2 / (2 * (1/3)^2))``) or ``"cosine"`` (raised cosine).

    Returns
    -------
    numpy.ndarray
        float64 weights in ``[WINDOW_FLOOR, 1]``, shape (length,).

    """
    if kind not in ("gaussian", "cosine"):
        raise ValueError(f"window must be 'gaussian' or 'cosine', got {kind!r}")

    def side(d: np.ndarray, ramp: int | None) -> np.ndarray:
        if ramp is None:
            return np.ones_like(d, dtype=np.float64)
        t = (d - margin + 1) / (ramp + 1)
        if kind == "gaussian":
            w = np.exp(-0.5 * ((1.0 - t) / (1.0 / 3.0)) ** 2)
        else:
            w = 0.5 - 0.5 * np.cos(np.pi * np.clip(t, 0.0, 1.0))
        w = np.where(d < margin, 0.0, np.where(t >= 1.0, 1.0, w))
        return np.asarray(w, dtype=np.float64)

    p = np.arange(length, dtype=np.float64)
    w = np.minimum(side(p, ramp_lo), side(length - 1 - p, ramp_hi))
    return np.maximum(w, WINDOW_FLOOR)


@dataclass(frozen=True)
class _Axis:
    """Tile geometry along one axis (all in voxels, padded-grid coordinates)."""

    n: int
    starts: tuple[int, ...]  # chunk starts
    stops: tuple[int, ...]  # chunk stops
    tiles: tuple[tuple[int, int], ...]  # [a, b) per chunk, multiples of `multiple`
    margin: int
    kind: Window

    def profile_spec(self, i: int) -> tuple[int, int | None, int | None, int, str]:
        """``window_profile`` arguments of tile ``i``: (length, lo, hi, margin, kind)."""
        a, b = self.tiles[i]
        lo = None if a == 0 else self.starts[i] - a - self.margin
        hi = None if b >= self.n else b - self.stops[i] - self.margin
        return (b - a, lo, hi, self.margin, self.kind)

    def profile(self, i: int) -> np.ndarray:
        """Window over the in-volume part ``[a, min(b, n))`` of tile ``i``."""
        a, b = self.tiles[i]
        return window_profile(*self.profile_spec(i))[: min(b, self.n) - a]  # type: ignore[arg-type]

    def chunks_over(self, lo: int, hi: int) -> list[int]:
        """Chunks that overlap ``[lo, hi)``."""
        first = int(np.searchsorted(self.stops, lo, side="right"))
        last = int(np.searchsorted(self.starts, hi, side="left"))
        return list(range(first, last))

    def tiles_over(self, i: int) -> list[int]:
        """Tiles whose in-volume part overlaps chunk ``i``."""
        s, e = self.starts[i], self.stops[i]
        return [j for j, (a, b) in enumerate(self.tiles) if a < e and min(b, self.n) > s]


@dataclass(frozen=True)
class TilePlan:
    """How a (z, y, x) volume of ``shape`` with dask ``chunks`` is cut into tiles.

    Attributes
    ----------
    shape
        Volume shape (z, y, x), voxels.
    chunks
        Dask chunks of the input (and of the output), any sizes.
    halo, margin
        Per axis, voxels (see :func:`plan_halo`).
    multiple
        Tile edges and origins are multiples of this (16 for SC-Net's U-Net).
    window
        Blend profile, ``"gaussian"`` or ``"cosine"``.
    post_sigma
        Gaussian filter (voxels) applied to each prediction, inside the volume, before blending.

    """

    shape: Triple
    chunks: tuple[tuple[int, ...], ...]
    halo: Triple
    margin: Triple
    multiple: int = 16
    window: Window = "gaussian"
    post_sigma: float = 0.0

    def __post_init__(self) -> None:
        if len(self.shape) != 3 or min(self.shape) < 1:
            raise ValueError(f"shape must be three positive ints (z, y, x), got {self.shape}")
        if tuple(sum(c) for c in self.chunks) != tuple(self.shape):
            raise ValueError(f"chunks {self.chunks} do not add up to shape {self.shape}")
        if self.multiple < 1:
            raise ValueError(f"multiple must be >= 1, got {self.multiple}")
        if any(m > h for m, h in zip(self.margin, self.halo, strict=True)):
            raise ValueError(f"margin {self.margin} must not exceed halo {self.halo}")
        if self.window not in ("gaussian", "cosine"):
            raise ValueError(f"window must be 'gaussian' or 'cosine', got {self.window!r}")
        post_filter_radius(self.post_sigma)

    @property
    def padded_shape(self) -> Triple:
        """Shape rounded up to :attr:`multiple` (reflection-padded at the far end)."""
        m = self.multiple
        p = tuple(-(-n // m) * m for n in self.shape)
        return (p[0], p[1], p[2])

    def axis(self, k: int) -> _Axis:
        """Geometry of axis ``k`` (0 = z, 1 = y, 2 = x)."""
        m, n, padded = self.multiple, self.shape[k], self.padded_shape[k]
        stops = tuple(int(s) for s in np.cumsum(self.chunks[k]))
        starts = (0, *stops[:-1])
        tiles = tuple(
            (max(0, (s - self.halo[k]) // m * m), min(padded, -(-(e + self.halo[k]) // m) * m))
            for s, e in zip(starts, stops, strict=True)
        )
        return _Axis(n, starts, stops, tiles, self.margin[k], self.window)

    def tile_voxels(self) -> int:
        """Voxels pushed through the predictor for the whole volume (all tiles)."""
        total = 1
        for k in range(3):
            total *= sum(b - a for a, b in self.axis(k).tiles)
        return total


#: One axis of a piece's window: (tile length, low ramp start, high ramp start, margin, kind,
#: first, stop) — ``window_profile(length, lo, hi, margin, kind)[first:stop]``.
WeightSpec = tuple[int, int | None, int | None, int, str, int, int]


class Contribution(NamedTuple):
    """The part of one tile that lands in one output chunk.

    Attributes
    ----------
    tile
        Tile index (z, y, x) (tiles are numbered like the chunks they are centred on).
    src, dst
        Slices of that part in the tile's in-volume prediction and in the chunk.
    weights
        Its window per axis, as :data:`WeightSpec` tuples.

    """

    tile: Triple
    src: tuple[slice, slice, slice]
    dst: tuple[slice, slice, slice]
    weights: tuple[WeightSpec, WeightSpec, WeightSpec]


@lru_cache(maxsize=4096)
def axis_weights(spec: WeightSpec) -> np.ndarray:
    """The 1-D window of a :data:`WeightSpec` (cached; read-only)."""
    length, lo, hi, margin, kind, first, stop = spec
    w = window_profile(length, lo, hi, margin, kind)[first:stop]  # type: ignore[arg-type]
    w.setflags(write=False)
    return w


def read_spans(plan: TilePlan, tile: Sequence[int]) -> tuple[tuple[int, int, int], ...]:
    """Per axis ``(a, b, n)``: tile ``tile`` covers padded coordinates ``[a, b)`` of ``n``."""
    out = []
    for k in range(3):
        ax = plan.axis(k)
        a, b = ax.tiles[int(tile[k])]
        out.append((a, b, ax.n))
    return tuple(out)


def read_box(
    spans: Sequence[tuple[int, int, int]],
) -> tuple[tuple[tuple[int, int], ...], tuple[np.ndarray, ...]]:
    """The in-volume box a tile reads and the index map that reflects it past the end.

    Returns ``box`` (``(lo, hi)`` per axis, volume coordinates) and ``index`` (per axis, indices
    into the box) such that ``volume[box][np.ix_(*index)]`` is the reflection-padded tile.
    """
    box, index = [], []
    for a, b, n in spans:
        src = reflect_index(np.arange(a, b), n)
        lo, hi = int(src.min()), int(src.max()) + 1
        index.append(src - lo)
        box.append((lo, hi))
    return tuple(box), tuple(index)


def contributions(plan: TilePlan) -> dict[Triple, list[Contribution]]:
    """For every output chunk (block index), the tile parts that land in it."""
    axes = [plan.axis(k) for k in range(3)]
    nblocks = tuple(len(c) for c in plan.chunks)
    out: dict[Triple, list[Contribution]] = {}
    for cz, cy, cx in np.ndindex(*nblocks):
        cijk = (int(cz), int(cy), int(cx))
        tile_lists = [axes[k].tiles_over(cijk[k]) for k in range(3)]
        entries = []
        tiles = [(z, y, x) for z in tile_lists[0] for y in tile_lists[1] for x in tile_lists[2]]
        for t in tiles:
            src, dst, ws = [], [], []
            for k in range(3):
                ax = axes[k]
                a, b = ax.tiles[t[k]]
                c0, c1 = ax.starts[cijk[k]], ax.stops[cijk[k]]
                s0, e0 = max(a, c0), min(min(b, ax.n), c1)
                src.append(slice(s0 - a, e0 - a))
                dst.append(slice(s0 - c0, e0 - c0))
                ws.append((*ax.profile_spec(t[k]), s0 - a, e0 - a))
            entries.append(
                Contribution(
                    (t[0], t[1], t[2]),
                    (src[0], src[1], src[2]),
                    (dst[0], dst[1], dst[2]),
                    (ws[0], ws[1], ws[2]),  # type: ignore[arg-type]
                )
            )
        out[cijk] = entries
    return out


def blend_pieces(
    shape: Sequence[int],
    pieces: Sequence[tuple[np.ndarray, tuple[slice, ...], tuple[WeightSpec, ...]]],
) -> np.ndarray:
    """Weighted sum of tile pieces over one chunk of ``shape``, divided by the summed weights.

    ``pieces``: (piece, destination slices in the chunk, :data:`WeightSpec` per axis).
    """
    num = np.zeros(tuple(shape), dtype=np.float64)
    den = np.zeros(tuple(shape), dtype=np.float64)
    for piece, dst, specs in pieces:
        wz, wy, wx = (axis_weights(sp) for sp in specs)
        w = wz[:, None, None] * wy[None, :, None] * wx[None, None, :]
        num[dst] += w * piece
        den[dst] += w
    return (num / den).astype(np.float32)
