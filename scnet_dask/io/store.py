"""The OME-Zarr volume writer: level 0 + viewing pyramid + statistics, in one streaming pass.

Used by ``convert`` and by every step that writes a volume (prior, simulate, denoise, the
Fourier pool); also the cheap source signature that decides whether a partial output resumes.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import zarr
from tqdm import tqdm

from scnet_dask.io.omezarr import (
    ATTRS_KEY,
    HALVE,
    coarsen_by,
    create_level,
    get_array,
    multiscales_metadata,
    pyramid_shapes,
    write_pyramid,
)
from scnet_dask.io.resume import (
    done_folder,
    done_marker,
    finish_progress,
    mark_done,
    open_progress,
)
from scnet_dask.science.stats import (
    combine_statistics,
    finalise_statistics,
    lazy_statistics,
    sample_step,
)

__all__ = ["write_volume_zarr", "finalise_store", "write_metadata", "source_signature"]

log = logging.getLogger(__name__)


def source_signature(path: Path) -> dict[str, Any]:
    """What identifies an input's content cheaply, to decide whether a partial output resumes.

    A file: path, size and modification time. A Zarr store: the SHA-256 of its metadata
    documents (``zarr.json`` of the group and its arrays: shapes, chunks, and scnet-dask's
    statistics and provenance time stamps, which change when a volume is converted again).
    A partial output made from the input is resumed only while this matches.
    """
    path = Path(path)
    if path.is_file():
        st = path.stat()
        return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    h = hashlib.sha256()
    for meta in sorted(path.glob("**/zarr.json")) if path.is_dir() else []:
        if ".partial" in str(meta.relative_to(path)):
            continue
        h.update(str(meta.relative_to(path)).encode())
        h.update(meta.read_bytes())
    return {"path": str(path.resolve()), "metadata_sha256": h.hexdigest()}


def write_volume_zarr(
    data: da.Array,
    tmp: Path,
    voxel_size_angstrom: tuple[float, float, float],
    attrs: dict[str, Any],
    chunks: int = 128,
    pyramid_levels: int = 3,
    signature: dict[str, Any] | None = None,
    show_progress: bool = True,
    desc: str = "writing",
) -> dict[str, Any]:
    """Write a lazy (z, y, x) array into an OME-Zarr at ``tmp``, resumably, slab by slab.

    Level 0 is written in slabs one chunk thick; each finished slab leaves a marker
    (:mod:`scnet_dask.io.resume`) so an interrupted write resumes where it stopped (when
    ``signature`` matches). The pyramid levels and the statistics are computed from each slab
    as it is written (one read of the source, no second pass over level 0), except after a
    resume or for chunks that are not a multiple of ``2 ** (pyramid_levels - 1)``: then they
    are computed in one more pass over level 0.

    Parameters
    ----------
    data
        (z, y, x) lazy array, already of the output dtype.
    tmp
        The (temporary) store path.
    voxel_size_angstrom
        (z, y, x) in Å.
    attrs
        scnet-dask attributes stored under ``scnet_dask`` (statistics are added).
    signature
        Identifies the job; a partial store with another signature is not resumed.

    Returns
    -------
    dict
        The statistics of level 0 (see :func:`scnet_dask.science.stats.finalise_statistics`).

    """
    shape = tuple(int(s) for s in data.shape)
    ch = tuple(min(chunks, s) for s in shape)
    group = zarr.open_group(str(tmp), mode="a", zarr_format=3)
    open_progress(group, tmp, signature or {})
    level0 = create_level(group, 0, shape, ch, data.dtype)
    markers = done_folder(tmp)
    data = data.rechunk(ch)
    starts = list(range(0, shape[0], ch[0]))
    fresh = not any(done_marker(markers, (z0,)).exists() for z0 in starts)
    # one read pass: each slab's pyramid levels and statistics come with its level-0 write
    # (a resumed run has no statistics of the slabs written before: it takes a second pass)
    shapes = pyramid_shapes(shape, pyramid_levels)
    one_pass = fresh and _slabs_pool_alone(ch[0], shapes)
    levels = _with_coarser_levels(group, level0, shapes) if one_pass else [level0]
    step = sample_step(shape)
    partial: list[dict[str, Any]] = []
    with tqdm(
        total=shape[0], desc=desc, unit="sect", file=sys.stderr, disable=not show_progress
    ) as bar:
        for z0 in starts:
            z1 = min(z0 + ch[0], shape[0])
            if not done_marker(markers, (z0,)).exists():
                slab = data[z0:z1]
                stores = [_store(slab, level0, z0)]
                extra: dict[str, Any] = {}
                if one_pass:
                    pyramid, extra = _slab_products(slab, levels, z0, step)
                    stores += pyramid
                done = dask.compute(stores, extra)
                if one_pass:
                    partial.append(done[1])
                mark_done(tmp, (z0,))
            bar.update(z1 - z0)
    if one_pass:
        stats = finalise_statistics(combine_statistics(partial))
        write_metadata(group, voxel_size_angstrom, attrs, stats)
    else:
        stats = finalise_store(group, voxel_size_angstrom, attrs, pyramid_levels)
    finish_progress(group, tmp)
    return stats


def _store(block: da.Array, target: zarr.Array, z0: int) -> Any:
    """A lazy write of ``block`` into ``target`` from section ``z0`` on."""
    region = (slice(z0, z0 + int(block.shape[0])), slice(None), slice(None))
    return da.store(block, target, regions=region, lock=False, compute=False)  # type: ignore[arg-type]


def _slabs_pool_alone(depth: int, shapes: list[tuple[int, int, int]]) -> bool:
    """Whether slabs of ``depth`` sections pool into every level of ``shapes`` on their own.

    True when ``depth`` is a multiple of ``2 ** (levels - 1)``: the pyramid can then be written
    slab by slab.
    """
    return depth % 2 ** (len(shapes) - 1) == 0


def _with_coarser_levels(
    group: zarr.Group, level0: zarr.Array, shapes: list[tuple[int, int, int]]
) -> list[zarr.Array]:
    """Level 0 and new float32 arrays for the coarser ``shapes[1:]``, in level 0's chunks."""
    return [level0] + [
        create_level(group, k, shapes[k], level0.chunks, np.dtype(np.float32))
        for k in range(1, len(shapes))
    ]


def _slab_products(
    slab: da.Array, levels: list[zarr.Array], z0: int, step: int
) -> tuple[list[Any], dict[str, Any]]:
    """Lazy writes of a level-0 slab's share of the pyramid, and its lazy statistics.

    ``step`` is the whole volume's sampling step (:func:`scnet_dask.science.stats.sample_step`): the
    slabs' statistics merge with
    :func:`scnet_dask.science.stats.combine_statistics` into the volume's.
    """
    stats = lazy_statistics(slab, step=step, offset=(-z0) % step)
    return _pyramid_slab(slab, levels, z0), stats


def _pyramid_slab(slab: da.Array, levels: list[zarr.Array], z0: int) -> list[Any]:
    """Lazy writes of a level-0 slab's share of every coarser level (2x mean pooling).

    The slab starts at a multiple of ``2 ** (levels - 1)`` sections, so its pooled sections
    are exactly those of the whole volume; the blocks are merged to the level's (y, x)
    chunks so that no two tasks write one chunk.
    """
    out = []
    prev = slab
    for k in range(1, len(levels)):
        prev = coarsen_by(prev, HALVE)
        if prev.shape[0] == 0:
            break
        c = levels[k].chunks
        prev = prev.rechunk((int(prev.shape[0]), c[1], c[2]))
        out.append(_store(prev, levels[k], z0 // 2**k))
    return out


def finalise_store(
    group: zarr.Group,
    voxel_size_angstrom: tuple[float, float, float],
    attrs: dict[str, Any],
    pyramid_levels: int = 3,
) -> dict[str, Any]:
    """(Re)build the pyramid and statistics from level 0, and write the OME and our attributes.

    Level 0 is read once, one chunk-thick z-slab at a time: each slab's share of the coarser
    levels and its statistics are computed together (as convert's one pass does), so memory is
    bounded by one slab's tasks whatever the volume's depth. Chunks whose depth is not a
    multiple of ``2 ** (pyramid_levels - 1)`` take one whole-array pass instead.
    """
    for name in list(group.array_keys()):
        if name != "0":
            del group[name]
    level0 = get_array(group, "0")
    shape = tuple(int(s) for s in level0.shape)
    c = level0.chunks
    shapes = pyramid_shapes(shape, pyramid_levels)
    src = da.from_zarr(level0)
    if _slabs_pool_alone(c[0], shapes):
        levels = _with_coarser_levels(group, level0, shapes)
        step = sample_step(shape)
        parts = []
        for z0 in range(0, shape[0], c[0]):
            _, extra = dask.compute(*_slab_products(src[z0 : z0 + c[0]], levels, z0, step))
            parts.append(extra)
        computed = combine_statistics(parts)
    else:
        lazy = lazy_statistics(src)
        computed = write_pyramid(group, pyramid_levels, (c[0], c[1], c[2]), extra=lazy)
    stats = finalise_statistics(computed)
    write_metadata(group, voxel_size_angstrom, attrs, stats)
    return stats


def write_metadata(
    group: zarr.Group,
    voxel_size_angstrom: tuple[float, float, float],
    attrs: dict[str, Any],
    stats: dict[str, Any],
) -> None:
    """Write the OME multiscales metadata (of the levels present) and our attributes."""
    n_levels = len([k for k in group.array_keys() if k.isdigit()])
    group.attrs.update(
        {
            "ome": multiscales_metadata(voxel_size_angstrom, n_levels, name=attrs.get("name", "")),
            ATTRS_KEY: {**attrs, "statistics": stats},
        }
    )
