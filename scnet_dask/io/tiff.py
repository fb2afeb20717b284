"""TIFF stacks and folders of 2-D TIFF slices: lazy reading, streamed writing."""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import tifffile
import zarr

from scnet_dask.errors import InputError

__all__ = ["TIFF_SUFFIXES", "open_tiff", "write_tiff", "TiffInfo"]

TIFF_SUFFIXES = (".tif", ".tiff")
_UNIT_TO_ANGSTROM = {
    "angstrom": 1.0,
    "å": 1.0,
    "a": 1.0,
    "nm": 10.0,
    "nanometer": 10.0,
    "micron": 1e4,
    "um": 1e4,
    "µm": 1e4,
    "microns": 1e4,
    "mm": 1e7,
}

TiffInfo = dict[str, Any]


def _natural_key(path: Path) -> list[Any]:
    """Sort key reading digit runs as numbers: slice2 before slice10 (not 1, 10, 11, 2)."""
    return [int(s) if s.isdigit() else s.lower() for s in re.split(r"(\d+)", path.name)]


def _slice_files(folder: Path) -> list[Path]:
    files = sorted(
        (p for p in folder.iterdir() if p.suffix.lower() in TIFF_SUFFIXES), key=_natural_key
    )
    if not files:
        raise InputError(f"{folder}: folder holds no .tif/.tiff slices")
    return files


def _metadata(tif: tifffile.TiffFile) -> dict[str, Any]:
    """ImageJ metadata, or tifffile's JSON 'shaped' metadata for non-ImageJ stacks."""
    if tif.imagej_metadata:
        return dict(tif.imagej_metadata)
    shaped = tif.shaped_metadata
    return dict(shaped[0]) if shaped else {}


_OME_UNITS = {"µm": 1e4, "um": 1e4, "nm": 10.0, "Å": 1.0, "A": 1.0, "mm": 1e7, "pm": 0.01}


def _ome_voxel_size(tif: tifffile.TiffFile) -> tuple[float, float, float] | None:
    """(z, y, x) in Å from OME-XML ``PhysicalSize{X,Y,Z}`` (default unit µm), if present."""
    xml = tif.ome_metadata if tif.is_ome else None
    if not xml:
        return None
    sizes: list[float | None] = []
    for axis in "ZYX":
        m = re.search(rf'PhysicalSize{axis}="([^"]+)"', xml)
        if m is None:
            sizes.append(None)
            continue
        u = re.search(rf'PhysicalSize{axis}Unit="([^"]+)"', xml)
        factor = _OME_UNITS.get(u.group(1) if u else "µm")
        sizes.append(float(m.group(1)) * factor if factor is not None else None)
    if sizes[1] is None or sizes[2] is None:
        return None
    z = sizes[0] if sizes[0] is not None else sizes[2]
    return (float(z), float(sizes[1]), float(sizes[2]))


def _voxel_size(tif: tifffile.TiffFile) -> tuple[tuple[float, float, float], bool]:
    """Return the (z, y, x) voxel size in Å and whether it was found in the file.

    OME-TIFF's ``PhysicalSize*`` first, then ImageJ's unit, spacing and resolution tags.
    """
    ome = _ome_voxel_size(tif)
    if ome is not None:
        return ome, True
    ij = _metadata(tif)
    unit = str(ij.get("unit", "")).strip().lower()
    scale = _UNIT_TO_ANGSTROM.get(unit)
    page = tif.pages.first
    xres = page.tags.get("XResolution")
    yres = page.tags.get("YResolution")
    if scale is None or xres is None:
        return (1.0, 1.0, 1.0), False

    def px(tag: Any) -> float:
        num, den = tag.value
        return float(den) / float(num) if num else 1.0

    vx = px(xres) * scale
    vy = px(yres) * scale if yres is not None else vx
    vz = float(ij.get("spacing", vx / scale)) * scale
    return (vz, vy, vx), True


_OPEN: dict[tuple[int, tuple[str, ...]], Any] = {}
_OPEN_LOCK = threading.Lock()


def _zarr_view(files: tuple[str, ...]) -> Any:
    """The Zarr view (tifffile's) of a stack or of a sequence of slices, opened once per process.

    The store holds an open file handle (not picklable), so each process opens its own; page
    offsets are parsed once, not on every read.
    """
    key = (os.getpid(), files)
    with _OPEN_LOCK:
        arr = _OPEN.get(key)
        if arr is None:
            if len(files) == 1:
                store = tifffile.imread(files[0], aszarr=True, series=0, level=0)
            else:
                store = tifffile.TiffSequence(list(files)).aszarr()
            arr = zarr.open(store, mode="r")
            _OPEN[key] = arr
    return arr


class _TiffReader:
    """Picklable lazily-read (z, y, x) view of a TIFF stack or a folder of slices.

    Reads go through tifffile's Zarr interface (:func:`tifffile.imread` with ``aszarr=True``,
    :meth:`tifffile.TiffSequence.aszarr`), which maps a (z, y, x) box to the pages and strips
    it needs; the store is opened once per process.
    """

    def __init__(self, files: list[str], shape: tuple[int, int, int], dtype: np.dtype):
        self.files = tuple(files)
        self.shape = shape
        self.dtype = dtype
        self.ndim = 3

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        arr = _zarr_view(self.files)
        out = np.asarray(arr[key], dtype=self.dtype)
        shape = tuple(len(range(*k.indices(n))) for k, n in zip(key, self.shape, strict=True))
        return out.reshape(shape)


def _one_stack(path: Path, tif: tifffile.TiffFile) -> None:
    """Refuse a multi-page TIFF whose pages are not one stack of equal pages.

    tifffile splits pages of different shapes (or types) into several series; reading the first
    would silently drop the others.
    """
    if len(tif.series) > 1:
        kinds: dict[str, int] = {}
        for s in tif.series:
            kind = f"{tuple(int(v) for v in s.shape[-2:])} {s.dtype}"
            kinds[kind] = kinds.get(kind, 0) + len(s.pages)
        parts = ", ".join(f"{n} page(s) of {k}" for k, n in kinds.items())
        raise InputError(
            f"{path}: pages of different shapes or types ({parts}); expected one stack of "
            "equal pages: split or resample it first"
        )


def open_tiff(
    path: str | os.PathLike[str], chunks: tuple[int, int, int] | None = None
) -> tuple[da.Array, TiffInfo]:
    """Open a multi-page TIFF stack, or a folder of 2-D TIFF slices, as a lazy (z, y, x) array.

    Returns
    -------
    array, info
        The dask array and a dict with ``voxel_size_angstrom`` (z, y, x), ``voxel_size_found``
        and source attributes.

    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    files = _slice_files(path) if path.is_dir() else [path]
    try:
        with tifffile.TiffFile(files[0]) as tif:
            series = tif.series[0]
            shape = tuple(int(s) for s in series.shape)
            dtype = np.dtype(series.dtype)
            voxel, found = _voxel_size(tif)
            ij = _metadata(tif)
            samples = int(getattr(tif.pages.first, "samplesperpixel", 1) or 1)
            if len(files) == 1:
                _one_stack(files[0], tif)
    except InputError:
        raise
    except (tifffile.TiffFileError, OSError, ValueError, IndexError, RuntimeError) as e:
        raise InputError(f"{files[0]}: not a readable TIFF file ({e})") from e
    if samples > 1:
        raise InputError(
            f"{files[0]}: a colour (RGB) TIFF with {samples} samples per pixel; EM volumes are "
            "grey-scale: convert it to one channel first"
        )
    if len(files) > 1:
        if len(shape) != 2:
            raise InputError(f"{files[0]}: expected 2-D slices in {path}, got shape {shape}")
        for f in files[1:]:
            try:
                with tifffile.TiffFile(f) as tif:
                    other = tuple(int(v) for v in tif.series[0].shape)
                    other_dtype = np.dtype(tif.series[0].dtype)
            except (tifffile.TiffFileError, OSError, ValueError, IndexError, RuntimeError) as e:
                raise InputError(f"{f}: not a readable TIFF slice ({e})") from e
            if other != shape:
                raise InputError(
                    f"{f}: slice of shape {other} differs from {files[0].name}'s {shape}"
                )
            if other_dtype != dtype:
                raise InputError(
                    f"{f}: slice of type {other_dtype} differs from {files[0].name}'s {dtype}; "
                    "every slice of a stack must have one type"
                )
        shape = (len(files),) + shape
    if len(shape) == 2:
        raise InputError(f"{path}: expected a 3-D volume, got a 2-D image of shape {shape}")
    if len(shape) != 3:
        raise InputError(f"{path}: expected a 3-D volume, got {len(shape)}-D data of shape {shape}")
    shape3 = (shape[0], shape[1], shape[2])
    if chunks is None:
        chunks = (min(32, shape3[0]), shape3[1], shape3[2])
    reader = _TiffReader([str(f) for f in files], shape3, dtype)
    arr = da.from_array(
        reader,
        chunks=chunks,
        lock=False,
        asarray=False,
        fancy=False,
        meta=np.empty((0, 0, 0), dtype=dtype),
        name=f"tiff-{os.path.abspath(path)}-{chunks}",
    )
    keep = {k: v for k, v in ij.items() if isinstance(v, (str, int, float, bool))}
    info: TiffInfo = {
        "voxel_size_angstrom": voxel,
        "voxel_size_found": found,
        "attrs": {"format": "tiff", "imagej": keep, "n_files": len(files)},
    }
    return arr, info


def write_tiff(
    path: str | os.PathLike[str],
    data: da.Array,
    voxel_size_angstrom: tuple[float, float, float],
    slab: int = 16,
    progress: Any = None,
) -> None:
    """Stream a (z, y, x) dask array into an ImageJ-compatible TIFF stack, one page at a time.

    The voxel size is stored as ImageJ ``spacing``/``unit`` and X/YResolution, in Å.
    """
    nz = int(data.shape[0])
    vz, vy, vx = voxel_size_angstrom

    def pages() -> Any:
        for z0 in range(0, nz, slab):
            block = np.asarray(data[z0 : z0 + slab].compute())
            yield from block
            if progress is not None:
                progress.update(block.shape[0])

    imagej = np.dtype(data.dtype) in (np.uint8, np.uint16, np.float32)
    tifffile.imwrite(
        path,
        data=pages(),
        shape=tuple(int(s) for s in data.shape),
        dtype=np.dtype(data.dtype),
        imagej=imagej,
        bigtiff=not imagej and data.nbytes > 2**31,
        resolution=(1.0 / vx, 1.0 / vy),
        metadata={"spacing": vz, "unit": "angstrom", "axes": "ZYX"},
    )
