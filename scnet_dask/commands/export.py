"""``export``: OME-Zarr → MRC or TIFF, streamed slab by slab, header and voxel size kept."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
from tqdm import tqdm

from scnet_dask.config import ExportConfig
from scnet_dask.errors import InputError
from scnet_dask.io import open_source
from scnet_dask.io._atomic import refuse_overlap
from scnet_dask.io.mrc import write_mrc
from scnet_dask.io.output import atomic_output
from scnet_dask.io.tiff import write_tiff

__all__ = ["export", "write_volume_file", "F16_MAX"]

#: The largest finite float16.
F16_MAX = 65504.0

log = logging.getLogger(__name__)


def write_volume_file(
    path: Path,
    data: Any,
    voxel_size_angstrom: tuple[float, float, float],
    header_attrs: dict[str, Any] | None = None,
    show_progress: bool = True,
    fmt: str | None = None,
) -> None:
    """Stream a (z, y, x) dask array to ``path``, in place.

    ``fmt`` is ``"tiff"`` or ``"mrc"``; by default it follows the suffix of ``path``.
    """
    fmt = fmt or ("tiff" if Path(path).suffix.lower() in (".tif", ".tiff") else "mrc")
    with tqdm(
        total=int(data.shape[0]),
        desc=f"export {Path(path).name}",
        unit="sect",
        file=sys.stderr,
        disable=not show_progress,
    ) as bar:
        if fmt == "tiff":
            write_tiff(path, data, voxel_size_angstrom, progress=bar)
        else:
            write_mrc(path, data, voxel_size_angstrom, header_attrs, progress=bar)


def _check_float16_range(path: Any, data: da.Array, stats: dict[str, Any]) -> None:
    """Refuse a float16 export that would turn values beyond ±65504 into Inf.

    The stored statistics are used when the input has them; otherwise one Dask pass finds the
    extremes (bounded memory).
    """
    if stats and "min" in stats and "max" in stats:
        lo, hi = float(stats["min"]), float(stats["max"])
    else:
        lo, hi = (float(v) for v in dask.compute(data.min(), data.max()))
    big = max(abs(lo), abs(hi))
    if big > F16_MAX:
        raise InputError(
            f"{path}: values reach {big:.6g}, beyond the float16 range (±{F16_MAX:g}); they "
            "would become Inf: export as float32"
        )


def export(cfg: ExportConfig, show_progress: bool = True) -> dict[str, Any]:
    """Export an OME-Zarr (or any readable volume) to MRC or TIFF atomically.

    Returns
    -------
    dict
        Output path, shape, dtype and voxel size (Å).

    """
    refuse_overlap(cfg.output, cfg.input)
    vol = open_source(cfg.input)
    data = vol.data
    source = dict(vol.attrs.get("source", {}))
    if cfg.dtype == "source":
        dtype = np.dtype(vol.attrs.get("source_dtype", str(data.dtype)))
    else:
        dtype = np.dtype(cfg.dtype)
    if dtype.kind in "iu" and np.dtype(data.dtype).kind == "f":
        info = np.iinfo(dtype)
        data = data.round().clip(info.min, info.max)
    if dtype == np.float16:
        _check_float16_range(cfg.input, data, vol.attrs.get("statistics", {}))
    data = data.astype(dtype)
    fmt = "tiff" if cfg.output.suffix.lower() in (".tif", ".tiff") else "mrc"
    written = np.dtype(np.uint16) if fmt == "mrc" and dtype == np.uint8 else dtype
    if written != dtype:
        log.warning(
            "%s: MRC has no unsigned 8-bit mode: the uint8 values are written as uint16 "
            "(mode 6), value for value", cfg.output,
        )  # fmt: skip
    with atomic_output(cfg.output, overwrite=cfg.overwrite) as tmp:
        write_volume_file(tmp, data, vol.voxel_size_angstrom, source, show_progress, fmt)
    return {
        "output": str(cfg.output),
        "shape": list(data.shape),
        "dtype": str(written),
        "voxel_size_angstrom": list(vol.voxel_size_angstrom),
    }
