"""Tiled prediction over a dask array with blended halos (an out-of-core overlap-add).

Every chunk of the input is extended by a halo on each side, snapped outwards to the network's
grid (multiples of 16 from the volume origin, so every tile sees the same stride phase as a
whole-volume prediction) and predicted **once**. Each prediction is weighted by a smooth window
and added into every output chunk it overlaps; the output is the weighted sum divided by the
summed windows (MONAI's ``sliding_window_inference`` idea, but lazy: no task ever holds more
than one tile or one output chunk, so the output is never materialised).

The halo has two parts, both computed here in one checked place:

* the *margin*: the network's receptive-field reach plus the radius of the post-filter. Inside
  it a tile's prediction differs from a whole-volume prediction (zero padding at the tile edge),
  so the window is ~0 there (clamped at :data:`WINDOW_FLOOR`, never exactly zero);
* the *blend* zone between the margin and the chunk, where the window rises smoothly (Gaussian or
  cosine) to 1; it hides any residual difference between neighbouring tiles.

Where a tile touches the volume border its window stays 1 up to the border. Past the end of the
volume tiles are padded by reflection with one global index map, so a tile sees exactly what the
padded whole volume holds.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph, MaterializedLayer
from scipy.ndimage import gaussian_filter

from scnet_dask.errors import nonfinite_input

__all__ = [
    "POST_FILTER_TRUNCATE",
    "DEFAULT_BLEND",
    "WINDOW_FLOOR",
    "TilePlan",
    "post_filter_radius",
    "plan_halo",
    "reflect_index",
    "window_profile",
    "overlap_add",
    "predict_whole",
    "scratch_folder",
    "done_marker",
    "tile_seed",
]

#: Gaussian post-filter kernels reach ``truncate * sigma`` voxels (scipy's default).
POST_FILTER_TRUNCATE = 4.0
#: Voxels of the halo reserved for the smooth blend when ``halo="auto"``.
DEFAULT_BLEND = 8
#: Smallest window weight (inside the margin); keeps every weight strictly positive.
WINDOW_FLOOR = 1e-6

Window = Literal["gaussian", "cosine"]
#: A tile predictor (see :class:`scnet_dask.methods.TilePredictor`); plain callables work too.
Predictor = Callable[..., np.ndarray]
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

    def profile(self, i: int) -> np.ndarray:
        """Window over the in-volume part ``[a, min(b, n))`` of tile ``i``."""
        a, b = self.tiles[i]
        lo = None if a == 0 else self.starts[i] - a - self.margin
        hi = None if b >= self.n else b - self.stops[i] - self.margin
        w = window_profile(b - a, lo, hi, self.margin, self.kind)
        return w[: min(b, self.n) - a]

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


# --- tasks ---------------------------------------------------------------------------------


def _read_tile(
    box: tuple[tuple[int, int], ...],
    index: tuple[np.ndarray, ...],
    parts: list[tuple[Any, tuple[slice, ...], tuple[slice, ...]]],
) -> np.ndarray:
    """Assemble the source box from chunk pieces, then apply the reflection index map."""
    out = np.empty(tuple(b - a for a, b in box), dtype=np.float32)
    for block, src, dst in parts:
        out[dst] = np.asarray(block)[src]
    return np.ascontiguousarray(out[np.ix_(*index)])


def _read_tile_direct(
    reader: Any,
    box: tuple[tuple[int, int], ...],
    index: tuple[np.ndarray, ...],
    name: str,
) -> np.ndarray:
    """Read the source box straight from the store (no dask chunk held in memory)."""
    block = np.asarray(reader[tuple(slice(a, b) for a, b in box)], dtype=np.float32)
    if not np.isfinite(block).all():
        lo, hi = tuple(a for a, _ in box), tuple(b for _, b in box)
        raise nonfinite_input(name, f" (within (z, y, x) = {lo}..{hi})")
    return np.ascontiguousarray(block[np.ix_(*index)])


def _spill(
    preds: list[np.ndarray],
    targets: list[list[tuple[str, tuple[slice, ...]]]],
) -> int:
    """Write each tile's pieces to the scratch folders of the chunks they fall in."""
    for pred, tgt in zip(preds, targets, strict=True):
        for path, sl in tgt:
            p = Path(path)
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_name(p.name + ".tmp.npy")
            np.save(tmp, np.ascontiguousarray(pred[sl]))
            os.replace(tmp, p)
    return len(preds)


def _gather_spilled(
    shape: Triple,
    contributions: list[tuple[str, tuple[slice, ...], tuple[np.ndarray, ...]]],
    folder: str,
    delete: bool,
    marker: str | None,
    *tokens: int,
) -> np.ndarray | None:
    """:func:`_gather` over pieces read from scratch files; optionally remove them after.

    Returns ``None`` when ``marker`` exists: the chunk was already stored (and its pieces
    removed) by an earlier attempt of this task on a worker that died before reporting.
    """
    if marker is not None and os.path.exists(marker):
        return None
    out = _gather(shape, [(np.load(p), dst, ws) for p, dst, ws in contributions])
    if delete:
        shutil.rmtree(folder, ignore_errors=True)
    return out


def done_marker(folder: str | os.PathLike[str], chunk: Sequence[int]) -> Path:
    """Completion marker of output chunk ``chunk`` (block index z, y, x) in ``folder``."""
    return Path(folder) / ".".join(str(int(c)) for c in chunk)


def scratch_folder(scratch: str | os.PathLike[str], chunk: Sequence[int]) -> Path:
    """Folder holding the tile pieces of output chunk ``chunk`` (block index z, y, x)."""
    return Path(scratch) / ("c_" + "_".join(str(int(c)) for c in chunk))


def tile_seed(tile: Sequence[int]) -> int:
    """A stable seed for the tile of index ``tile`` (z, y, x).

    Stochastic predictors get it, so their output depends only on the tile's position
    (deterministic, resumable).
    """
    z, y, x = (int(t) for t in tile)
    return ((z * 1_000_003 + y) * 1_000_033 + x) % (2**31 - 1)


def _predict_group(
    predict: Predictor,
    crops: list[Triple],
    post_sigma: float,
    tiles: list[np.ndarray],
    seeds: list[int] | None = None,
) -> list[np.ndarray]:
    """Predict tiles (batched by shape), crop to the volume, apply the post-filter.

    ``seeds`` (one per tile) are passed to stochastic predictors.
    """
    out: list[np.ndarray | None] = [None] * len(tiles)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, t in enumerate(tiles):
        by_shape.setdefault(t.shape, []).append(i)
    for idx in by_shape.values():
        batch = np.stack([tiles[i] for i in idx])
        if seeds is None:
            pred = np.asarray(predict(batch), dtype=np.float32)
        else:
            pred = np.asarray(predict(batch, seeds=[seeds[i] for i in idx]), dtype=np.float32)
        if pred.shape != batch.shape:
            raise ValueError(f"predictor returned shape {pred.shape} for input {batch.shape}")
        for j, i in enumerate(idx):
            c = crops[i]
            p = pred[j, : c[0], : c[1], : c[2]]
            if post_sigma > 0:
                p = gaussian_filter(p, post_sigma, mode="reflect", truncate=POST_FILTER_TRUNCATE)
            out[i] = np.ascontiguousarray(p)
    return [o for o in out if o is not None]


def _take(group: list[np.ndarray], i: int, sl: tuple[slice, ...]) -> np.ndarray:
    return group[i][sl].copy()


def _gather(
    shape: Triple,
    contributions: list[tuple[np.ndarray, tuple[slice, ...], tuple[np.ndarray, ...]]],
) -> np.ndarray:
    """Weighted sum of the tile pieces over one chunk, divided by the summed weights."""
    num = np.zeros(shape, dtype=np.float64)
    den = np.zeros(shape, dtype=np.float64)
    for piece, dst, (wz, wy, wx) in contributions:
        w = wz[:, None, None] * wy[None, :, None] * wx[None, None, :]
        num[dst] += w * piece
        den[dst] += w
    return (num / den).astype(np.float32)


def _overlap(a0: int, a1: int, b0: int, b1: int) -> tuple[int, int]:
    return max(a0, b0), min(a1, b1)


def overlap_add(
    data: da.Array,
    predict: Predictor,
    plan: TilePlan,
    batch_size: int = 1,
    annotations: dict[str, Any] | None = None,
    name: str = "predict",
    reader: Any = None,
    scratch: str | os.PathLike[str] | None = None,
    source_name: str = "input",
    delete_pieces: bool = True,
    done_markers: str | os.PathLike[str] | None = None,
) -> da.Array:
    """Lazily predict ``data`` tile by tile and blend the tiles into an output of the same chunks.

    Parameters
    ----------
    data
        (z, y, x) dask array; its chunks must equal ``plan.chunks``.
    predict
        Maps a float32 batch (B, z, y, x) to an array of the same shape. It is pickled into the
        graph once per task, so it must be light (e.g. a path and a cached model loader).
    plan
        Tile geometry (see :class:`TilePlan`).
    batch_size
        Neighbouring tiles along x predicted in one call (tiles of equal shape are batched).
    annotations
        Dask annotations for the prediction tasks only, e.g. ``{"resources": {"GPU": 1}}``;
        compute with ``optimize_graph=False`` (or fusion off) so they survive.
    name
        Prefix of the task keys.
    reader
        Optional sliceable store behind ``data`` (a zarr array, an MRC or TIFF reader): tiles
        are then read from it directly, so no input chunk is held while its neighbours wait.
        NaN/Inf voxels raise :class:`~scnet_dask.errors.InputError` naming ``source_name``.
    scratch
        Optional folder: each prediction is written there as the pieces that fall in each
        output chunk, and read back by that chunk's blend task (which then deletes them), so
        memory stays bounded by a few tiles whatever the volume's size. Without it the pieces
        travel in memory (fine for volumes whose chunk front fits in RAM, and for clusters).
    delete_pieces
        Remove a chunk's pieces once blended. A caller that must survive the loss of a blended
        chunk before it is stored (a cluster worker dying) passes ``False`` and removes
        :func:`scratch_folder` itself after storing the chunk.
    done_markers
        With ``scratch``: the caller's folder of per-chunk completion markers (see
        :func:`done_marker`). A blend task whose chunk is already marked returns ``None`` instead of
        reading pieces that may be gone, so a task re-run after a worker's death is harmless.

    Returns
    -------
    dask.array.Array
        float32 (z, y, x), same shape and chunks as ``data``.

    """
    if data.ndim != 3:
        raise ValueError(f"expected a (z, y, x) array, got {data.ndim} dimensions")
    if tuple(data.chunks) != tuple(plan.chunks) or tuple(data.shape) != plan.shape:
        raise ValueError(f"data chunks {data.chunks} differ from the plan's {plan.chunks}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    token = tokenize(
        data.name,
        predict,
        plan,
        batch_size,
        str(scratch),
        source_name,
        delete_pieces,
        str(done_markers),
        reader is not None,
    )
    read_name, pred_name = f"{name}-tile-{token}", f"{name}-net-{token}"
    stochastic = bool(getattr(getattr(predict, "geometry", None), "stochastic", False))
    piece_name, out_name = f"{name}-piece-{token}", f"{name}-blend-{token}"
    axes = [plan.axis(k) for k in range(3)]
    nblocks = tuple(len(c) for c in plan.chunks)

    def in_key(ijk: tuple[int, int, int]) -> Any:
        return (data.name, *ijk)

    read: dict[Any, Any] = {}
    for ijk in np.ndindex(*nblocks):
        index, box = [], []
        for k in range(3):
            a, b = axes[k].tiles[ijk[k]]
            src = reflect_index(np.arange(a, b), axes[k].n)
            lo, hi = int(src.min()), int(src.max()) + 1
            index.append(src - lo)
            box.append((lo, hi))
        if reader is not None:
            read[(read_name, *ijk)] = (
                _read_tile_direct,
                reader,
                tuple(box),
                tuple(index),
                source_name,
            )
            continue
        parts = []
        over = [axes[k].chunks_over(*box[k]) for k in range(3)]
        for cz in over[0]:
            for cy in over[1]:
                for cx in over[2]:
                    cijk = (cz, cy, cx)
                    src_sl, dst_sl = [], []
                    for k in range(3):
                        c0, c1 = axes[k].starts[cijk[k]], axes[k].stops[cijk[k]]
                        s, e = _overlap(box[k][0], box[k][1], c0, c1)
                        src_sl.append(slice(s - c0, e - c0))
                        dst_sl.append(slice(s - box[k][0], e - box[k][0]))
                    parts.append((in_key(cijk), tuple(src_sl), tuple(dst_sl)))
        read[(read_name, *ijk)] = (_read_tile, tuple(box), tuple(index), parts)

    # geometry: which part of which tile lands where in which chunk, with its window
    profiles = [[axes[k].profile(i) for i in range(nblocks[k])] for k in range(3)]
    geometry: dict[Any, list[Any]] = {}
    targets: dict[tuple[int, ...], list[tuple[tuple[int, ...], tuple[slice, ...]]]] = {}
    for cijk in np.ndindex(*nblocks):
        tile_lists = [axes[k].tiles_over(cijk[k]) for k in range(3)]
        entries = []
        for t in (
            (tz, ty, tx) for tz in tile_lists[0] for ty in tile_lists[1] for tx in tile_lists[2]
        ):
            src_sl, dst_sl, ws = [], [], []
            for k in range(3):
                a, b = axes[k].tiles[t[k]]
                c0, c1 = axes[k].starts[cijk[k]], axes[k].stops[cijk[k]]
                s0, e0 = _overlap(a, min(b, axes[k].n), c0, c1)
                src_sl.append(slice(s0 - a, e0 - a))
                dst_sl.append(slice(s0 - c0, e0 - c0))
                ws.append(profiles[k][t[k]][s0 - a : e0 - a].copy())
            entries.append((t, tuple(src_sl), tuple(dst_sl), tuple(ws)))
            targets.setdefault(t, []).append((cijk, tuple(src_sl)))
        geometry[cijk] = entries

    def piece_path(c: tuple[int, ...], t: tuple[int, ...]) -> str:
        folder = scratch_folder(str(scratch), c)
        return str(folder / ("t_" + "_".join(map(str, t)) + ".npy"))

    pred: dict[Any, Any] = {}
    group_of: dict[tuple[int, ...], tuple[Any, int]] = {}
    for i, j in np.ndindex(nblocks[0], nblocks[1]):
        for g0 in range(0, nblocks[2], batch_size):
            members = [(i, j, k) for k in range(g0, min(g0 + batch_size, nblocks[2]))]
            key = (pred_name, i, j, g0 // batch_size)
            crops = [
                tuple(
                    min(axes[k].tiles[m[k]][1], axes[k].n) - axes[k].tiles[m[k]][0]
                    for k in range(3)
                )
                for m in members
            ]
            task: Any = (
                _predict_group,
                predict,
                crops,
                float(plan.post_sigma),
                # direct reads run inside the prediction task: no tile waits in memory
                [read[(read_name, *m)] if reader is not None else (read_name, *m) for m in members],
                [tile_seed(m) for m in members] if stochastic else None,
            )
            if scratch is not None:
                spill = [[(piece_path(c, m), sl) for c, sl in targets[m]] for m in members]
                task = (_spill, task, spill)
            pred[key] = task
            for pos, m in enumerate(members):
                group_of[m] = (key, pos)

    pieces: dict[Any, Any] = {}
    out: dict[Any, Any] = {}
    for cijk, entries in geometry.items():
        shape = tuple(axes[k].stops[cijk[k]] - axes[k].starts[cijk[k]] for k in range(3))
        if scratch is not None:
            contrib = [(piece_path(cijk, t), c_sl, w3) for t, _, c_sl, w3 in entries]
            groups = sorted({group_of[t][0] for t, *_ in entries})
            folder = str(Path(contrib[0][0]).parent)
            out[(out_name, *cijk)] = (
                _gather_spilled,
                shape,
                contrib,
                folder,
                delete_pieces,
                str(done_marker(done_markers, cijk)) if done_markers else None,
                *groups,
            )
            continue
        contributions = []
        for t, t_sl, c_sl, w3 in entries:
            pkey = (piece_name, *t, *cijk)
            gkey, pos = group_of[t]
            pieces[pkey] = (_take, gkey, pos, t_sl)
            contributions.append((pkey, c_sl, w3))
        out[(out_name, *cijk)] = (_gather, shape, contributions)

    layers = dict(data.dask.layers) if reader is None else {}
    deps = dict(data.dask.dependencies) if reader is None else {}
    if reader is None:
        layers[read_name] = MaterializedLayer(read)
        deps[read_name] = set(data.__dask_layers__())
    layers[pred_name] = MaterializedLayer(pred, annotations=annotations)
    deps[pred_name] = {read_name} if reader is None else set()
    if pieces:
        layers[piece_name] = MaterializedLayer(pieces)
        deps[piece_name] = {pred_name}
    layers[out_name] = MaterializedLayer(out)
    deps[out_name] = {piece_name} if pieces else {pred_name}
    graph = HighLevelGraph(layers, deps)
    return da.Array(graph, out_name, chunks=data.chunks, dtype=np.float32)


def predict_whole(
    volume: np.ndarray, predict: Predictor, multiple: int = 16, post_sigma: float = 0.0
) -> np.ndarray:
    """Reference: predict an in-memory (z, y, x) volume in one piece (reflection-padded).

    The oracle that tiled prediction is tested against; only for volumes that fit in memory.
    """
    if volume.ndim != 3:
        raise ValueError(f"expected a (z, y, x) volume, got shape {volume.shape}")
    padded = [math.ceil(n / multiple) * multiple for n in volume.shape]
    idx = [reflect_index(np.arange(p), n) for p, n in zip(padded, volume.shape, strict=True)]
    x = np.ascontiguousarray(volume.astype(np.float32)[np.ix_(*idx)])
    y = np.asarray(predict(x[None]), dtype=np.float32)[0]
    y = y[: volume.shape[0], : volume.shape[1], : volume.shape[2]]
    if post_sigma > 0:
        y = gaussian_filter(y, post_sigma, mode="reflect", truncate=POST_FILTER_TRUNCATE)
    return y
