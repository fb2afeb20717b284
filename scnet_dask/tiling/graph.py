"""Tiled prediction over a dask array with blended halos (an out-of-core overlap-add).

The volume is cut into tile *cores* (one per chunk, or a regular grid of ``plan.tile`` voxels
chosen for the device's memory, independent of the storage chunks); each core is extended by a
halo on each side (asymmetric: the network's measured reach below and above a voxel differ),
snapped outwards to the network's grid (multiples of 16 from the volume origin, so every tile
sees the same stride phase as a whole-volume prediction) and predicted **once**. Each
prediction is weighted by a smooth window and added into every output chunk it overlaps; the
output is the weighted sum divided by the summed windows (MONAI's ``sliding_window_inference``
idea, but lazy: no task ever holds more than one tile or one output chunk, so the output is
never materialised).

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
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph, MaterializedLayer
from scipy.ndimage import gaussian_filter

from scnet_dask.errors import nonfinite_input
from scnet_dask.io.resume import done_marker
from scnet_dask.tiling.blend import (
    TilePlan,
    WeightSpec,
    blend_pieces,
    contributions,
    read_box,
    read_spans,
    reflect_index,
)
from scnet_dask.tiling.halo import POST_FILTER_TRUNCATE, Triple

__all__ = [
    "Predictor",
    "overlap_add",
    "predict_whole",
    "scratch_folder",
    "tile_seed",
]

#: A tile predictor (see :class:`scnet_dask.methods.TilePredictor`); plain callables work too.
Predictor = Callable[..., np.ndarray]


# --- tasks ---------------------------------------------------------------------------------


def _read_tile(
    spans: tuple[tuple[int, int, int], ...],
    parts: list[tuple[Any, tuple[slice, ...], tuple[slice, ...]]],
) -> np.ndarray:
    """Assemble a tile's source box from dask chunk pieces, then reflect it past the end."""
    box, index = read_box(spans)
    out = np.empty(tuple(b - a for a, b in box), dtype=np.float32)
    for block, src, dst in parts:
        out[dst] = np.asarray(block)[src]
    return np.ascontiguousarray(out[np.ix_(*index)])


def _read_tile_direct(
    reader: Any, spans: tuple[tuple[int, int, int], ...], name: str
) -> np.ndarray:
    """Read a tile's source box straight from the store (no dask chunk held in memory)."""
    box, index = read_box(spans)
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
    pieces: list[tuple[str, tuple[slice, ...], tuple[WeightSpec, ...]]],
    folder: str,
    delete: bool,
    marker: str | None,
    *tokens: int,
) -> np.ndarray | None:
    """Blend pieces read from scratch files (:func:`~scnet_dask.tiling.blend.blend_pieces`).

    With ``delete`` the chunk's scratch folder is removed after.

    Returns ``None`` when ``marker`` exists: the chunk was already stored (and its pieces
    removed) by an earlier attempt of this task on a worker that died before reporting.
    """
    if marker is not None and os.path.exists(marker):
        return None
    out = blend_pieces(shape, [(np.load(p), dst, ws) for p, dst, ws in pieces])
    if delete:
        shutil.rmtree(folder, ignore_errors=True)
    return out


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
    spans: list[Any] | None = None,
) -> list[np.ndarray]:
    """Predict tiles (batched by shape), crop to the volume, apply the post-filter.

    ``seeds`` (one per tile) are passed to stochastic predictors, ``spans`` (one per tile) to
    positional ones (see :class:`scnet_dask.methods.Geometry`).
    """
    out: list[np.ndarray | None] = [None] * len(tiles)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, t in enumerate(tiles):
        by_shape.setdefault(t.shape, []).append(i)
    for idx in by_shape.values():
        batch = np.stack([tiles[i] for i in idx])
        kw: dict[str, Any] = {}
        if seeds is not None:
            kw["seeds"] = [seeds[i] for i in idx]
        if spans is not None:
            kw["spans"] = [spans[i] for i in idx]
        pred = np.asarray(predict(batch, **kw), dtype=np.float32)
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
    separate_reads: bool = False,
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
    separate_reads
        With ``reader``: read each tile in a task of its own instead of inside the prediction
        task, so that an accelerator's task (annotated, one at a time per GPU worker) only runs
        the network while the next tiles are read by other threads. For ``distributed``, whose
        scheduler queues root tasks (``worker-saturation``) so reads do not run far ahead; the
        threaded scheduler keeps reads inside (its forwards already overlap others' reads).
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
        separate_reads,
    )
    read_name, pred_name = f"{name}-tile-{token}", f"{name}-net-{token}"
    geometry_of = getattr(predict, "geometry", None)  # plain callables have none
    stochastic = bool(getattr(geometry_of, "stochastic", False))
    positional = bool(getattr(geometry_of, "positional", False))
    piece_name, out_name = f"{name}-piece-{token}", f"{name}-blend-{token}"
    axes = [plan.axis(k) for k in range(3)]
    ntiles = plan.tile_grid

    def in_key(ijk: tuple[int, int, int]) -> Any:
        return (data.name, *ijk)

    inline_reads = reader is not None and not separate_reads
    read: dict[Any, Any] = {}
    for ijk in np.ndindex(*ntiles):
        spans = read_spans(plan, ijk)
        if reader is not None:
            read[(read_name, *ijk)] = (_read_tile_direct, reader, spans, source_name)
            continue
        box, _ = read_box(spans)
        parts = []
        over = [axes[k].chunks_over(*box[k]) for k in range(3)]
        for cz in over[0]:
            for cy in over[1]:
                for cx in over[2]:
                    cijk = (cz, cy, cx)
                    src_sl, dst_sl = [], []
                    for k in range(3):
                        c0, c1 = axes[k].starts[cijk[k]], axes[k].stops[cijk[k]]
                        s, e = max(box[k][0], c0), min(box[k][1], c1)
                        src_sl.append(slice(s - c0, e - c0))
                        dst_sl.append(slice(s - box[k][0], e - box[k][0]))
                    parts.append((in_key(cijk), tuple(src_sl), tuple(dst_sl)))
        read[(read_name, *ijk)] = (_read_tile, spans, parts)

    # which part of which tile lands where in which chunk, with its window (blend geometry)
    geometry = contributions(plan)
    targets: dict[tuple[int, ...], list[tuple[tuple[int, ...], tuple[slice, ...]]]] = {}
    for cijk, entries in geometry.items():
        for c in entries:
            targets.setdefault(c.tile, []).append((cijk, c.src))

    def piece_path(c: tuple[int, ...], t: tuple[int, ...]) -> str:
        folder = scratch_folder(str(scratch), c)
        return str(folder / ("t_" + "_".join(map(str, t)) + ".npy"))

    pred: dict[Any, Any] = {}
    group_of: dict[tuple[int, ...], tuple[Any, int]] = {}
    for i, j in np.ndindex(ntiles[0], ntiles[1]):
        for g0 in range(0, ntiles[2], batch_size):
            members = [(i, j, k) for k in range(g0, min(g0 + batch_size, ntiles[2]))]
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
                [read[(read_name, *m)] if inline_reads else (read_name, *m) for m in members],
                [tile_seed(m) for m in members] if stochastic else None,
                [read_spans(plan, m) for m in members] if positional else None,
            )
            if scratch is not None:
                spill = [[(piece_path(c, m), sl) for c, sl in targets.get(m, [])] for m in members]
                task = (_spill, task, spill)
            pred[key] = task
            for pos, m in enumerate(members):
                group_of[m] = (key, pos)

    pieces: dict[Any, Any] = {}
    out: dict[Any, Any] = {}
    for cijk, entries in geometry.items():
        shape = tuple(axes[k].stops[cijk[k]] - axes[k].starts[cijk[k]] for k in range(3))
        if scratch is not None:
            contrib = [(piece_path(cijk, c.tile), c.dst, c.weights) for c in entries]
            groups = sorted({group_of[c.tile][0] for c in entries})
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
        parts_in = []
        for c in entries:
            pkey = (piece_name, *c.tile, *cijk)
            gkey, pos = group_of[c.tile]
            pieces[pkey] = (_take, gkey, pos, c.src)
            parts_in.append((pkey, c.dst, c.weights))
        out[(out_name, *cijk)] = (blend_pieces, shape, parts_in)

    layers = dict(data.dask.layers) if reader is None else {}
    deps = dict(data.dask.dependencies) if reader is None else {}
    if not inline_reads:  # reads are tasks of their own (from dask chunks, or from the store)
        layers[read_name] = MaterializedLayer(read)
        deps[read_name] = set(data.__dask_layers__()) if reader is None else set()
    layers[pred_name] = MaterializedLayer(pred, annotations=annotations)
    deps[pred_name] = set() if inline_reads else {read_name}
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
