"""Readers of a dataset's tomograms for training: the inputs a method names, sliceable.

``noisy`` is the full reconstruction (the mean of the halves when there is none), ``even`` and
``odd`` the halves, and ``prior`` a Gaussian-filtered view of ``noisy`` made on the fly from
each patch (SC-Net's default prior, ``prior --method gaussian``), so no prior is written per
tomogram.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import dask.array as da
import numpy as np
from dask_image.ndfilters import gaussian_filter
from scipy import ndimage

from scnet_dask.errors import InputError
from scnet_dask.io import Volume, store_of
from scnet_dask.io.dataset import Tomogram
from scnet_dask.io.tomogram import open_tomogram

__all__ = [
    "GaussianPrior",
    "DaskReader",
    "input_volumes",
    "lazy_inputs",
    "sliceable",
    "tomogram_from_record",
    "which_files",
]

#: Scipy's default truncation of the Gaussian kernel (in σ); dask-image uses the same.
TRUNCATE = 4.0


@dataclass(frozen=True)
class GaussianPrior:
    """A sliceable (z, y, x) float32 view of a reader through a 3-D Gaussian filter of σ voxels.

    A slice reads its box grown by the kernel's radius (clipped at the volume's edges, where the
    filter reflects as the whole-volume filter does), filters it and crops: equal to
    ``prior --method gaussian`` on the whole volume, at the cost of one patch.
    """

    base: Any
    sigma: float

    @property
    def shape(self) -> tuple[int, ...]:
        """(z, y, x) of the base."""
        return tuple(int(s) for s in self.base.shape)

    dtype = np.dtype(np.float32)
    ndim = 3

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        if not isinstance(key, tuple) or len(key) != 3 or not all(
            isinstance(k, slice) and k.step in (None, 1) for k in key
        ):
            raise ValueError(f"GaussianPrior takes three unit-step slices, got {key!r}")
        radius = int(TRUNCATE * self.sigma + 0.5)
        box, crop = [], []
        for k, n in zip(key, self.shape, strict=True):
            a, b, _ = k.indices(n)
            lo, hi = max(0, a - radius), min(n, b + radius)
            box.append(slice(lo, hi))
            crop.append(slice(a - lo, b - lo))
        raw = np.asarray(self.base[tuple(box)], dtype=np.float32)
        out = ndimage.gaussian_filter(raw, self.sigma, mode="reflect", truncate=TRUNCATE)
        return out[tuple(crop)]


@dataclass(frozen=True)
class DaskReader:
    """A Dask array as a sliceable reader (for inputs without a plain store behind them)."""

    data: da.Array

    @property
    def shape(self) -> tuple[int, ...]:
        """(z, y, x)."""
        return tuple(int(s) for s in self.data.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.asarray(self.data[key].compute(scheduler="synchronous"))


def sliceable(vol: Volume) -> Any:
    """The store behind ``vol`` when there is one, else its Dask array as a reader."""
    store = store_of(vol.data)
    return store if store is not None else DaskReader(vol.data)


def which_files(inputs: tuple[str, ...]) -> Literal["full", "halves"]:
    """Which files of a tomogram a method with these ``inputs`` reads (for its signature)."""
    return "halves" if {"even", "odd"} & set(inputs) else "full"


def input_volumes(t: Tomogram, inputs: tuple[str, ...]) -> dict[str, Volume]:
    """The volumes of ``t`` behind the method's ``inputs`` (``prior`` excepted: made on the fly).

    Raises
    ------
    InputError
        An input the dataset cannot give (names the tomogram's file), or halves missing.

    """
    out: dict[str, Volume] = {}
    for name in inputs:
        if name == "noisy":
            out[name] = open_tomogram(t, "full")
        elif name in ("even", "odd"):
            if not t.has_halves:
                raise InputError(
                    f"{t.files[0]}: tomogram {t.name!r} has no even/odd halves, which this "
                    "method trains on"
                )
            out[name] = open_tomogram(t, name)  # type: ignore[arg-type]
        elif name != "prior":
            raise InputError(f"a dataset cannot give the input {name!r} of this method")
    return out


def lazy_inputs(
    vols: dict[str, Volume], inputs: tuple[str, ...], prior_sigma: float
) -> dict[str, da.Array]:
    """Lazy (z, y, x) arrays of every input, the prior a Dask Gaussian filter of ``noisy``."""
    arrays = {k: v.data for k, v in vols.items()}
    if "prior" in inputs:
        arrays["prior"] = gaussian_filter(
            vols["noisy"].data.astype(np.float32), sigma=prior_sigma, mode="reflect",
            truncate=TRUNCATE,
        )  # fmt: skip
    return arrays


def tomogram_from_record(entry: dict[str, Any]) -> Tomogram:
    """The :class:`Tomogram` a run folder's record entry names."""
    files = entry["files"]
    vox = entry.get("table_voxel_size_angstrom")
    full, even, odd = (Path(files[k]) if files.get(k) else None for k in ("full", "even", "odd"))
    voxel = (float(vox[0]), float(vox[1]), float(vox[2])) if vox else None
    return Tomogram(entry["name"], full, even, odd, voxel)
