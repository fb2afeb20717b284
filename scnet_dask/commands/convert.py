"""``convert``: any supported volume → chunked, compressed OME-Zarr with a viewing pyramid."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import zarr

from scnet_dask.config import ConvertConfig
from scnet_dask.errors import InputError
from scnet_dask.io import Volume, bytes_on_disk, open_source
from scnet_dask.io._atomic import refuse_overlap
from scnet_dask.io.mrc import open_mrc
from scnet_dask.io.omezarr import (
    get_array,
)
from scnet_dask.io.output import atomic_output
from scnet_dask.io.provenance import volume_attrs
from scnet_dask.io.store import finalise_store, source_signature, write_volume_zarr
from scnet_dask.io.tiff import open_tiff

__all__ = ["convert"]

log = logging.getLogger(__name__)


def _open_for_convert(path: Path, chunk: int) -> Volume:
    vol = open_source(path)
    # read whole rows, one zarr-chunk of sections and rows per task: contiguous reads, and
    # tasks of chunk² x width voxels whatever the section size (vEM sections reach 10⁴ x 10⁴)
    nz, ny, nx = vol.data.shape
    chunks = (min(chunk, nz), min(chunk, ny), nx)
    if vol.format == "mrc":
        vol.data, _ = open_mrc(path, chunks=chunks)
    elif vol.format == "tiff":
        vol.data, _ = open_tiff(path, chunks=chunks)
    return vol


def _replace_nonfinite(group: zarr.Group, value: float) -> None:
    arr = get_array(group, "0")
    x = da.from_zarr(arr)
    fixed = da.where(da.isfinite(x), x, np.asarray(value, dtype=x.dtype))
    da.store(fixed, arr, lock=False)  # type: ignore[arg-type]


def _apply_nan_policy(
    cfg: ConvertConfig,
    tmp: Path,
    stats: dict[str, Any],
    voxel: tuple[float, float, float],
    attrs: dict[str, Any],
) -> dict[str, Any]:
    """``--nan-policy``: refuse NaN/Inf voxels, or replace them by 0 or the mean (reported).

    Returns the statistics of the store at ``tmp`` after the replacement.
    """
    src, n_bad = Path(cfg.input), int(stats["n_nonfinite"])
    if cfg.nan_policy == "error":
        raise InputError(
            f"{src}: {n_bad} NaN/Inf voxels; pass --nan-policy zero or mean to replace them"
        )
    value = 0.0 if cfg.nan_policy == "zero" else float(stats["mean"])
    log.warning("%s: replacing %d NaN/Inf voxels with %g", src, n_bad, value)
    group = zarr.open_group(str(tmp), mode="r+")
    _replace_nonfinite(group, value)
    attrs["nonfinite_replaced"] = {"count": n_bad, "value": value}
    return finalise_store(group, voxel, attrs, cfg.pyramid_levels)


def convert(cfg: ConvertConfig, show_progress: bool = True) -> dict[str, Any]:
    """Convert ``cfg.input`` into an OME-Zarr at ``cfg.output``.

    Returns
    -------
    dict
        Summary: output path, shape, dtype, voxel size (Å), statistics, bytes stored.

    """
    refuse_overlap(cfg.output, cfg.input)
    src = Path(cfg.input)
    vol = _open_for_convert(src, cfg.chunks)
    voxel = vol.voxel_size_angstrom
    found = vol.voxel_size_found
    if cfg.voxel_size is not None:
        voxel, found = tuple(cfg.voxel_size), True  # type: ignore[assignment]
    elif not found:
        log.warning(
            "%s: voxel size %s Å looks like a placeholder (0 or 1 Å); pass --voxel-size",
            src,
            tuple(round(v, 4) for v in voxel),
        )
    data = vol.data
    if cfg.swap_yz:
        data = data.transpose(1, 0, 2)
        voxel = (voxel[1], voxel[0], voxel[2])
    dtype = np.dtype(np.float32) if cfg.dtype == "float32" else np.dtype(data.dtype)
    data = data.astype(dtype)
    attrs = volume_attrs(
        src, "convert", vol, voxel,
        extra={"source_dtype": str(vol.data.dtype), "swap_yz": cfg.swap_yz,
               "voxel_size_found": found},
        input=str(src), options=cfg.model_dump(mode="json"),
    )  # fmt: skip
    sig = {
        "source": source_signature(src),
        "chunks": cfg.chunks,
        "dtype": str(dtype),
        "swap_yz": cfg.swap_yz,
    }
    with atomic_output(
        cfg.output, overwrite=cfg.overwrite, resume=cfg.resume, keep_on_error=True
    ) as tmp:
        stats = write_volume_zarr(
            data,
            tmp,
            voxel,
            attrs,
            cfg.chunks,
            cfg.pyramid_levels,
            sig,
            show_progress,
            desc=f"convert {src.name}",
        )
        if int(stats["n_nonfinite"]):
            stats = _apply_nan_policy(cfg, tmp, stats, voxel, attrs)
        if source_signature(src) != sig["source"]:  # before the rename: no mixed output
            raise InputError(
                f"{src}: the input changed while it was being read (size, time or metadata); "
                "the output would mix old and new data: convert it again once it is complete"
            )
    stored = bytes_on_disk(cfg.output)
    return {
        "output": str(cfg.output),
        "shape": list(data.shape),
        "dtype": str(dtype),
        "voxel_size_angstrom": list(voxel),
        "statistics": stats,
        "stored_bytes": stored,
        "raw_bytes": int(np.prod(data.shape)) * dtype.itemsize,
    }
