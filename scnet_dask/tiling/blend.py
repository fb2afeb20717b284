"""Blend geometry of the tiled prediction: pure functions of a :class:`TilePlan`, no Dask.

Which tile covers which voxels, where a tile must be read (with reflection past the volume's
end), and which part of which tile lands in which output chunk with which window. The windows
travel as small tuples (:data:`WeightSpec`) and are computed where they are used
(:func:`axis_weights`), so a task graph never carries weight arrays. :mod:`scnet_dask.tiling.graph`
builds the Dask graph from this.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, NamedTuple

import numpy as np

from scnet_dask.tiling.halo import (
    Triple,
    post_filter_radius,
)

__all__ = [
    "WINDOW_FLOOR",
    "Window",
    "TilePlan",
    "WeightSpec",
    "Contribution",
    "reflect_index",
    "window_profile",
    "axis_weights",
    "read_spans",
    "read_box",
    "contributions",
    "blend_pieces",
]

#: Smallest window weight (inside the margin); keeps every weight strictly positive.
WINDOW_FLOOR = 1e-6

Window = Literal["gaussian", "cosine"]


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
    margin_hi: int | None = None,
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
        Voxels at a non-border low end (and high end, unless ``margin_hi`` is given) whose
        weight is :data:`WINDOW_FLOOR`.
    kind
        ``"gaussian"`` (``exp(-(1-t)^2 / (2 * (1/3)^2))``) or ``"cosine"`` (raised cosine).
    margin_hi
        The margin at the high end, when it differs from the low end's.

    Returns
    -------
    numpy.ndarray
        float64 weights in ``[WINDOW_FLOOR, 1]``, shape (length,).

    """
    if kind not in ("gaussian", "cosine"):
        raise ValueError(f"window must be 'gaussian' or 'cosine', got {kind!r}")

    def side(d: np.ndarray, ramp: int | None, m: int) -> np.ndarray:
        if ramp is None:
            return np.ones_like(d, dtype=np.float64)
        t = (d - m + 1) / (ramp + 1)
        if kind == "gaussian":
            w = np.exp(-0.5 * ((1.0 - t) / (1.0 / 3.0)) ** 2)
        else:
            w = 0.5 - 0.5 * np.cos(np.pi * np.clip(t, 0.0, 1.0))
        w = np.where(d < m, 0.0, np.where(t >= 1.0, 1.0, w))
        return np.asarray(w, dtype=np.float64)

    p = np.arange(length, dtype=np.float64)
    m_hi = margin if margin_hi is None else margin_hi
    w = np.minimum(side(p, ramp_lo, margin), side(length - 1 - p, ramp_hi, m_hi))
    return np.maximum(w, WINDOW_FLOOR)


@dataclass(frozen=True)
class _Axis:
    """Tile geometry along one axis (all in voxels, padded-grid coordinates).

    Tiles have *cores* that partition ``[0, n)`` (one per output chunk, or a regular grid of
    the plan's tile edge, independent of the chunks); each tile is its core extended by the
    halo on both sides and snapped outwards to ``multiple``.
    """

    n: int
    starts: tuple[int, ...]  # chunk starts
    stops: tuple[int, ...]  # chunk stops
    cores: tuple[tuple[int, int], ...]  # [s, e) per tile
    tiles: tuple[tuple[int, int], ...]  # [a, b) per tile, multiples of `multiple`
    margin: int  # at a tile's low end
    margin_hi: int  # at a tile's high end
    kind: Window

    def profile_spec(self, i: int) -> tuple[int, int | None, int | None, int, int, str]:
        """Window arguments of tile ``i``: (length, lo, hi, margin, margin_hi, kind)."""
        a, b = self.tiles[i]
        s, e = self.cores[i]
        lo = None if a == 0 else s - a - self.margin
        hi = None if b >= self.n else b - e - self.margin_hi
        return (b - a, lo, hi, self.margin, self.margin_hi, self.kind)

    def profile(self, i: int) -> np.ndarray:
        """Window over the in-volume part ``[a, min(b, n))`` of tile ``i``."""
        a, b = self.tiles[i]
        length, lo, hi, m, m_hi, kind = self.profile_spec(i)
        w = window_profile(length, lo, hi, m, kind, m_hi)  # type: ignore[arg-type]
        return w[: min(b, self.n) - a]

    def chunks_over(self, lo: int, hi: int) -> list[int]:
        """Chunks that overlap ``[lo, hi)``."""
        first = int(np.searchsorted(self.stops, lo, side="right"))
        last = int(np.searchsorted(self.starts, hi, side="left"))
        return list(range(first, last))

    def tiles_over(self, i: int) -> list[int]:
        """Tiles with weight above the floor somewhere in chunk ``i``.

        A tile whose only overlap with the chunk lies inside its margin contributes nothing
        exact (and only :data:`WINDOW_FLOOR` weight): it is left out. Every voxel keeps the
        tile whose core holds it (weight 1).
        """
        s, e = self.starts[i], self.stops[i]
        out = []
        for j, (a, b) in enumerate(self.tiles):
            lo, hi = max(a, s), min(b, self.n, e)
            if lo >= hi:
                continue
            if self.profile(j)[lo - a : hi - a].max() > WINDOW_FLOOR:
                out.append(j)
        return out


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
        Per axis, voxels, at the low end of a tile (and at the high end unless ``halo_hi`` /
        ``margin_hi`` are given; see :func:`plan_halo_sides`).
    multiple
        Tile edges and origins are multiples of this (16 for SC-Net's U-Net).
    window
        Blend profile, ``"gaussian"`` or ``"cosine"``.
    post_sigma
        Gaussian filter (voxels) applied to each prediction, inside the volume, before blending.
    halo_hi, margin_hi
        Per axis, voxels, at the high end of a tile (``None``: as at the low end).
    tile
        Edge of the tile cores per axis (voxels, multiples of ``multiple``): a regular grid
        from the origin, independent of the chunks. ``None``: one tile per chunk (its core is
        the chunk).

    """

    shape: Triple
    chunks: tuple[tuple[int, ...], ...]
    halo: Triple
    margin: Triple
    multiple: int = 16
    window: Window = "gaussian"
    post_sigma: float = 0.0
    halo_hi: Triple | None = None
    margin_hi: Triple | None = None
    tile: Triple | None = None

    def __post_init__(self) -> None:
        if len(self.shape) != 3 or min(self.shape) < 1:
            raise ValueError(f"shape must be three positive ints (z, y, x), got {self.shape}")
        if tuple(sum(c) for c in self.chunks) != tuple(self.shape):
            raise ValueError(f"chunks {self.chunks} do not add up to shape {self.shape}")
        if self.multiple < 1:
            raise ValueError(f"multiple must be >= 1, got {self.multiple}")
        for m, h in ((self.margin, self.halo), (self.margins_hi, self.halos_hi)):
            if any(mm > hh for mm, hh in zip(m, h, strict=True)):
                raise ValueError(f"margin {m} must not exceed halo {h}")
        if self.window not in ("gaussian", "cosine"):
            raise ValueError(f"window must be 'gaussian' or 'cosine', got {self.window!r}")
        if self.tile is not None and (
            len(self.tile) != 3 or any(t < 1 or t % self.multiple for t in self.tile)
        ):
            raise ValueError(
                f"tile must be three positive multiples of {self.multiple}, got {self.tile}"
            )
        post_filter_radius(self.post_sigma)

    @property
    def halos_hi(self) -> Triple:
        """Halo at the high end of a tile (z, y, x)."""
        return self.halo if self.halo_hi is None else self.halo_hi

    @property
    def margins_hi(self) -> Triple:
        """Margin at the high end of a tile (z, y, x)."""
        return self.margin if self.margin_hi is None else self.margin_hi

    @property
    def padded_shape(self) -> Triple:
        """Shape rounded up to :attr:`multiple` (reflection-padded at the far end)."""
        m = self.multiple
        p = tuple(-(-n // m) * m for n in self.shape)
        return (p[0], p[1], p[2])

    @property
    def tile_grid(self) -> Triple:
        """Number of tiles along z, y, x."""
        g = tuple(len(self.axis(k).tiles) for k in range(3))
        return (g[0], g[1], g[2])

    def axis(self, k: int) -> _Axis:
        """Geometry of axis ``k`` (0 = z, 1 = y, 2 = x)."""
        return _axis(self, k)

    def tile_voxels(self) -> int:
        """Voxels pushed through the predictor for the whole volume (all tiles)."""
        total = 1
        for k in range(3):
            total *= sum(b - a for a, b in self.axis(k).tiles)
        return total


@lru_cache(maxsize=64)
def _axis(plan: TilePlan, k: int) -> _Axis:
    m, n, padded = plan.multiple, plan.shape[k], plan.padded_shape[k]
    stops = tuple(int(s) for s in np.cumsum(plan.chunks[k]))
    starts = (0, *stops[:-1])
    if plan.tile is None:
        cores = tuple(zip(starts, stops, strict=True))
    else:
        t = plan.tile[k]
        cores = tuple((s, min(s + t, n)) for s in range(0, n, t))
    lo, hi = plan.halo[k], plan.halos_hi[k]
    tiles = tuple((max(0, (s - lo) // m * m), min(padded, -(-(e + hi) // m) * m)) for s, e in cores)
    return _Axis(n, starts, stops, cores, tiles, plan.margin[k], plan.margins_hi[k], plan.window)


#: One axis of a piece's window: (tile length, low ramp, high ramp, low margin, high margin,
#: kind, first, stop) — ``window_profile(length, lo, hi, margin, kind, margin_hi)[first:stop]``.
WeightSpec = tuple[int, int | None, int | None, int, int, str, int, int]


class Contribution(NamedTuple):
    """The part of one tile that lands in one output chunk.

    Attributes
    ----------
    tile
        Tile index (z, y, x) in the plan's :attr:`~TilePlan.tile_grid`.
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
    length, lo, hi, margin, margin_hi, kind, first, stop = spec
    w = window_profile(length, lo, hi, margin, kind, margin_hi)  # type: ignore[arg-type]
    w = w[first:stop]
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
    over = [[axes[k].tiles_over(i) for i in range(nblocks[k])] for k in range(3)]
    out: dict[Triple, list[Contribution]] = {}
    for cz, cy, cx in np.ndindex(*nblocks):
        cijk = (int(cz), int(cy), int(cx))
        tile_lists = [over[k][cijk[k]] for k in range(3)]
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
