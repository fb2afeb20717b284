"""OME-Zarr (OME-NGFF 0.5 on zarr v3): metadata, atomic chunked writing, lazy reading."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import zarr
from zarr.codecs import BloscCodec

from scnet_dask.errors import InputError

__all__ = [
    "ATTRS_KEY",
    "multiscales_metadata",
    "ngff_multiscales",
    "create_level",
    "open_ome_zarr",
    "read_attrs",
    "write_pyramid",
    "coarsen_by",
    "pyramid_shapes",
    "HALVE",
    "is_zarr",
    "get_array",
    "pyramid_levels",
    "coarsest_level",
]

log = logging.getLogger(__name__)

#: Key of scnet-dask's own attributes in the group's ``zarr.json`` (beside ``ome``).
ATTRS_KEY = "scnet_dask"


def get_array(group: zarr.Group, name: str) -> zarr.Array:
    """Return the array ``name`` of ``group``, or raise a clear error if it is not one."""
    node = group.get(name)
    if not isinstance(node, zarr.Array):
        raise InputError(f"{group.store_path}: {name!r} is not an array in this Zarr group")
    return node


def ngff_multiscales(attrs: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``multiscales`` list of OME-NGFF 0.5 (under ``ome``) or 0.4 (top level)."""
    ome = attrs.get("ome", attrs)
    ms = ome.get("multiscales") if isinstance(ome, dict) else None
    return list(ms) if isinstance(ms, list) else []


def pyramid_levels(path: str | Path) -> list[zarr.Array]:
    """The pyramid levels of an OME-Zarr, finest first.

    The multiscales' datasets in their order (NGFF 0.4 or 0.5, any array names); for a group
    without multiscales, its arrays named ``0, 1, ...``.
    """
    group = zarr.open_group(str(path), mode="r")
    ms = ngff_multiscales(json.loads(json.dumps(dict(group.attrs))))
    if ms:
        names = [str(d["path"]) for d in ms[0].get("datasets", [])]
    else:
        names = sorted((k for k in group.array_keys() if k.isdigit()), key=int)
    return [get_array(group, n) for n in names]


def _scale_of(transforms: list[dict[str, Any]], ndim: int) -> list[float]:
    """The product of the ``scale`` transformations in ``transforms`` (1 where none)."""
    scale = [1.0] * ndim
    for t in transforms or []:
        if t.get("type") == "scale" and len(t.get("scale", [])) == ndim:
            scale = [a * float(b) for a, b in zip(scale, t["scale"], strict=True)]
    return scale


def coarsest_level(path: str | Path) -> tuple[np.ndarray, int]:
    """The coarsest pyramid level of an OME-Zarr written by scnet-dask, and its factor.

    Returns
    -------
    level, factor
        The (z', y', x') array (float64) and how many level-0 voxels one of its voxels spans
        along x.

    """
    levels = pyramid_levels(path)
    factor = max(1, int(round(levels[0].shape[-1] / levels[-1].shape[-1])))
    return np.asarray(levels[-1][...], dtype=np.float64), factor


def compressor() -> BloscCodec:
    """The codec used for every array: Blosc with zstd and byte shuffling."""
    return BloscCodec(cname="zstd", clevel=1, shuffle="shuffle")


def is_zarr(path: str | os.PathLike[str]) -> bool:
    """Return whether ``path`` is a Zarr (v2 or v3) group or array directory."""
    p = Path(path)
    return p.is_dir() and any((p / n).exists() for n in ("zarr.json", ".zgroup", ".zarray"))


def multiscales_metadata(
    voxel_size_angstrom: tuple[float, float, float], n_levels: int, name: str = ""
) -> dict[str, Any]:
    """Build the OME-NGFF 0.5 ``ome`` attribute for a (z, y, x) pyramid of 2x mean reductions.

    Level ``i`` has scale ``voxel_size * 2**i`` and the translation that centres its voxels on
    the 2**i level-0 voxels they average, ``(2**i - 1) / 2 * voxel_size``, all in Å.
    """
    axes = [{"name": a, "type": "space", "unit": "angstrom"} for a in ("z", "y", "x")]
    datasets = []
    for i in range(n_levels):
        f = 2**i
        scale = [float(v * f) for v in voxel_size_angstrom]
        transforms: list[dict[str, Any]] = [{"type": "scale", "scale": scale}]
        if i > 0:
            transforms.append(
                {
                    "type": "translation",
                    "translation": [float((f - 1) / 2 * v) for v in voxel_size_angstrom],
                }
            )
        datasets.append({"path": str(i), "coordinateTransformations": transforms})
    return {
        "version": "0.5",
        "multiscales": [{"name": name, "axes": axes, "datasets": datasets}],
    }


def create_level(
    group: zarr.Group, level: int, shape: tuple[int, ...], chunks: tuple[int, ...], dtype: Any
) -> zarr.Array:
    """Create (or reopen, if it exists with the same layout) level ``level`` of a pyramid."""
    name = str(level)
    chunks = tuple(min(c, s) for c, s in zip(chunks, shape, strict=True))
    if name in group:
        arr = group[name]
        if isinstance(arr, zarr.Array) and arr.shape == tuple(shape) and arr.chunks == chunks:
            return arr
        del group[name]
    return group.create_array(
        name,
        shape=shape,
        chunks=chunks,
        dtype=dtype,
        compressors=[compressor()],
        fill_value=0,
        dimension_names=("z", "y", "x"),
    )


#: Pooling factors between pyramid levels (every level halves every axis; see
#: :func:`pyramid_shapes`).
HALVE = {0: 2, 1: 2, 2: 2}


def coarsen_by(arr: da.Array, factors: dict[int, int]) -> da.Array:
    """Mean-pool a (z, y, x) array by ``factors`` (axis -> 1 or 2), trimming an odd end."""
    if any(int(arr.shape[i]) < f for i, f in factors.items()):  # a one-section slab
        shape = tuple(int(s) // factors.get(i, 1) for i, s in enumerate(arr.shape))
        return da.zeros(shape, dtype=np.float32)
    out = da.coarsen(_mean_pairs, arr.astype(np.float32), factors, trim_excess=True)
    return out.astype(np.float32)


def _mean_pairs(x: np.ndarray, axis: tuple[int, ...] = ()) -> np.ndarray:
    """``x.mean(axis)`` for the short pooling axes of :func:`dask.array.coarsen`, faster.

    Sums the views along each pooled axis (2 elements each) instead of numpy's strided
    multi-axis reduction (1 GiB: 1.2 s -> 0.5 s on two cores).
    """
    out = x
    n = 1
    for ax in sorted(axis, reverse=True):
        parts = [out[(slice(None),) * ax + (i,)] for i in range(out.shape[ax])]
        n *= len(parts)
        total = parts[0].astype(np.float32, copy=True)
        for p in parts[1:]:
            total += p
        out = total
    return out * np.float32(1.0 / n)


def pyramid_shapes(shape: tuple[int, ...], n_levels: int) -> list[tuple[int, int, int]]:
    """Shapes (z, y, x) of the levels :func:`write_pyramid` writes (level 0 first).

    Each level halves every axis (an odd end is trimmed); levels stop at ``n_levels`` or
    before an axis would fall below one voxel.
    """
    out = [(int(shape[0]), int(shape[1]), int(shape[2]))]
    while len(out) < n_levels and min(out[-1]) >= 2:
        out.append((out[-1][0] // 2, out[-1][1] // 2, out[-1][2] // 2))
    return out


def write_pyramid(
    group: zarr.Group,
    n_levels: int,
    chunks: tuple[int, int, int],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write levels 1..n_levels-1 from level 0 by 2x mean pooling, streaming chunk by chunk.

    Parameters
    ----------
    extra
        More lazy values (e.g. reductions over level 0) computed in the same pass as level 1,
        so that level 0 is read once.

    Returns
    -------
    dict
        The computed values of ``extra``.

    """
    extra = dict(extra or {})
    results: dict[str, Any] = {}
    prev = da.from_zarr(group["0"])
    for level in range(1, len(pyramid_shapes(prev.shape, n_levels))):
        down = coarsen_by(prev, HALVE)
        down = down.rechunk(tuple(min(c, s) for c, s in zip(chunks, down.shape, strict=True)))
        target = create_level(group, level, down.shape, chunks, np.float32)
        store = da.store(down, target, lock=False, compute=False)  # type: ignore[arg-type]
        if level == 1 and extra:
            keys = list(extra)
            vals = dask.compute(store, *[extra[k] for k in keys])
            results = dict(zip(keys, vals[1:], strict=True))
        else:
            dask.compute(store)
        prev = da.from_zarr(group[str(level)])
    if extra and not results:
        keys = list(extra)
        results = dict(zip(keys, dask.compute(*[extra[k] for k in keys]), strict=True))
    return results


def read_attrs(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Return the group's attributes (``ome`` and scnet-dask's own) as plain JSON values."""
    group = zarr.open_group(str(path), mode="r")
    return json.loads(json.dumps(dict(group.attrs)))


def open_ome_zarr(
    path: str | os.PathLike[str], level: int = 0
) -> tuple[da.Array, tuple[float, float, float], dict[str, Any]]:
    """Open level ``level`` of an OME-Zarr image, or a bare Zarr array, lazily.

    Returns
    -------
    array, voxel_size_angstrom, attrs
        The (z, y, x) dask array, the voxel size of that level in Å (z, y, x; 1.0 if unknown)
        and the group's attributes.

    """
    path = Path(path)
    if not is_zarr(path):
        raise InputError(f"{path}: not a Zarr store")
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as e:  # zarr raises many types for damaged stores
        raise InputError(f"{path}: not a readable Zarr store ({e})") from e
    if isinstance(node, zarr.Array):
        arr = node
        attrs: dict[str, Any] = json.loads(json.dumps(dict(node.attrs)))
        voxel = (1.0, 1.0, 1.0)
    else:
        attrs = json.loads(json.dumps(dict(node.attrs)))
        ms = ngff_multiscales(attrs)
        if not ms:
            arrays = sorted(k for k, v in node.arrays())
            if not arrays:
                raise InputError(f"{path}: Zarr group holds no array and no OME multiscales")
            if len(arrays) > 1 and arrays != [str(i) for i in range(len(arrays))]:
                raise InputError(
                    f"{path}: Zarr group holds several arrays ({', '.join(arrays)}) and no OME "
                    f"multiscales to say which is the image; give the array itself, e.g. "
                    f"{path / arrays[-1]}"
                )
            arr = get_array(node, arrays[0])
            voxel = (1.0, 1.0, 1.0)
        else:
            datasets = ms[0]["datasets"]
            if level >= len(datasets):
                raise InputError(f"{path}: has {len(datasets)} pyramid levels, got level {level}")
            ds = datasets[level]
            arr = get_array(node, ds["path"])
            # the dataset's scale, times the multiscales-level one (OME-NGFF 0.4 and 0.5)
            own = _scale_of(ds.get("coordinateTransformations", []), arr.ndim)
            outer = _scale_of(ms[0].get("coordinateTransformations", []), arr.ndim)
            scale = [a * b for a, b in zip(own, outer, strict=True)]
            axes = ms[0].get("axes", [])
            factor = [
                _unit_to_angstrom(a.get("unit"), path) if isinstance(a, dict) else 1.0 for a in axes
            ]
            if len(factor) != len(scale):
                factor = [1.0] * len(scale)
            spatial = [s * f for s, f in zip(scale, factor, strict=True)][-3:]
            voxel = (
                (float(spatial[0]), float(spatial[1]), float(spatial[2]))
                if len(spatial) == 3
                else (1.0, 1.0, 1.0)
            )
    if arr.ndim != 3:
        raise InputError(f"{path}: expected a 3-D (z, y, x) array, got shape {arr.shape}")
    return da.from_zarr(arr), voxel, attrs


_UNITS = {
    "angstrom": 1.0,
    "nanometer": 10.0,
    "micrometer": 1e4,
    "millimeter": 1e7,
    "centimeter": 1e8,
    "picometer": 0.01,
    "femtometer": 1e-5,
    "meter": 1e10,
    None: 1.0,  # no unit given: the scale is taken as Å (scnet-dask writes Å)
}
#: OME-NGFF axis units that are not lengths; such axes are not spatial.
_NOT_LENGTH = {"second", "millisecond", "microsecond", "nanosecond", "minute", "hour"}


def _unit_to_angstrom(unit: str | None, path: object = "") -> float:
    """Å per unit of an OME axis; an unknown unit is an error (never silently Å)."""
    if unit in _UNITS:
        return _UNITS[unit]
    if unit in _NOT_LENGTH:
        return 1.0
    raise InputError(
        f"{path}: unknown OME axis unit {unit!r}; expected one of "
        f"{', '.join(sorted(k for k in _UNITS if k))}"
    )
