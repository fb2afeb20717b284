"""``info``: what a volume is, for MRC, TIFF and Zarr alike."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from scnet_dask.errors import InputError
from scnet_dask.io import bytes_on_disk, open_source
from scnet_dask.io.dataset import Dataset
from scnet_dask.io.omezarr import get_array, read_attrs
from scnet_dask.io.tomogram import open_tomogram
from scnet_dask.science.stats import compute_statistics

__all__ = ["volume_info", "format_info", "dataset_info", "format_dataset_info"]


def volume_info(path: str | os.PathLike[str], scan: bool = False) -> dict[str, Any]:
    """Describe a volume without reading its data (unless ``scan``).

    Parameters
    ----------
    path
        The volume (OME-Zarr, MRC or TIFF).
    scan
        When the volume has no stored statistics, compute them in one Dask pass (memory
        bounded by a chunk), NaN/Inf count (``n_nonfinite``) included.

    Returns
    -------
    dict
        ``path``, ``format``, ``shape`` (z, y, x), ``dtype``, ``chunks`` (z, y, x) or None for
        contiguous files, ``voxel_size_angstrom`` (z, y, x), ``voxel_size_found``,
        ``statistics`` (stored by ``convert``, or computed with ``scan``; empty otherwise;
        ``n_nonfinite`` counts NaN/Inf voxels), ``pyramid_levels`` (shapes),
        ``stored_bytes``, ``raw_bytes`` and ``compression_ratio``.

    """
    p = Path(path)
    vol = open_source(p)
    shape = [int(s) for s in vol.data.shape]
    dtype = np.dtype(vol.data.dtype)
    chunks: list[int] | None = None
    levels: list[list[int]] = [shape]
    if vol.format == "zarr":
        chunks = [int(c[0]) for c in vol.data.chunks]
        node = zarr.open(str(p), mode="r")
        if isinstance(node, zarr.Group):
            ome: Any = read_attrs(p).get("ome", {})
            ms = ome.get("multiscales", [])
            if ms:
                levels = [list(get_array(node, d["path"]).shape) for d in ms[0]["datasets"]]
    stats = dict(vol.attrs.get("statistics", {}))
    if scan and not stats:
        stats = dict(compute_statistics(vol.data))
    raw = int(np.prod(shape)) * dtype.itemsize
    stored = bytes_on_disk(p)
    return {
        "path": str(p),
        "format": vol.format,
        "shape": shape,
        "dtype": str(dtype),
        "chunks": chunks,
        "voxel_size_angstrom": [float(v) for v in vol.voxel_size_angstrom],
        "voxel_size_found": vol.voxel_size_found,
        "statistics": stats,
        "pyramid_levels": levels,
        "stored_bytes": stored,
        "raw_bytes": raw,
        "compression_ratio": raw / stored if stored else None,
        "source": {
            k: v for k, v in vol.attrs.get("source", {}).items() if k != "extended_header_b64"
        },
        "provenance": vol.attrs.get("provenance", []),
    }


def format_info(info: dict[str, Any]) -> str:
    """Human-readable multi-line summary of :func:`volume_info`."""
    vs = info["voxel_size_angstrom"]
    lines = [
        f"{info['path']}  ({info['format']})",
        f"  shape (z, y, x):   {tuple(info['shape'])}  {info['dtype']}",
        f"  chunks:            {tuple(info['chunks']) if info['chunks'] else 'contiguous'}",
        f"  voxel size (Å):    z {vs[0]:.4g}, y {vs[1]:.4g}, x {vs[2]:.4g}"
        + ("" if info["voxel_size_found"] else "  (placeholder: set with --voxel-size)"),
        f"  pyramid levels:    {len(info['pyramid_levels'])}  "
        + ", ".join(str(tuple(s)) for s in info["pyramid_levels"]),
        f"  stored / raw:      {info['stored_bytes'] / 2**20:.2f} MiB / "
        f"{info['raw_bytes'] / 2**20:.2f} MiB"
        + (f"  (ratio {info['compression_ratio']:.2f}x)" if info["compression_ratio"] else ""),
    ]
    st = info["statistics"]
    if st:
        lines.append(
            f"  statistics:        mean {st['mean']:.4g}, std {st['std']:.4g}, "
            f"min {st['min']:.4g}, max {st['max']:.4g}, "
            f"p0.1 {st['p0.1']:.4g}, p99.9 {st['p99.9']:.4g}"
        )
    bad = st.get("n_nonfinite") if st else None
    lines.append(
        "  NaN/Inf voxels:    "
        + ("not counted (info --scan counts them)" if bad is None else f"{int(bad)}")
        + (" (denoise, train and prior refuse them; convert --nan-policy replaces them)"
           if bad else "")
    )  # fmt: skip
    labels = info["source"].get("labels")
    if labels:
        lines.append(f"  MRC labels:        {len(labels)}; first: {labels[0]!r}")
    return "\n".join(lines)


def dataset_info(ds: Dataset) -> list[dict[str, Any]]:
    """One row per tomogram of ``ds``, reading headers only.

    Returns
    -------
    list of dict
        ``name``, ``shape`` (z, y, x), ``voxel_size_angstrom`` (z, y, x), ``full``/``even``/
        ``odd`` (the paths, or ``None``), ``bytes`` (on disk, all its files), ``error`` (a
        file that cannot be opened: the rest of the row is empty).

    """
    rows = []
    for t in ds.tomograms:
        row: dict[str, Any] = {
            "name": t.name,
            "full": str(t.full) if t.full else None,
            "even": str(t.even) if t.even else None,
            "odd": str(t.odd) if t.odd else None,
            "bytes": sum(bytes_on_disk(p) for p in t.files if p.exists()),
        }
        try:
            vol = open_tomogram(t, "full" if t.full is not None else "mean")
            row["shape"] = [int(s) for s in vol.data.shape]
            row["voxel_size_angstrom"] = [float(v) for v in vol.voxel_size_angstrom]
        except (InputError, OSError, ValueError) as e:
            row["error"] = str(e).splitlines()[0]
        rows.append(row)
    return rows


def format_dataset_info(ds: Dataset, rows: list[dict[str, Any]]) -> str:
    """A header line and one line per tomogram: name, shape, voxel size, files, size."""
    lines = [f"{ds.source}: {ds.layout} layout, {len(rows)} tomograms"]
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        have = "/".join(k for k in ("full", "even", "odd") if r[k]) or "-"
        if "error" in r:
            lines.append(f"  {r['name']:<{width}}  {have:<13}  ERROR: {r['error']}")
            continue
        vs = ", ".join(f"{v:.4g}" for v in r["voxel_size_angstrom"])
        shape = " x ".join(str(s) for s in r["shape"])
        lines.append(
            f"  {r['name']:<{width}}  {shape:>18}  voxel ({vs}) Å  {have:<13}  "
            f"{r['bytes'] / 2**20:,.1f} MiB"
        )
    return "\n".join(lines)
