"""Reading and writing volumes: MRC, TIFF, Zarr and OME-Zarr, always lazily and (z, y, x)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from scnet_dask.errors import InputError
from scnet_dask.io.mrc import MRC_SUFFIXES, open_mrc
from scnet_dask.io.omezarr import ATTRS_KEY, is_zarr, ngff_multiscales, open_ome_zarr
from scnet_dask.io.tiff import TIFF_SUFFIXES, open_tiff

__all__ = [
    "Volume",
    "open_source",
    "open_volume",
    "detect_format",
    "bytes_on_disk",
    "store_of",
    "voxel_mismatch",
]


log = logging.getLogger(__name__)


def voxel_mismatch(a: Any, b: Any) -> float:
    """Largest relative difference between two (z, y, x) voxel sizes (0 = equal)."""
    return max(abs(x - y) / max(x, y, 1e-12) for x, y in zip(a, b, strict=True))


@dataclass
class Volume:
    """A lazily-read volume with its metadata.

    Attributes
    ----------
    data
        (z, y, x) dask array.
    voxel_size_angstrom
        (z, y, x) voxel size in Å.
    voxel_size_found
        False when the file carried no voxel size (or a placeholder of 0 or 1 Å).
    attrs
        Source header fields and, for our own OME-Zarr, statistics and provenance.

    """

    path: Path
    format: str
    data: da.Array
    voxel_size_angstrom: tuple[float, float, float]
    voxel_size_found: bool
    attrs: dict[str, Any] = field(default_factory=dict)


def detect_format(path: str | os.PathLike[str]) -> str:
    """Return ``"mrc"``, ``"tiff"`` or ``"zarr"`` for ``path``, or raise a clear error."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder")
    if not p.is_file() and not p.is_dir():
        raise InputError(f"{p}: not a regular file or folder (a pipe, socket or device)")
    if is_zarr(p):
        return "zarr"
    if p.is_dir():
        if any(c.suffix.lower() in TIFF_SUFFIXES for c in p.iterdir()):
            return "tiff"
        raise InputError(f"{p}: folder is neither a Zarr store nor a folder of TIFF slices")
    suffix = p.suffix.lower()
    if suffix in MRC_SUFFIXES:
        return "mrc"
    if suffix in TIFF_SUFFIXES:
        return "tiff"
    raise InputError(
        f"{p}: unsupported file type {suffix!r}; expected one of "
        f"{', '.join(MRC_SUFFIXES + TIFF_SUFFIXES)}, a Zarr store or a folder of TIFF slices"
    )


def _placeholder(voxel: tuple[float, float, float]) -> bool:
    return any(not np.isfinite(v) or v <= 0 or abs(v - 1.0) < 1e-6 for v in voxel)


def _checked_voxel(path: Path, voxel: tuple[float, float, float]) -> tuple[float, float, float]:
    """The header's voxel size, with a NaN/Inf or negative one replaced by 0 (no size known).

    Such a value is never written on: it is logged once here, and every command then treats
    the volume as having no voxel size (a placeholder), as for 0.
    """
    if all(np.isfinite(v) and v >= 0 for v in voxel):
        return voxel
    log.warning(
        "%s: voxel size %s Å in the header is not a finite, non-negative size; treated as "
        "unknown (0): pass --voxel-size to convert", path, tuple(voxel),
    )  # fmt: skip
    return (0.0, 0.0, 0.0)


def _real_valued(path: Path, dtype: np.dtype) -> None:
    if not (np.issubdtype(dtype, np.number) or dtype.kind == "b") or np.issubdtype(
        dtype, np.complexfloating
    ):
        raise InputError(
            f"{path}: data type {dtype} is not a real-valued volume (complex or non-numeric "
            "data would lose information); convert it to real values first"
        )


def open_source(path: str | os.PathLike[str], level: int = 0) -> Volume:
    """Open any supported volume lazily, with its voxel size and header attributes.

    One validation for every format: complex or non-numeric data are refused, and a voxel
    size that is not a finite, non-negative number is treated as unknown (with a warning).
    """
    p = Path(path)
    fmt = detect_format(p)
    if fmt == "mrc":
        arr, info = open_mrc(p)
        _real_valued(p, np.dtype(arr.dtype))
        voxel = _checked_voxel(p, info.voxel_size_angstrom)
        return Volume(p, fmt, arr, voxel, not _placeholder(voxel), {"source": info.to_attrs()})
    if fmt == "tiff":
        arr, tinfo = open_tiff(p)
        _real_valued(p, np.dtype(arr.dtype))
        voxel = _checked_voxel(p, tinfo["voxel_size_angstrom"])
        found = bool(tinfo["voxel_size_found"]) and not _placeholder(voxel)
        return Volume(p, fmt, arr, voxel, found, {"source": tinfo["attrs"]})
    arr, voxel, attrs = open_ome_zarr(p, level=level)
    voxel = _checked_voxel(p, voxel)
    ours = attrs.get(ATTRS_KEY, {})
    found = bool(ngff_multiscales(attrs)) and not _placeholder(voxel)
    if ours:
        found = bool(ours.get("voxel_size_found", found))
    _real_valued(p, np.dtype(arr.dtype))
    return Volume(p, fmt, arr, voxel, found, ours or {"source": {"format": "zarr"}})


def store_of(arr: da.Array) -> Any | None:
    """The sliceable store behind an array opened by :func:`open_source`, if it is one.

    Returns the zarr array, MRC or TIFF reader that ``arr`` was made from with
    ``dask.array.from_array``/``from_zarr`` (no operation applied since), else ``None``. Readers
    that slice the store directly avoid holding whole dask chunks in memory.
    """
    layers = arr.dask.layers
    if len(layers) != 2:
        return None
    for name, layer in layers.items():
        if name.startswith("original-") and len(layer) == 1:
            obj = next(iter(layer.values()))
            if hasattr(obj, "__getitem__") and tuple(getattr(obj, "shape", ())) == arr.shape:
                return obj
    return None


def open_volume(path: str | os.PathLike[str], level: int = 0) -> xr.DataArray:
    """Open a volume as a dask-backed :class:`xarray.DataArray` with dims ``(z, y, x)``.

    Coordinates are voxel centres in Å; ``attrs`` hold ``voxel_size_angstrom`` (z, y, x) and
    the source header / statistics / provenance.

    Parameters
    ----------
    path
        MRC/REC/ST/MRCS/MAP file, TIFF stack, folder of TIFF slices, Zarr or OME-Zarr.
    level
        Pyramid level for OME-Zarr inputs.

    """
    vol = open_source(path, level=level)
    coords = {
        dim: np.arange(n, dtype=np.float64) * vs
        for dim, n, vs in zip(("z", "y", "x"), vol.data.shape, vol.voxel_size_angstrom, strict=True)
    }
    attrs = {"voxel_size_angstrom": vol.voxel_size_angstrom, "format": vol.format, **vol.attrs}
    return xr.DataArray(
        vol.data, dims=("z", "y", "x"), coords=coords, attrs=attrs, name=vol.path.name
    )


def bytes_on_disk(path: str | os.PathLike[str]) -> int:
    """Bytes a file, or every file below a folder (e.g. a Zarr store), takes on disk."""
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
