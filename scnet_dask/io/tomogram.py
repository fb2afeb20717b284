"""Open one tomogram of a dataset as the volume to denoise.

Its full reconstruction, or the mean of its halves made on the fly (never written).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import dask.array as da
import numpy as np

from scnet_dask.errors import InputError
from scnet_dask.io import Volume, open_source, store_of, voxel_mismatch
from scnet_dask.io.dataset import Tomogram
from scnet_dask.io.store import source_signature

__all__ = ["open_tomogram", "tomogram_files", "tomogram_signature", "MeanOfHalves"]

log = logging.getLogger(__name__)

#: Relative voxel-size difference between a STAR table and a header that is warned about.
VOXEL_TOLERANCE = 0.05


@dataclass(frozen=True)
class MeanOfHalves:
    """A sliceable (z, y, x) float32 view ``(even + odd) / 2`` of two same-shape readers.

    Slicing reads only the requested region of each half, so the tiled reader of ``denoise``
    can use it as a store (memory bounded by a tile, as for one file).
    """

    even: Any
    odd: Any

    @property
    def shape(self) -> tuple[int, ...]:
        """(z, y, x) of the halves."""
        return tuple(int(s) for s in self.even.shape)

    dtype = np.dtype(np.float32)
    ndim = 3

    def __getitem__(self, key: Any) -> np.ndarray:
        a = np.asarray(self.even[key], dtype=np.float32)
        b = np.asarray(self.odd[key], dtype=np.float32)
        return (a + b) * np.float32(0.5)


def tomogram_files(t: Tomogram, apply: Literal["full", "halves"] = "full") -> list[Path]:
    """The files denoising ``t`` reads: the full volume, else (or with halves) both halves."""
    if t.full is not None and apply == "full":
        return [t.full]
    if not t.has_halves:
        raise InputError(f"{t.files[0]}: tomogram {t.name!r} has no halves (--apply halves)")
    return [t.even, t.odd]  # type: ignore[list-item]


def tomogram_signature(t: Tomogram, apply: Literal["full", "halves"] = "full") -> list[Any]:
    """Content signatures (path, size, mtime / Zarr metadata hash) of the files it reads."""
    return [source_signature(p) for p in tomogram_files(t, apply)]


def _with_voxel(vol: Volume, t: Tomogram) -> Volume:
    """``vol`` with the dataset table's voxel size where the header has none (warned if unlike)."""
    table = t.voxel_size_angstrom
    if table is None:
        return vol
    if not vol.voxel_size_found:
        log.info("%s: voxel size %s Å from the dataset table", vol.path, table)
        return replace(vol, voxel_size_angstrom=table, voxel_size_found=True)
    if voxel_mismatch(vol.voxel_size_angstrom, table) > VOXEL_TOLERANCE:
        log.warning(
            "%s: header voxel size %s Å differs from the dataset table's %s Å (pixel size x "
            "binning); the header's is used: check which is right",
            vol.path, tuple(round(v, 4) for v in vol.voxel_size_angstrom), table,
        )  # fmt: skip
    return vol


def _mean_of_halves(t: Tomogram, even: Volume, odd: Volume) -> Volume:
    if tuple(even.data.shape) != tuple(odd.data.shape):
        raise InputError(
            f"{t.odd}: half of tomogram {t.name!r} has shape {tuple(odd.data.shape)}, its "
            f"partner {t.even} {tuple(even.data.shape)}"
        )
    if voxel_mismatch(even.voxel_size_angstrom, odd.voxel_size_angstrom) > VOXEL_TOLERANCE:
        raise InputError(
            f"{t.odd}: half of tomogram {t.name!r} has voxel size "
            f"{tuple(round(v, 4) for v in odd.voxel_size_angstrom)} Å, its partner {t.even} "
            f"{tuple(round(v, 4) for v in even.voxel_size_angstrom)} Å"
        )
    a, b = store_of(even.data), store_of(odd.data)
    if a is not None and b is not None:
        data = da.from_array(
            MeanOfHalves(a, b), chunks=even.data.chunks, name=f"mean-of-halves-{t.even}-{t.odd}"
        )
    else:
        data = (even.data.astype(np.float32) + odd.data.astype(np.float32)) * np.float32(0.5)
    attrs = dict(even.attrs)
    attrs.pop("statistics", None)  # the mean's statistics are not a half's
    attrs["halves"] = {"even": str(t.even), "odd": str(t.odd)}
    return Volume(Path(str(t.even)), even.format, data, even.voxel_size_angstrom,
                  even.voxel_size_found, attrs)  # fmt: skip


def open_tomogram(t: Tomogram, which: Literal["full", "even", "odd", "mean"] = "full") -> Volume:
    """The volume of ``t`` to denoise, lazily.

    Parameters
    ----------
    t
        The tomogram.
    which
        ``full``: its full reconstruction, or the mean of its halves when it has none;
        ``mean``: the mean of the halves; ``even``/``odd``: one half.

    Raises
    ------
    InputError
        A half that is missing, or halves of different shapes or voxel sizes (naming both
        files).

    """
    if which == "full" and t.full is not None:
        return _with_voxel(open_source(t.full), t)
    if which in ("even", "odd"):
        path = t.even if which == "even" else t.odd
        if path is None:
            raise InputError(f"{t.files[0]}: tomogram {t.name!r} has no {which} half")
        return _with_voxel(open_source(path), t)
    if not t.has_halves:
        raise InputError(f"{t.files[0]}: tomogram {t.name!r} has no halves to average")
    even, odd = open_source(t.even), open_source(t.odd)  # type: ignore[arg-type]
    return _with_voxel(_mean_of_halves(t, even, odd), t)
