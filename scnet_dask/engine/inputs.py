"""A training run's inputs: opened from OME-Zarr, statistics, foreground mask, rotation planes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr

from scnet_dask.config import TrainConfig
from scnet_dask.engine.sampling import foreground_mask
from scnet_dask.errors import InputError
from scnet_dask.io import open_source, voxel_mismatch
from scnet_dask.io.omezarr import coarsest_level, get_array, ngff_multiscales
from scnet_dask.methods import Method, get
from scnet_dask.science.stats import volume_statistics

__all__ = [
    "augment_planes",
    "input_statistics",
    "statistics_hook",
]


def _open_level0(path: Path) -> tuple[zarr.Array, dict[str, Any]]:
    vol = open_source(path)
    if vol.format != "zarr":
        raise InputError(f"{path}: training reads OME-Zarr; run 'scnet-dask convert' first")
    try:
        group = zarr.open_group(str(path), mode="r")
    except Exception:  # a bare array (or no group): not what convert writes
        raise InputError(
            f"{path}: a bare Zarr array, not an OME-Zarr image; run 'scnet-dask convert "
            f"{path} OUT.ome.zarr' first (training reads the pyramid and statistics it writes)"
        ) from None
    ms = ngff_multiscales(json.loads(json.dumps(dict(group.attrs))))
    name = ms[0]["datasets"][0]["path"] if ms else "0"
    if name not in set(group.array_keys()):
        raise InputError(
            f"{path}: Zarr group without an OME multiscales image (arrays: "
            f"{', '.join(sorted(group.array_keys())) or 'none'}); run 'scnet-dask convert' first"
        )
    stats = volume_statistics(vol)
    if not np.isfinite(stats.get("std", np.nan)) or stats.get("n_nonfinite", 0):
        raise InputError(f"{path}: volume has NaN/Inf voxels or no finite statistics")
    return get_array(group, name), {**stats, "voxel_size_angstrom": list(vol.voxel_size_angstrom)}


def _mask_from_pyramid(path: Path) -> tuple[np.ndarray, int]:
    level, factor = coarsest_level(path)
    return foreground_mask(level), factor


def augment_planes(
    choice: str, voxel_size_angstrom: Any, patch: tuple[int, int, int]
) -> Literal["all", "yx"]:
    """The rotation planes of the augmentation (``--augment-planes``).

    ``"auto"`` gives ``"yx"`` when the voxels are anisotropic (z more than 1.5x y or x, as in
    vEM) or the patch is not a cube, else ``"all"``.

    Raises
    ------
    InputError
        ``"all"`` asked for non-cubic patches.

    """
    cubic = len(set(patch)) == 1
    if choice == "all":
        if not cubic:
            raise InputError(
                f"--augment-planes all needs cubic patches; this method's are {patch}: use yx"
            )
        return "all"
    if choice == "yx":
        return "yx"
    vz, vy, vx = (float(v) for v in voxel_size_angstrom)
    anisotropic = vz > 1.5 * min(vy, vx) or min(vy, vx) > 1.5 * vz
    return "yx" if anisotropic or not cubic else "all"


def _open_inputs(
    cfg: TrainConfig, method: Method
) -> tuple[dict[str, Path], dict[str, zarr.Array], dict[str, dict[str, Any]]]:
    """The method's input paths, their level-0 arrays and stored statistics, checked to agree."""
    if cfg.noisy is None:
        raise ValueError(f"a dataset run has no single volume to open, got --dataset {cfg.dataset}")
    paths = method.input_paths(cfg.noisy, cfg.options, Path(cfg.out))
    arrays: dict[str, zarr.Array] = {}
    stats: dict[str, dict[str, Any]] = {}
    primary = next(iter(paths))
    for name, path in paths.items():
        arrays[name], stats[name] = _open_level0(path)
        if arrays[name].shape != arrays[primary].shape:
            raise InputError(
                f"{path}: {name} grid {tuple(arrays[name].shape)} differs from the "
                f"{primary} grid {tuple(arrays[primary].shape)} of {paths[primary]}"
            )
        va = stats[name]["voxel_size_angstrom"]
        vb = stats[primary]["voxel_size_angstrom"]
        if voxel_mismatch(va, vb) > 0.01:
            raise InputError(
                f"{path}: {name} voxel size {tuple(va)} Å differs from the {primary} voxel "
                f"size {tuple(vb)} Å of {paths[primary]}"
            )
    return paths, arrays, stats


def input_statistics(cfg: TrainConfig) -> dict[str, dict[str, Any]]:
    """The normalisation statistics of every input of ``cfg.method`` (its hook applied).

    :func:`scnet_dask.distributed.ddp.train_distributed` computes them once, before starting the
    ranks,
    and hands them to every rank, so that a method's full-volume pass (SC-Net's affine prior
    fit) runs once and not inside every rank while the others wait at the first collective.
    """
    method = get(cfg.method)
    paths, _, stats = _open_inputs(cfg, method)
    return statistics_hook(method, cfg.options, stats, paths)


def statistics_hook(
    method: Method, options: Any, stats: dict[str, dict[str, Any]], paths: dict[str, Path]
) -> dict[str, dict[str, Any]]:
    """``method.input_statistics`` on the volumes at ``paths`` (opened lazily)."""
    arrays = {k: open_source(p).data for k, p in paths.items()}
    return method.input_statistics(options, stats, arrays, {k: str(p) for k, p in paths.items()})
